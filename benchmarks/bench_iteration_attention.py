"""The host's work for one layer's attention in a serving iteration, with no GPU work.

Between two piecewise graphs' replays (``executor.piecewise_graphs``) a layer's attention runs
from Python: the paged decode kernel's launch, RoPE and the cache store for the other tokens,
and each prompt chunk's attention. Where that host work outlasts the GPU's, the host sets the
step's time. Here the two Triton launches are stand-ins that return at once (what is left is
what the host does around them) and tensors live on the CPU in float32 (SDPA's own time
small beside the host's), at Llama-3.1-8B's head shapes, for 8 decodes beside a 16-token
first chunk. For attention laid out once a layer (as a decode graph's capture does) and once
an iteration of 32 layers (``IterationAttention``, as an eager iteration and the piecewise
graphs run it) it prints the ATen ops dispatched per layer and the median microseconds per
layer, then SDPA's alone (on the CPU it computes; on a GPU it only launches), then one JSON
line. Run: ``python benchmarks/bench_iteration_attention.py``.
"""

from __future__ import annotations

import json
import statistics
import time
from types import SimpleNamespace

import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

from executor import decode_attention, elementwise
from executor.fused import Kernels
from executor.kv_cache import PagedKVCache
from executor.ragged import IterationAttention, RaggedBatch

HEADS, KV_HEADS, HEAD_DIM, LAYERS = 32, 8, 128, 32
DECODES, CHUNK, BLOCK = 8, 16, 16


class _NoLaunch:
    """A Triton kernel that launches nothing: ``kernel[grid](...)`` returns at once (its
    parameters still ``kernel``'s, as ``executor.triton_launch`` reads them)."""

    def __init__(self, kernel) -> None:
        self.fn = kernel.fn

    def __getitem__(self, grid):
        return lambda *args, **kwargs: None


class _CountOps(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops += 1
        return func(*args, **(kwargs or {}))


def _iteration():
    """One iteration's inputs: ``DECODES`` sequences at 100 cached tokens, then a first chunk."""
    attention = SimpleNamespace(num_heads=HEADS, num_kv_heads=KV_HEADS, head_dim=HEAD_DIM,
                                kv_cache=PagedKVCache(256, KV_HEADS, BLOCK, HEAD_DIM,
                                                      torch.float32, "cpu"))  # fmt: skip
    tokens = DECODES + CHUNK
    positions = torch.cat([torch.full((DECODES,), 100), torch.arange(CHUNK)])
    batch = RaggedBatch(positions=positions, blocks=positions // BLOCK, offsets=positions % BLOCK,
                        tables=torch.arange(72, dtype=torch.int32).view(DECODES + 1, 8),
                        decodes=DECODES, chunks=[(DECODES, CHUNK, DECODES, 0)],
                        sample_rows=torch.tensor([0]), max_length=101)  # fmt: skip
    qkv = torch.randn(1, tokens, HEADS + 2 * KV_HEADS, HEAD_DIM, dtype=torch.float32)
    rope = torch.randn(tokens, HEAD_DIM, dtype=torch.float32)
    out = torch.empty(1, tokens, HEADS * HEAD_DIM, dtype=torch.float32)
    return attention, qkv, rope, batch, out


def _median_us(run, repeats: int = 30) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        run()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    decode_attention._decode_kernel = _NoLaunch(decode_attention._decode_kernel)
    elementwise._rope_cache_kernel = _NoLaunch(elementwise._rope_cache_kernel)
    kernels = Kernels(rope_cache=elementwise.rope_cache,
                      decode_attention=decode_attention.decode_attention,
                      decode_attention_mode="triton")  # fmt: skip
    attention, qkv, rope, batch, out = _iteration()
    q, k, v = qkv[0, DECODES:].transpose(0, 1)[None].split([HEADS, KV_HEADS, KV_HEADS], dim=1)

    def per_layer() -> None:
        for _ in range(LAYERS):
            IterationAttention(attention, qkv, rope, rope, batch, kernels, out=out)(attention)

    def per_iteration() -> None:
        attend = IterationAttention(attention, qkv, rope, rope, batch, kernels, out=out)
        for _ in range(LAYERS):
            attend(attention)

    with torch.inference_mode():
        sdpa_us = _median_us(lambda: F.scaled_dot_product_attention(q, k, v, is_causal=True,
                                                                    enable_gqa=True))  # fmt: skip
        result: dict = {}
        for name, run in (("a layer", per_layer), ("an iteration", per_iteration)):
            run()  # warm
            with _CountOps() as counted:
                run()
            host_us = _median_us(run) / LAYERS
            result["once " + name] = {
                "aten_ops": counted.ops / LAYERS,
                "host_us": round(host_us, 1),
            }
            print(f"laid out once {name:12s}: {counted.ops / LAYERS:4.1f} "
                  f"ATen ops a layer, {host_us:5.1f} us a layer")  # fmt: skip
    print(f"SDPA alone: {sdpa_us:.1f} us")
    print(json.dumps({**result, "sdpa_us": round(sdpa_us, 1)}))


if __name__ == "__main__":
    main()
