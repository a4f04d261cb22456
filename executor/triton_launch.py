"""Launching a Triton kernel with its arguments bound once per specialization.

``kernel[grid](*args, **constants)`` cost the host about 43 us a launch on the slow H100
hosts (`studies/serving-validation/h100-layout-2026-12-07/`), against 4.5 us for a CUDA graph's
replay. Before its launcher runs, Triton binds every argument by name, works out the kernel's
specialization, hashes its cache key, looks the compiled kernel up and checks the globals it
read, every call. An eager serving iteration of Llama-3.1-8B launches five Triton kernels a
layer, 160 an iteration: about 7 ms of host time.

``launch`` does that work once per specialization. Its key is what Triton specializes on, or
finer: each tensor's dtype and whether its address is 16-byte aligned; each integer's width and
whether it is 1 or a multiple of 16; every other argument's type; the constants (constexprs and
launch options) by value. The first call of a key goes through Triton and keeps the compiled
kernel it returns; later calls hand the arguments straight to that kernel's launcher, in the
kernel's parameter order, constexprs included (the launcher skips them: Triton 3.3 and later).
Where Triton returns no compiled kernel (its CPU interpreter), a launch hook is set (a
profiler's) or ``ROOFTUNE_BOUND_LAUNCH=0`` (to time the difference), every call goes through
Triton as usual.

What is saved is Triton's Python per call; the launcher's own call (unpacking some thirty
arguments, the driver's launch) stays. On a faster H100 host
(``studies/serving-validation/h100-bound-2026-12-07/host-launches.json``) a bound launch cost
15.5-22.2 us of host time against 25.3-35.9 through Triton, the launcher alone 5.0-6.5, and a
layer's host work in an eager iteration 377 us against 483.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from torch import Tensor

__all__ = ["ENABLED", "launch", "specialization_key", "trailing_constants"]

ENABLED = os.environ.get("ROOFTUNE_BOUND_LAUNCH", "1") != "0"
_THROUGH_TRITON = object()  # a key whose calls go through Triton (the interpreter)
# kernel -> {(constants, specialization): (launcher, function, metadata, constexprs, streams)}
_bound: dict[Any, dict[tuple, Any]] = {}


def specialization_key(args: tuple) -> tuple:
    """What Triton's compiled kernel depends on in ``args``, or finer (see the module). An
    integer's class: 1 (a constant to Triton), else its width (32-bit, 64-bit signed or
    unsigned) times whether 16 divides it. A loop, not a comprehension: this runs on every
    launch, and the integers come first as the commonest case."""
    key = []
    for a in args:
        kind = type(a)
        if kind is int:
            width = 0 if -(2**31) <= a < 2**31 else (2 if a < 2**63 else 4)
            key.append(1 if a == 1 else 2 + width + (a & 15 == 0))
        elif isinstance(a, Tensor):
            key.append((a.dtype, a.data_ptr() & 15 == 0))
        else:
            key.append(kind)
    return tuple(key)


def launch(kernel, grid: tuple[int, ...], *args, **constants) -> None:
    """``kernel[grid](*args, **constants)``: ``args`` are the kernel's leading parameters (its
    runtime arguments, in order), ``constants`` its constexprs and launch options by name."""
    by_key = _bound.setdefault(kernel, {})
    key = (tuple(constants.items()), specialization_key(args))
    bound = by_key.get(key)
    if bound is None:
        constexprs = trailing_constants(kernel.fn, len(args), constants)
        compiled = kernel[grid](*args, **constants)
        by_key[key] = _THROUGH_TRITON
        if hasattr(compiled, "packed_metadata"):  # compiled for a GPU (not interpreted)
            by_key[key] = (compiled.run, compiled.function, compiled.packed_metadata, constexprs,
                           _stream_source())  # fmt: skip
        return
    if bound is _THROUGH_TRITON or not ENABLED or _hooked():
        kernel[grid](*args, **constants)
        return
    run, function, metadata, constexprs, (stream, device) = bound
    grid_3 = (*grid, 1, 1)[:3]
    run(*grid_3, stream(device()), function, metadata, None, None, None, *args, *constexprs)


def trailing_constants(fn, leading: int, constants: dict) -> tuple:
    """The values of ``fn``'s parameters after its ``leading`` runtime ones, in order: each a
    constexpr, given in ``constants`` or defaulted. A leading constexpr (its value would be
    missing from the key) or a runtime parameter left out is the caller's error."""
    parameters = list(inspect.signature(fn).parameters.values())
    name = fn.__name__
    for p in parameters[:leading]:
        assert "constexpr" not in str(p.annotation), (
            f"{name}: constexpr {p.name} passed by position"
        )
    values = []
    for p in parameters[leading:]:
        assert "constexpr" in str(p.annotation), f"{name}: runtime argument {p.name} missing"
        value = constants.get(p.name, p.default)
        assert value is not inspect.Parameter.empty, f"{name}: constexpr {p.name} not given"
        values.append(value)
    return tuple(values)


def _stream_source() -> tuple:
    """(get_current_stream(device), get_current_device()): as Triton finds the stream to launch on
    (the current one, a CUDA graph's while capturing)."""
    from triton.runtime import driver

    return driver.active.get_current_stream, driver.active.get_current_device


def _hooked() -> bool:
    """A launch hook is set (a profiler's): Triton must see every launch. Triton 3.9 keeps its
    hooks as chains, empty unless one was added."""
    from triton import knobs

    enter = getattr(knobs.runtime, "launch_enter_hook", None)
    leave = getattr(knobs.runtime, "launch_exit_hook", None)
    return any(hook is not None and getattr(hook, "calls", True) for hook in (enter, leave))
