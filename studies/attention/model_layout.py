"""Prefill attention as the executor's model calls it: q, k and v as head-major views of one
fused projection output ``[1, T, heads + 2 kv_heads, D]`` (not contiguous), against contiguous
tensors, under PyTorch's backend choice and each backend forced. Graph replays; Llama-3.1-8B
heads. Run on the GPU: ``python3 studies/attention/model_layout.py OUT.json``."""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from executor.engine import time_graph

HEADS, KV_HEADS, D = 32, 8, 128
BACKENDS = {"default": None, "flash": SDPBackend.FLASH_ATTENTION,
            "cudnn": SDPBackend.CUDNN_ATTENTION}  # fmt: skip


def main() -> None:
    rows = []
    for seq in (512, 1024, 2048, 4096, 8192, 16384):
        qkv = torch.randn(1, seq, HEADS + 2 * KV_HEADS, D, device="cuda", dtype=torch.bfloat16)
        q, k, v = qkv.transpose(1, 2).split([HEADS, KV_HEADS, KV_HEADS], dim=1)
        layouts = {"model views": (q, k, v),
                   "contiguous": (q.contiguous(), k.contiguous(), v.contiguous())}  # fmt: skip
        flops = 2.0 * seq * seq * HEADS * D
        for layout, (a, b, c) in layouts.items():
            for name, backend in BACKENDS.items():

                def call(a=a, b=b, c=c, backend=backend):
                    if backend is None:
                        return F.scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=True)
                    with sdpa_kernel([backend]):
                        return F.scaled_dot_product_attention(a, b, c, is_causal=True, enable_gqa=True)

                try:
                    seconds = time_graph(call, calls=10)
                except RuntimeError as error:
                    rows.append({"seq": seq, "layout": layout, "backend": name,
                                 "error": str(error).splitlines()[0][:120]})
                    continue
                rows.append({"seq": seq, "layout": layout, "backend": name, "time_s": seconds,
                             "flops": flops, "flops_per_s": flops / seconds})
                print(f"S={seq:>6} {layout:>12} {name:>8}: {flops / seconds / 1e12:6.0f} TFLOP/s",
                      flush=True)
        del qkv, q, k, v, layouts
        torch.cuda.empty_cache()
    json.dump({"device": torch.cuda.get_device_name(), "torch": torch.__version__,
               "rows": rows}, open(sys.argv[1], "w"), indent=1)  # fmt: skip


if __name__ == "__main__":
    main()
