"""Microbenchmarks: the numbers ``simulator.calibration.fit`` fits the efficiency of a GPU from.

- HBM: a streaming read (``torch.sum`` over 4 GB) and a device-to-device copy.
- GEMM time vs tokens M for the model's layer shapes (bf16 and fp8 through cuBLAS /
  ``torch._scaled_mm``, TP 1/2/4 shards), the one-token Triton GEMV the decode step uses, and an
  8192^3 GEMM (the measured peak). Weights rotate over more than the L2 cache and short kernels
  are timed as graph replays, so neither the cache nor the host's launch cost is measured.
- Attention: causal prefill vs sequence length (PyTorch's backend choice, and cuDNN beside it)
  and decode vs batch x context (flash over exactly the valid KV, as the decode step runs it),
  both as graph replays.
- The cost of one kernel, eager and inside a CUDA graph; all-reduce time vs message size.
"""

from __future__ import annotations

import gc
import math

import torch
import torch.nn.functional as F

from executor.engine import median, time_cuda, time_graph
from executor.quant import FP8_DTYPE
from simulator.data.specs import ModelSpec

__all__ = ["bench_micro", "bench_hbm", "bench_gemm_peak", "bench_allreduce", "gemm_shapes"]

L2_FLUSH_BYTES = 256e6  # rotate inputs over more than this so weights never sit in L2


