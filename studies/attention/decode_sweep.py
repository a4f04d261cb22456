"""The one-kernel decode attention (``executor.decode_attention``) alone, one layer of
Llama-3.1-8B (32 query heads, 8 K/V heads of 128), over its launch tile: keys per loop step x
warps x pipeline stages, with an FP8 and a bf16 cache, beside PyTorch's SDPA over the same
bf16 cache. Graph replays, medians. The FP8 cache at batch 128 and 4k context was the
executor's slowest shape (`NOTES.md`). Run on the GPU:
``python3 studies/attention/decode_sweep.py OUT.json``."""

from __future__ import annotations

import itertools
import json
import sys

import torch
import torch.nn.functional as F

from executor import decode_attention as attention
from executor.engine import time_graph
from executor.kv_cache import KVCache

HEADS, KV_HEADS, D = 32, 8, 128
SHAPES = [(1, 1024), (32, 4096), (128, 4096), (128, 1024)]  # (batch, context)
TILES = list(itertools.product((32, 64, 128), (4, 8), (None, 3)))


def main() -> None:
    rows = []
    angles = torch.randn(1, D // 2, device="cuda").repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    for (batch, context), fp8 in itertools.product(SHAPES, (True, False)):
        dtype = torch.float8_e4m3fn if fp8 else torch.bfloat16
        cache = KVCache(batch, KV_HEADS, context, D, dtype, "cuda")
        cache.k.copy_(torch.randn(cache.k.shape, device="cuda").to(dtype))
        cache.v.copy_(torch.randn(cache.v.shape, device="cuda").to(dtype))
        qkv = torch.randn(batch, 1, HEADS + 2 * KV_HEADS, D, device="cuda", dtype=torch.bfloat16)
        position = torch.tensor([context - 1], device="cuda")
        kv_bytes = 2 * batch * KV_HEADS * context * D * cache.k.element_size()
        name = "fp8" if fp8 else "bf16"
        for block_s, warps, stages in TILES:
            try:
                seconds = time_graph(
                    lambda b=block_s, w=warps, s=stages: attention.decode_attention(
                        qkv, cos, sin, position, cache, context, HEADS,
                        block_s=b, num_warps=w, num_stages=s,
                    ),
                    calls=10,
                )  # fmt: skip
            except Exception as error:  # a tile that does not compile or fit: say so
                rows.append({"batch": batch, "context": context, "cache": name,
                             "block_s": block_s, "warps": warps, "stages": stages,
                             "error": str(error).splitlines()[0][:160]})  # fmt: skip
                continue
            rows.append({"batch": batch, "context": context, "cache": name, "block_s": block_s,
                         "warps": warps, "stages": stages, "time_s": seconds,
                         "bytes_per_s": kv_bytes / seconds})  # fmt: skip
        if not fp8:  # the library path over the same cache (without RoPE and the write)
            q = qkv[:, :, :HEADS].transpose(1, 2)
            seconds = time_graph(
                lambda: F.scaled_dot_product_attention(q, cache.k, cache.v, enable_gqa=True),
                calls=10,
            )
            rows.append({"batch": batch, "context": context, "cache": name, "sdpa": True,
                         "time_s": seconds, "bytes_per_s": kv_bytes / seconds})  # fmt: skip
        mine = [r for r in rows if r.get("batch") == batch and r.get("context") == context
                and r.get("cache") == name and "time_s" in r]  # fmt: skip
        best = min(mine, key=lambda r: r["time_s"])
        default = next((r for r in mine if r.get("block_s") == attention.BLOCK_S
                        and r.get("warps") == attention.NUM_WARPS and r.get("stages") is None),
                       None)  # fmt: skip
        print(f"B={batch:>4} C={context:>5} {name:>4}: best {best['time_s'] * 1e6:8.1f} us "
              f"({best['bytes_per_s'] / 1e12:.2f} TB/s) {best.get('block_s')}/{best.get('warps')}/"
              f"{best.get('stages')}{' sdpa' if best.get('sdpa') else ''}; default "
              f"{default['time_s'] * 1e6 if default else float('nan'):8.1f} us", flush=True)
        del cache, qkv
        torch.cuda.empty_cache()
        # After every shape: a run cut short keeps what it measured.
        json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "rows": rows}, open(sys.argv[1], "w"), indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
