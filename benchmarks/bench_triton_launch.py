"""The host's own cost of ``executor.triton_launch.launch``, with no GPU.

Triton's ``kernel[grid](...)`` cost about 43 us of host time a launch on the slow H100 hosts
(`studies/serving-validation/h100-layout-2026-12-07/`). ``launch`` binds a kernel's arguments
once per specialization, then each call works out its key (each argument's dtype, alignment or
integer class) and hands the arguments to the compiled kernel's launcher. This times that
Python work for the paged decode kernel as a serving iteration launches it layer by layer
(``decode_attention.prepare``'s ``launch_on(cache)``, 31 arguments, Llama-3.1-8B's head shapes,
8 sequences), with a launcher that returns at once: what is left for the driver is the C
launcher's own call. Beside it, Triton's own argument binder for the same call (sm_90), the
first of the steps ``kernel[grid](...)`` takes before the launcher. Prints the median
microseconds a call, then one JSON line.

    python benchmarks/bench_triton_launch.py
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from executor import decode_attention, triton_launch
from executor.kv_cache import PagedKVCache


class _Compiled:
    """A compiled kernel whose launcher returns at once."""

    function = packed_metadata = None

    @staticmethod
    def run(*arguments) -> None:
        return None


class _Kernel:
    """The decode kernel's parameters, compiled into ``_Compiled`` on its first launch (whose
    arguments it keeps)."""

    def __init__(self, kernel) -> None:
        self.fn, self.first = kernel.fn, None

    def __getitem__(self, grid):
        def compile_once(*args, **constants):
            self.first = args, constants
            return _Compiled()

        return compile_once


def _tritons_binder(kernel):
    """Triton's own argument binder for ``kernel`` on sm_90 (the first step of every
    ``kernel[grid](...)``: names, specialization, options), where this Triton exposes it."""
    try:
        from triton.backends.compiler import GPUTarget
        from triton.backends.nvidia.compiler import CUDABackend
        from triton.runtime import jit

        backend = CUDABackend(GPUTarget("cuda", 90, 32))
        return jit.create_function_from_signature(kernel.signature, kernel.params, backend)
    except (ImportError, AttributeError, TypeError):
        return None


def _median_us(call, calls: int = 2000, rounds: int = 15) -> float:
    per_call = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(calls):
            call()
        per_call.append((time.perf_counter() - start) / calls)
    return 1e6 * statistics.median(per_call)


def main() -> None:
    real = decode_attention._decode_kernel
    decode_attention._decode_kernel = stand_in = _Kernel(real)
    triton_launch._stream_source = lambda: (lambda device: 0, lambda: 0)
    heads, kv_heads, dim, batch = 32, 8, 128, 8
    cache = PagedKVCache(64, kv_heads, 16, dim, torch.bfloat16, "cpu")
    qkv = torch.zeros(batch, 1, heads + 2 * kv_heads, dim, dtype=torch.bfloat16)
    positions = torch.full((batch,), 100)
    rope = torch.zeros(batch, dim, dtype=torch.bfloat16)
    tables = torch.arange(batch * 8).view(batch, 8) % 64
    launch_on = decode_attention.prepare(qkv, rope, rope, positions, cache, 101, heads,
                                         block_table=tables)  # fmt: skip
    args = (qkv, rope, rope, positions, tables, cache.k, cache.v) + (0,) * 24
    result = {
        "decode kernel, laid out (launch_on)": _median_us(lambda: launch_on(cache)),
        "specialization_key, 31 arguments": _median_us(
            lambda: triton_launch.specialization_key(args)
        ),
    }
    binder = _tritons_binder(real)
    if binder is not None:
        args, constants = stand_in.first
        result["Triton's binder alone (sm_90)"] = _median_us(lambda: binder(*args, **constants))
    for name, us in result.items():
        print(f"{name:40s} {us:6.2f} us a call")
    print(json.dumps({"host_us": {k: round(v, 2) for k, v in result.items()}}))


if __name__ == "__main__":
    main()