def _log(*parts) -> None:
    print(*parts, flush=True)


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def bench_hbm(*, size_bytes: float = 4e9) -> dict:
    numel = int(size_bytes // 2)
    x = torch.randn(numel, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    read_s = median(time_cuda(lambda: torch.sum(x, dtype=torch.float32), warmup=3, iters=20))
    copy_s = median(time_cuda(lambda: y.copy_(x), warmup=3, iters=20))
    x = y = None
    _free()
    return {
        "size_bytes": numel * 2,
        "read_s": read_s,
        "read_bytes_per_s": numel * 2 / read_s,
        "copy_s": copy_s,
        "copy_bytes_per_s": 2 * numel * 2 / copy_s,
    }


def gemm_shapes(spec: ModelSpec, tps: list[int]) -> list[dict]:
    h, d = spec.hidden_size, spec.head_dim
    shapes = []
    for tp in tps:
        qkv = (spec.num_attention_heads + 2 * spec.num_key_value_heads) * d // tp
        shapes += [
            {"name": "qkv_proj", "tp": tp, "n": qkv, "k": h},
            {"name": "o_proj", "tp": tp, "n": h, "k": spec.q_size // tp},
            {"name": "gate_up_proj", "tp": tp, "n": 2 * spec.intermediate_size // tp, "k": h},
            {"name": "down_proj", "tp": tp, "n": h, "k": spec.intermediate_size // tp},
            {"name": "lm_head", "tp": tp, "n": spec.vocab_size // tp, "k": h},
        ]
    return shapes


def _time_gemm(m: int, n: int, k: int, dtype: str, *, iters: int = 20) -> float:
    copies = max(1, math.ceil(L2_FLUSH_BYTES / (n * k * (1 if dtype == "fp8" else 2))))
    copies = min(copies, 64)
    calls = max(copies, 8) if m * n * k < 2**34 else 2
    a = torch.randn(m, k, device="cuda", dtype=torch.bfloat16)
    weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    if dtype == "fp8":
        a8 = a.to(FP8_DTYPE)
        weights = [w.to(FP8_DTYPE) for w in weights]
        one = torch.ones((), device="cuda")

        def run(i=[0]):  # noqa: B006 - a rotating index
            i[0] = (i[0] + 1) % copies
            return torch._scaled_mm(
                a8, weights[i[0]].t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16
            )
    else:

        def run(i=[0]):  # noqa: B006
            i[0] = (i[0] + 1) % copies
            return F.linear(a, weights[i[0]])

    seconds = time_graph(run, calls=calls, iters=iters)
    a = weights = None  # noqa: F841 - free before the next shape
    return seconds


def _time_gemv(n: int, k: int, dtype: str) -> float:
    from executor.kernels import gemv

    copies = min(64, max(1, math.ceil(L2_FLUSH_BYTES / (n * k * (1 if dtype == "fp8" else 2)))))
    x = torch.randn(1, k, device="cuda", dtype=torch.bfloat16)
    weights = [torch.randn(n, k, device="cuda", dtype=torch.bfloat16) for _ in range(copies)]
    scale = None
    if dtype == "fp8":
        weights = [w.to(FP8_DTYPE) for w in weights]
        scale = torch.ones(1, device="cuda")

    def run(i=[0]):  # noqa: B006 - a rotating index
        i[0] = (i[0] + 1) % copies
        return gemv(x, weights[i[0]], scale)

    run()  # autotune outside the graph
    seconds = time_graph(run, calls=max(copies, 8))
    x = weights = None  # noqa: F841
    return seconds


def bench_gemm(spec: ModelSpec, *, tokens: list[int], tps: list[int], dtypes: list[str]) -> list:
    records = []
    from executor.kernels import available

    if available():  # the one-token GEMV the decode step uses at batch 1
        for dtype in dtypes:
            for shape in gemm_shapes(spec, tps):
                seconds = _time_gemv(shape["n"], shape["k"], dtype)
                flops = 2.0 * shape["n"] * shape["k"]
                records.append(
                    {
                        **shape,
                        "dtype": dtype,
                        "m": 1,
                        "kernel": "gemv",
                        "time_s": seconds,
                        "flops": flops,
                        "flops_per_s": flops / seconds,
                    }
                )
    for dtype in dtypes:
        for shape in gemm_shapes(spec, tps):
            for m in tokens:
                if shape["name"] == "lm_head" and m > 1024:
                    continue  # the lm_head sees one token per sequence
                seconds = _time_gemm(m, shape["n"], shape["k"], dtype)
                flops = 2.0 * m * shape["n"] * shape["k"]
                records.append(
                    {
                        **shape,
                        "dtype": dtype,
                        "m": m,
                        "kernel": "cublas",
                        "time_s": seconds,
                        "flops": flops,
                        "flops_per_s": flops / seconds,
                    }
                )
    _free()
    return records


def bench_gemm_peak(dtypes: list[str], size: int = 8192) -> dict:
    out = {}
    for dtype in dtypes:
        seconds = _time_gemm(size, size, size, dtype, iters=10)
        out[dtype] = {"size": size, "time_s": seconds, "flops_per_s": 2.0 * size**3 / seconds}
    _free()
    return out


def bench_attention_prefill(
    spec: ModelSpec, seq_lens: list[int], backends: tuple[str, ...] = ("flash", "cudnn")
) -> list:
    from executor.fused import causal_attention

    records = []
    heads, kv_heads, d = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    for seq in seq_lens:
        # As the model calls it: q, k and v are head-major views of one fused projection
        # output, not contiguous tensors (PyTorch may pick another kernel for each layout).
        qkv = torch.randn(1, seq, heads + 2 * kv_heads, d, device="cuda", dtype=torch.bfloat16)
        q, k, v = qkv.transpose(1, 2).split([heads, kv_heads, kv_heads], dim=1)
        for backend in backends:
            try:
                # Graph replays: the kernel's own time. Timed one eager call at a time, a short
                # prompt's attention measured the host's dispatch (a ~60 us floor on an H100).
                seconds = time_graph(
                    lambda q=q, k=k, v=v, backend=backend: causal_attention(q, k, v, backend),
                    calls=10,
                )
            except RuntimeError as error:
                _log(f"attention backend {backend} failed: {str(error)[:120]}")
                continue
            flops = 2.0 * seq * seq * heads * d  # 4 S^2 H D, halved by the causal mask
            records.append(
                {
                    "seq": seq,
                    "backend": backend,
                    "layout": "fused projection views",
                    "time_s": seconds,
                    "flops": flops,
                    "flops_per_s": flops / seconds,
                }
            )
        qkv = q = k = v = None  # noqa: F841 - free before the next length
    _free()
    return records


def bench_attention_decode(spec: ModelSpec, batches: list[int], contexts: list[int]) -> list:
    records = []
    kv_heads, d = spec.num_key_value_heads, spec.head_dim
    group = spec.num_attention_heads // kv_heads
    for batch in batches:
        for context in contexts:
            kv_bytes = 2.0 * batch * kv_heads * context * d * 2
            if kv_bytes > 20e9:
                continue
            k = torch.randn(batch, kv_heads, context, d, device="cuda", dtype=torch.bfloat16)
            v = torch.randn_like(k)
            # The executor's decode: flash over exactly the valid keys, all query heads.
            q = torch.randn(batch, kv_heads * group, 1, d, device="cuda", dtype=torch.bfloat16)
            seconds = time_graph(
                lambda q=q, k=k, v=v: F.scaled_dot_product_attention(q, k, v, enable_gqa=True),
                calls=10,
            )
            flops = 4.0 * batch * kv_heads * group * context * d  # scores and values
            records.append(
                {
                    "batch": batch,
                    "context": context,
                    "time_s": seconds,
                    "bytes": kv_bytes,
                    "bytes_per_s": kv_bytes / seconds,
                    "flops": flops,
                    "flops_per_s": flops / seconds,
                }
            )
            k = v = q = None  # noqa: F841
    _free()
    return records


def bench_kernel_overhead(num_kernels: int = 200) -> dict:
    x = torch.randn(1024, device="cuda")

    def many():
        y = x
        for _ in range(num_kernels):
            y = y + 1.0
        return y

    eager_s = median(time_cuda(many, warmup=3, iters=10))
    graph = torch.cuda.CUDAGraph()
    many()
    torch.cuda.synchronize()
    with torch.cuda.graph(graph):
        many()
    graph_s = median(time_cuda(graph.replay, warmup=3, iters=10))
    return {
        "num_kernels": num_kernels,
        "eager_per_kernel_s": eager_s / num_kernels,
        "graph_per_kernel_s": graph_s / num_kernels,
    }


def bench_micro(spec: ModelSpec, *, smoke: bool = False) -> dict:
    tokens = (
        [1, 16, 128, 1024] if smoke else [1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    )
    results = {"hbm": bench_hbm(size_bytes=1e9 if smoke else 4e9)}
    _log(
        f"HBM read {results['hbm']['read_bytes_per_s'] / 1e12:.2f} TB/s, copy "
        f"{results['hbm']['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write)"
    )
    results["gemm_peak"] = bench_gemm_peak(["bf16", "fp8"], size=2048 if smoke else 8192)
    for dtype, peak in results["gemm_peak"].items():
        _log(f"GEMM peak {dtype}: {peak['flops_per_s'] / 1e12:.0f} TFLOP/s")
    results["gemm"] = bench_gemm(
        spec, tokens=tokens, tps=[1] if smoke else [1, 2, 4], dtypes=["bf16", "fp8"]
    )
    _log(f"{'shape':>14} {'tp':>3} {'dtype':>5} " + " ".join(f"{m:>7}" for m in tokens))
    for dtype in ("bf16", "fp8"):
        for shape in gemm_shapes(spec, [1]):
            row = [
                r
                for r in results["gemm"]
                if r["name"] == shape["name"]
                and r["tp"] == 1
                and r["dtype"] == dtype
                and r["kernel"] == "cublas"
            ]
            gemv_row = [
                r
                for r in results["gemm"]
                if r["name"] == shape["name"]
                and r["tp"] == 1
                and r["dtype"] == dtype
                and r["kernel"] == "gemv"
            ]
            if gemv_row:
                bytes_read = shape["n"] * shape["k"] * (1 if dtype == "fp8" else 2)
                _log(
                    f"{shape['name']:>14} {1:>3} {dtype:>5} gemv M=1: "
                    f"{gemv_row[0]['time_s'] * 1e6:.1f} us, "
                    f"{bytes_read / gemv_row[0]['time_s'] / 1e12:.2f} TB/s; cuBLAS "
                    f"{row[0]['time_s'] * 1e6:.1f} us, "
                    f"{bytes_read / row[0]['time_s'] / 1e12:.2f} TB/s"
                )
            _log(
                f"{shape['name']:>14} {1:>3} {dtype:>5} "
                + " ".join(f"{r['flops_per_s'] / 1e12:7.0f}" for r in row)
                + "  TFLOP/s"
            )
    seqs = [128, 1024] if smoke else [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    results["attention_prefill"] = bench_attention_prefill(spec, seqs)
    for r in results["attention_prefill"]:
        _log(
            f"prefill attention {r['backend']:>5} S={r['seq']:>6}: "
            f"{r['flops_per_s'] / 1e12:6.0f} TFLOP/s"
        )
    batches, contexts = ([1, 8], [1024]) if smoke else ([1, 4, 16, 64, 256], [1024, 4096, 16384])
    results["attention_decode"] = bench_attention_decode(spec, batches, contexts)
    for r in results["attention_decode"]:
        _log(
            f"decode attention B={r['batch']:>4} C={r['context']:>6}: "
            f"{r['bytes_per_s'] / 1e12:5.2f} TB/s"
        )
    results["kernel_overhead"] = bench_kernel_overhead()
    ko = results["kernel_overhead"]
    _log(
        f"per kernel: eager {ko['eager_per_kernel_s'] * 1e6:.2f} us, graph "
        f"{ko['graph_per_kernel_s'] * 1e6:.2f} us"
    )
    return results


def bench_allreduce(
    sizes_bytes: list[int], *, group=None, iters: int = 20, reduce=None, backend: str = "nccl"
) -> list:
    """All-reduce time vs message size: eager (host launch included) and, for messages up to
    4 MB, inside a CUDA graph of 20 back-to-back calls (what a captured decode step pays)."""
    import torch.distributed as dist

    world = dist.get_world_size(group)
    reduce = reduce or (lambda t: dist.all_reduce(t, group=group))
    records = []
    for size in sizes_bytes:
        x = torch.randn(size // 2, dtype=torch.bfloat16, device="cuda")
        reduce(x)
        dist.barrier(group=group)
        seconds = median(time_cuda(lambda: reduce(x), warmup=5, iters=iters))  # noqa: B023
        record = {
            "world_size": world,
            "bytes": size,
            "time_s": seconds,
            "backend": backend,
            "bus_bytes_per_s": 2 * (world - 1) / world * size / seconds,
        }
        if size <= 2**22:
            dist.barrier(group=group)
            record["graph_time_s"] = time_graph(lambda: reduce(x), calls=20)  # noqa: B023
        records.append(record)
        x = None  # noqa: F841
    return records
