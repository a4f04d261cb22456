"""What a new prompt length costs the first time it meets PyTorch's causal attention, on a GPU.

The first serving load's iterations with a prompt chunk ran 3-5x slower than the same
iterations in later loads, with no Triton compile among them. On Hopper PyTorch's SDPA picks
cuDNN's fused attention, which builds an execution plan per sequence length; a later load
replays the same prompt lengths. This times, for fresh lengths, the first and the second call
(host wall, synchronized) of one 8B layer's causal attention, as the serving loop ran it before
(exact length) and as it runs it now (padded to ``executor.ragged.ATTENTION_BUCKET``, the
buckets warmed first).

    python3 studies/serving-validation/attention_plans.py OUT.json
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import torch

from executor.ragged import ATTENTION_BUCKET, _first_chunk_attention

HEADS, KV_HEADS, D = 32, 8, 128


def call_ms(length: int, bucket: int) -> float:
    """Wall milliseconds of one synchronized call at ``length`` tokens."""
    rows = torch.randn(length, HEADS + 2 * KV_HEADS, D, device="cuda", dtype=torch.bfloat16)
    torch.cuda.synchronize()
    start = time.perf_counter()
    _first_chunk_attention(rows, HEADS, KV_HEADS, "flash", bucket)
    torch.cuda.synchronize()
    return 1e3 * (time.perf_counter() - start)


def main() -> int:
    call_ms(64, 1)  # the library's own first use, apart from any length
    fresh = [1000 + 7 * i for i in range(8)] + [301 + 13 * i for i in range(8)]
    exact = [(n, call_ms(n, 1), call_ms(n, 1)) for n in fresh]
    for n in range(ATTENTION_BUCKET, 2048 + 1, ATTENTION_BUCKET):  # the warm-up's buckets
        call_ms(n, ATTENTION_BUCKET)
    others = [n + 3 for n in fresh]  # lengths never met, in buckets already built
    padded = [(n, call_ms(n, ATTENTION_BUCKET), call_ms(n, ATTENTION_BUCKET)) for n in others]
    document = {"card": torch.cuda.get_device_name(), "torch": torch.__version__,
                "cudnn": torch.backends.cudnn.version(), "bucket": ATTENTION_BUCKET,
                "exact": exact, "padded": padded}  # fmt: skip
    for name, rows in (("exact length", exact), ("padded", padded)):
        first = statistics.median(r[1] for r in rows)
        second = statistics.median(r[2] for r in rows)
        print(f"{name:>12}: first call at a new length {first:.2f} ms (median of {len(rows)}), "
              f"second {second:.2f} ms")  # fmt: skip
    with open(sys.argv[1], "w") as out:
        json.dump(document, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
