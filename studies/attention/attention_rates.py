"""Attention rates on one GPU, timed four ways, to explain why the H200 calibration's prefill
attention came out at half of the H100's, and to measure the decode-attention math rate.

Prefill: causal, batch 1, Llama-3.1-8B's heads (32 query, 8 KV, head_dim 128), one backend at a
time (PyTorch's SDPA forced to FLASH, EFFICIENT or CUDNN; native GQA or K/V repeated), each
timed eagerly (CUDA events around one call, the way the calibration's first H200 run timed it)
and as graph replays (the kernel alone). Decode: one query token per sequence over the whole KV
(the executor's SDPA decode), graph-timed; its bytes and FLOPs give both rates it reached.

Run on the GPU: ``python3 studies/attention/attention_rates.py OUT.json``. Prints a table.
"""

from __future__ import annotations

import json
import subprocess
import sys

import torch
import torch.nn.functional as F
from torch.nn.attention import SDPBackend, sdpa_kernel

from executor.engine import median, time_cuda, time_graph

HEADS, KV_HEADS, HEAD_DIM = 32, 8, 128
SEQS = [512, 1024, 2048, 4096, 8192, 16384]
BACKENDS = {
    "flash": SDPBackend.FLASH_ATTENTION,
    "efficient": SDPBackend.EFFICIENT_ATTENTION,
    "cudnn": SDPBackend.CUDNN_ATTENTION,
}


def prefill_rows() -> list[dict]:
    rows = []
    for seq in SEQS:
        q = torch.randn(1, HEADS, seq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, KV_HEADS, seq, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        group = HEADS // KV_HEADS
        k_rep, v_rep = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
        flops = 2.0 * seq * seq * HEADS * HEAD_DIM  # causal: half of 4 S^2 H D
        for name, backend in [*BACKENDS.items(), ("default", None)]:
            for gqa in ("native", "repeated"):

                def call(gqa=gqa, backend=backend):
                    if gqa == "native":
                        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
                    return F.scaled_dot_product_attention(q, k_rep, v_rep, is_causal=True)

                def run(call=call, backend=backend):
                    if backend is None:
                        return call()
                    with sdpa_kernel([backend]):
                        return call()

                try:
                    eager = median(time_cuda(run, warmup=3, iters=20))
                    graph = time_graph(run, calls=10)
                except RuntimeError as error:
                    rows.append({"seq": seq, "backend": name, "gqa": gqa,
                                 "error": str(error).splitlines()[0][:160]})
                    continue
                rows.append({"seq": seq, "backend": name, "gqa": gqa, "flops": flops,
                             "eager_s": eager, "graph_s": graph,
                             "eager_flops_per_s": flops / eager, "graph_flops_per_s": flops / graph})
        del q, k, v, k_rep, v_rep
        torch.cuda.empty_cache()
    return rows


def decode_rows() -> list[dict]:
    rows = []
    # 8B at TP 1 (group 4) and 70B at TP 2 (32 query heads, 4 KV heads per GPU: group 8).
    for heads, kv_heads in ((32, 8), (32, 4)):
        for batch in (16, 64, 128, 256):
            for context in (1024, 4096):
                k = torch.randn(batch, kv_heads, context, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                v = torch.randn_like(k)
                q = torch.randn(batch, heads, 1, HEAD_DIM, device="cuda", dtype=torch.bfloat16)
                seconds = time_graph(
                    lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                    calls=10,
                )
                nbytes = 2.0 * batch * kv_heads * context * HEAD_DIM * 2
                flops = 4.0 * batch * heads * context * HEAD_DIM
                rows.append({"heads": heads, "kv_heads": kv_heads, "batch": batch,
                             "context": context, "time_s": seconds, "bytes": nbytes,
                             "flops": flops, "bytes_per_s": nbytes / seconds,
                             "flops_per_s": flops / seconds})
                del k, v, q
        torch.cuda.empty_cache()
    return rows


def main() -> None:
    smi = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                          "--format=csv,noheader"], capture_output=True, text=True).stdout
    out = {
        "device": torch.cuda.get_device_name(),
        "nvidia_smi": smi.strip().splitlines(),
        "mem_get_info_total_bytes": torch.cuda.mem_get_info()[1],
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "prefill": prefill_rows(),
        "decode": decode_rows(),
    }
    for r in out["prefill"]:
        if "error" in r:
            print(f"S={r['seq']:>6} {r['backend']:>9} {r['gqa']:>8}: {r['error']}")
        else:
            print(f"S={r['seq']:>6} {r['backend']:>9} {r['gqa']:>8}: eager "
                  f"{r['eager_flops_per_s'] / 1e12:6.0f}  graph {r['graph_flops_per_s'] / 1e12:6.0f} TFLOP/s")
    for r in out["decode"]:
        print(f"decode H={r['heads']} KV={r['kv_heads']} B={r['batch']:>4} C={r['context']:>5}: "
              f"{r['bytes_per_s'] / 1e12:5.2f} TB/s, {r['flops_per_s'] / 1e12:6.1f} TFLOP/s")
    with open(sys.argv[1], "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
