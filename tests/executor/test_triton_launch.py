"""``executor.triton_launch``: a Triton kernel's arguments bound once per specialization.

A fake kernel stands in for Triton's (its compiled kernel records each launcher call), so the
binding is checked on a CPU: what the launcher receives, and which calls must go back through
Triton. The real kernels run through it in the interpreter tests and the GPU tests.
"""

from __future__ import annotations

import pytest
import torch

from executor import triton_launch
from executor.tritonlib import tl


def _kernel_fn(x_ptr, out_ptr, n, eps, BLOCK: tl.constexpr, USE_PDL: tl.constexpr,
               FLAG: tl.constexpr = False):  # fmt: skip
    """A kernel's parameters: four runtime ones, then constexprs (one with a default)."""


class _Compiled:
    """What Triton's launch returns on a GPU: the launcher and what it is handed."""

    def __init__(self) -> None:
        self.function, self.packed_metadata, self.calls = object(), object(), []

    def run(self, *arguments) -> None:
        self.calls.append(arguments)


class _Kernel:
    """``kernel[grid](*args, **constants)`` as Triton's JIT: counts the calls, compiles once per
    specialization it is told of."""

    fn = staticmethod(_kernel_fn)

    def __init__(self) -> None:
        self.through_triton, self.compiled = 0, []

    def __getitem__(self, grid):
        def call(*args, **constants):
            self.through_triton += 1
            self.compiled.append(_Compiled())
            return self.compiled[-1]

        return call


@pytest.fixture
def kernel(monkeypatch):
    monkeypatch.setattr(
        triton_launch, "_stream_source", lambda: (lambda device: 7 + device, lambda: 2)
    )
    return _Kernel()


def test_later_launches_go_straight_to_the_launcher_in_parameter_order(kernel):
    x, out = torch.zeros(64), torch.zeros(64)
    for _ in range(3):
        triton_launch.launch(kernel, (5,), x, out, 64, 1e-5, BLOCK=64, USE_PDL=True, num_warps=4)
    assert kernel.through_triton == 1
    compiled = kernel.compiled[0]
    assert len(compiled.calls) == 2
    # grid padded to three, the current stream (device 2's), then every parameter in order:
    # the runtime ones as given, the constexprs given or defaulted (num_warps is an option).
    assert compiled.calls[0] == (5, 1, 1, 9, compiled.function, compiled.packed_metadata,
                                 None, None, None, x, out, 64, 1e-5, 64, True, False)  # fmt: skip


def test_a_new_specialization_goes_through_triton(kernel):
    x, out = torch.zeros(64), torch.zeros(64)

    def run(*args, **constants):
        triton_launch.launch(kernel, (1,), *args, **{"BLOCK": 64, "USE_PDL": False, **constants})

    run(x, out, 64, 0.1)
    run(x[1:], out, 64, 0.1)  # 4 bytes in: not 16-byte aligned
    run(x, out, 1, 0.1)  # an integer 1 is a constant to Triton
    run(x, out, 24, 0.1)  # not a multiple of 16
    run(x, out, 2**40, 0.1)  # 64-bit
    run(x.half(), out, 64, 0.1)  # another dtype
    run(x, out, 64, 0.1, FLAG=True)  # another constexpr
    assert kernel.through_triton == 7
    run(x[4:], out, 32, 0.2)  # aligned, a multiple of 16, any float: the first's kernel
    assert kernel.through_triton == 7 and len(kernel.compiled[0].calls) == 1


def test_a_launch_hook_sees_every_launch(kernel, monkeypatch):
    monkeypatch.setattr(triton_launch, "_hooked", lambda: True)
    x = torch.zeros(16)
    for _ in range(2):
        triton_launch.launch(kernel, (1,), x, x, 16, 0.1, BLOCK=16, USE_PDL=False)
    assert kernel.through_triton == 2 and not kernel.compiled[0].calls


def test_the_interpreter_launches_through_triton_every_time(kernel):
    kernel.__class__ = type("Interpreted", (_Kernel,), {"__getitem__": lambda self, grid: (
        lambda *a, **c: setattr(self, "through_triton", self.through_triton + 1))})  # fmt: skip
    x = torch.zeros(16)
    for _ in range(3):
        triton_launch.launch(kernel, (1,), x, x, 16, 0.1, BLOCK=16, USE_PDL=False)
    assert kernel.through_triton == 3


def test_arguments_that_would_escape_the_key_are_refused():
    with pytest.raises(AssertionError, match="constexpr BLOCK passed by position"):
        triton_launch.trailing_constants(_kernel_fn, 5, {"USE_PDL": True})
    with pytest.raises(AssertionError, match="runtime argument eps missing"):
        triton_launch.trailing_constants(_kernel_fn, 3, {"BLOCK": 1, "USE_PDL": True})
    with pytest.raises(AssertionError, match="constexpr USE_PDL not given"):
        triton_launch.trailing_constants(_kernel_fn, 4, {"BLOCK": 1})


def test_integers_are_keyed_by_what_triton_specializes_on():
    key = triton_launch.specialization_key
    # 1 is a constant; then 32-bit, 64-bit and unsigned 64-bit, each divisible by 16 or not.
    classes = [1, 3, 32, 2**31 + 1, 2**31, 2**63 + 1, 2**63, -(2**31) - 16]
    assert len({key((n,)) for n in classes}) == 7  # the last is a 64-bit multiple of 16
    assert key((-16,)) == key((32,)) and key((5,)) == key((7,)) and key((True,)) != key((1,))
