"""Programmatic dependent launch (PDL) for the executor's Triton kernels, on Hopper and later.

A decode step is a chain of short kernels, and between two of them the GPU idles: the next
kernel is launched only once the previous one has finished, then its blocks ramp up. With PDL
(``launch_pdl=True``) the next kernel is launched while the previous one's last blocks still run.
Each of our kernels calls ``gdc_launch_dependents`` at its start (its successor may now launch)
and ``gdc_wait`` before it touches anything the previous kernel wrote; the GEMV fetches its first
weight tile before that wait, since weights never depend on the previous kernel. A kernel that
waits at its start still finishes after its predecessor, so ordering stays transitive through
the chain; library kernels (attention, cuBLAS) are launched without PDL and wait as usual.

``enabled()`` says whether to launch this way: Triton with ``gdc_wait``, a GPU of compute
capability 9.0 or later, and not switched off (``set_enabled(False)`` or ``ROOFTUNE_PDL=0``).
"""

from __future__ import annotations

import functools
import os

import torch

from executor.tritonlib import tl, triton

__all__ = ["enabled", "set_enabled", "launch_options", "start", "wait", "launch_dependents"]


if triton is not None:

    @triton.jit
    def start(USE_PDL: tl.constexpr):
        """In a kernel launched with PDL: let the next kernel launch, then wait until the
        previous one has finished and its writes are visible. Nothing without PDL."""
        if USE_PDL:
            tl.extra.cuda.gdc_launch_dependents()
            tl.extra.cuda.gdc_wait()

    @triton.jit
    def wait(USE_PDL: tl.constexpr):
        """Wait until the previous kernel has finished and its writes are visible."""
        if USE_PDL:
            tl.extra.cuda.gdc_wait()

    @triton.jit
    def launch_dependents(USE_PDL: tl.constexpr):
        """Let the next kernel launch (its blocks then take SM slots while they wait)."""
        if USE_PDL:
            tl.extra.cuda.gdc_launch_dependents()


_switch = {"on": os.environ.get("ROOFTUNE_PDL", "1") != "0"}


@functools.cache
def _supported() -> bool:
    if triton is None:
        return False
    if not torch.cuda.is_available() or not hasattr(tl.extra.cuda, "gdc_wait"):
        return False
    return torch.cuda.get_device_capability()[0] >= 9


def enabled() -> bool:
    return _switch["on"] and _supported()


def set_enabled(on: bool) -> None:
    """Turn PDL launches on or off (a graph captured before keeps the launches it had)."""
    _switch["on"] = on


def launch_options() -> dict:
    """Keyword arguments for a kernel launch: the kernel's ``USE_PDL`` and Triton's
    ``launch_pdl`` (omitted when off, so Triton's CPU interpreter accepts the call)."""
    if enabled():
        return {"USE_PDL": True, "launch_pdl": True}
    return {"USE_PDL": False}
