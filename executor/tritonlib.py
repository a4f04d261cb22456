"""Triton where it is installed, and whether the executor's Triton kernels can run here.

CUDA builds of torch bring Triton. A CPU-only install may not have it: then ``triton`` and ``tl``
are None, the kernel modules define no kernels, and the model keeps its PyTorch paths. Where
Triton is installed without a GPU, the tests run the kernels in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch

__all__ = ["triton", "tl", "available"]

try:
    import triton
    import triton.language as tl
except ImportError:  # pragma: no cover - depends on the environment
    triton = tl = None


def available() -> bool:
    """Triton and a CUDA GPU are both here."""
    return triton is not None and torch.cuda.is_available()
