"""Microbenchmarks and model step timings on the GPU at hand, written as JSON.

Suites (``--suite a,b``):
- ``micro``: what ``simulator.calibrate`` fits efficiency from: HBM read and copy bandwidth;
  GEMM time vs tokens M for the model's layer shapes (bf16 and fp8, TP 1/2/4 shards) and a large
  square GEMM (the measured peak); attention prefill vs sequence length (flash) and decode vs
  batch x context (the executor's own decode path); per-kernel cost eager and in a CUDA graph.
- ``model``: the executor's Llama, prefill and decode over a grid of batch x context x dtype;
  an out-of-memory point is recorded as ``fits: false``.
- ``hf``: Hugging Face ``LlamaForCausalLM`` at the same shapes (random weights, sdpa, its
  default dynamic cache), first checked against the executor's logits with the same weights,
  then timed at a few points beside the executor.
- ``tp`` (under ``torchrun``): the model grid at TP = world size, and ``allreduce``: all-reduce
  time vs message size.

Every timing is a median of CUDA-event samples after warm-up, on fresh random data. Each suite
prints a readable table, then one JSON line last; the full records go to ``--out DIR``.

    PYTHONPATH=$PWD python3 -m executor.bench --suite micro,model,hf --out /tmp/bench
    torchrun --nproc-per-node 4 -m executor.bench --suite tp,allreduce --out /tmp/bench
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from executor.engine import DecodeGraphs, build_model, capture_graph, fill_cache_random, \
    median, step_cost, time_cuda, time_graph
from executor.quant import FP8_DTYPE, calibrate_static_scales, quantize_model
from simulator.specs import ModelSpec

__all__ = ["bench_micro", "bench_model", "bench_hf", "bench_allreduce", "measure_point", "main"]

L2_FLUSH_BYTES = 256e6  # rotate inputs over more than this so weights never sit in L2


def _log(*parts) -> None:
    print(*parts, flush=True)


def _free() -> None:
    gc.collect()
    torch.cuda.empty_cache()


# ----------------------------------------------------------------------------------------------
# micro


def bench_hbm(*, size_bytes: float = 4e9) -> dict:
    numel = int(size_bytes // 2)
    x = torch.randn(numel, dtype=torch.bfloat16, device="cuda")
    y = torch.empty_like(x)
    read_s = median(time_cuda(lambda: torch.sum(x, dtype=torch.float32), warmup=3, iters=20))
    copy_s = median(time_cuda(lambda: y.copy_(x), warmup=3, iters=20))
    del x, y
    _free()
    return {"size_bytes": numel * 2, "read_s": read_s, "read_bytes_per_s": numel * 2 / read_s,
            "copy_s": copy_s, "copy_bytes_per_s": 2 * numel * 2 / copy_s}


def _gemm_shapes(spec: ModelSpec, tps: list[int]) -> list[dict]:
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
            return torch._scaled_mm(a8, weights[i[0]].t(), scale_a=one, scale_b=one,
                                    out_dtype=torch.bfloat16)
    else:
        def run(i=[0]):  # noqa: B006
            i[0] = (i[0] + 1) % copies
            return F.linear(a, weights[i[0]])
    seconds = time_graph(run, calls=calls, iters=iters)
    del a, weights
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
    del x, weights
    return seconds


def bench_gemm(spec: ModelSpec, *, tokens: list[int], tps: list[int], dtypes: list[str]) -> list:
    records = []
    from executor.kernels import available

    if available():  # the one-token GEMV the decode step uses at batch 1
        for dtype in dtypes:
            for shape in _gemm_shapes(spec, tps):
                seconds = _time_gemv(shape["n"], shape["k"], dtype)
                flops = 2.0 * shape["n"] * shape["k"]
                records.append({**shape, "dtype": dtype, "m": 1, "kernel": "gemv",
                                "time_s": seconds, "flops": flops, "flops_per_s": flops / seconds})
    for dtype in dtypes:
        for shape in _gemm_shapes(spec, tps):
            for m in tokens:
                if shape["name"] == "lm_head" and m > 1024:
                    continue  # the lm_head sees one token per sequence
                seconds = _time_gemm(m, shape["n"], shape["k"], dtype)
                flops = 2.0 * m * shape["n"] * shape["k"]
                records.append({**shape, "dtype": dtype, "m": m, "kernel": "cublas",
                                "time_s": seconds, "flops": flops, "flops_per_s": flops / seconds})
    _free()
    return records


def bench_gemm_peak(dtypes: list[str], size: int = 8192) -> dict:
    out = {}
    for dtype in dtypes:
        seconds = _time_gemm(size, size, size, dtype, iters=10)
        out[dtype] = {"size": size, "time_s": seconds, "flops_per_s": 2.0 * size**3 / seconds}
    _free()
    return out


def bench_attention_prefill(spec: ModelSpec, seq_lens: list[int]) -> list:
    records = []
    heads, kv_heads, d = spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim
    for seq in seq_lens:
        q = torch.randn(1, heads, seq, d, device="cuda", dtype=torch.bfloat16)
        k = torch.randn(1, kv_heads, seq, d, device="cuda", dtype=torch.bfloat16)
        v = torch.randn_like(k)
        from torch.nn.attention import SDPBackend, sdpa_kernel

        with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
            seconds = median(time_cuda(lambda: F.scaled_dot_product_attention(  # noqa: B023
                q, k, v, is_causal=True, enable_gqa=True), warmup=3, iters=10))
        flops = 2.0 * seq * seq * heads * d  # 4 S^2 H D, halved by the causal mask
        records.append({"seq": seq, "time_s": seconds, "flops": flops,
                        "flops_per_s": flops / seconds})
        del q, k, v
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
            seconds = time_graph(lambda: F.scaled_dot_product_attention(  # noqa: B023
                q, k, v, enable_gqa=True), calls=10)
            records.append({"batch": batch, "context": context, "time_s": seconds,
                            "bytes": kv_bytes, "bytes_per_s": kv_bytes / seconds})
            del k, v, q
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
    return {"num_kernels": num_kernels, "eager_per_kernel_s": eager_s / num_kernels,
            "graph_per_kernel_s": graph_s / num_kernels}


def bench_micro(spec: ModelSpec, *, smoke: bool = False) -> dict:
    tokens = [1, 16, 128, 1024] if smoke else [1, 16, 64, 128, 256, 512, 1024, 2048, 4096,
                                                  8192, 16384]
    results = {"hbm": bench_hbm(size_bytes=1e9 if smoke else 4e9)}
    _log(f"HBM read {results['hbm']['read_bytes_per_s'] / 1e12:.2f} TB/s, copy "
         f"{results['hbm']['copy_bytes_per_s'] / 1e12:.2f} TB/s (read + write)")
    results["gemm_peak"] = bench_gemm_peak(["bf16", "fp8"], size=2048 if smoke else 8192)
    for dtype, peak in results["gemm_peak"].items():
        _log(f"GEMM peak {dtype}: {peak['flops_per_s'] / 1e12:.0f} TFLOP/s")
    results["gemm"] = bench_gemm(spec, tokens=tokens, tps=[1] if smoke else [1, 2, 4],
                                 dtypes=["bf16", "fp8"])
    _log(f"{'shape':>14} {'tp':>3} {'dtype':>5} " + " ".join(f"{m:>7}" for m in tokens))
    for dtype in ("bf16", "fp8"):
        for shape in _gemm_shapes(spec, [1]):
            row = [r for r in results["gemm"] if r["name"] == shape["name"] and r["tp"] == 1
                   and r["dtype"] == dtype and r["kernel"] == "cublas"]
            gemv_row = [r for r in results["gemm"] if r["name"] == shape["name"]
                        and r["tp"] == 1 and r["dtype"] == dtype and r["kernel"] == "gemv"]
            if gemv_row:
                bytes_read = shape["n"] * shape["k"] * (1 if dtype == "fp8" else 2)
                _log(f"{shape['name']:>14} {1:>3} {dtype:>5} gemv M=1: "
                     f"{gemv_row[0]['time_s'] * 1e6:.1f} us, "
                     f"{bytes_read / gemv_row[0]['time_s'] / 1e12:.2f} TB/s; cuBLAS "
                     f"{row[0]['time_s'] * 1e6:.1f} us, {bytes_read / row[0]['time_s'] / 1e12:.2f} TB/s")
            _log(f"{shape['name']:>14} {1:>3} {dtype:>5} "
                 + " ".join(f"{r['flops_per_s'] / 1e12:7.0f}" for r in row) + "  TFLOP/s")
    seqs = [128, 1024] if smoke else [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
    results["attention_prefill"] = bench_attention_prefill(spec, seqs)
    for r in results["attention_prefill"]:
        _log(f"prefill attention S={r['seq']:>6}: {r['flops_per_s'] / 1e12:6.0f} TFLOP/s")
    batches, contexts = ([1, 8], [1024]) if smoke else ([1, 4, 16, 64, 256], [1024, 4096, 16384])
    results["attention_decode"] = bench_attention_decode(spec, batches, contexts)
    for r in results["attention_decode"]:
        _log(f"decode attention B={r['batch']:>4} C={r['context']:>6}: "
             f"{r['bytes_per_s'] / 1e12:5.2f} TB/s")
    results["kernel_overhead"] = bench_kernel_overhead()
    ko = results["kernel_overhead"]
    _log(f"per kernel: eager {ko['eager_per_kernel_s'] * 1e6:.2f} us, graph "
         f"{ko['graph_per_kernel_s'] * 1e6:.2f} us")
    return results


# ----------------------------------------------------------------------------------------------
# model


def prepare_model(spec: ModelSpec, *, weights: str, scaling: str = "static",
                  granularity: str = "per_tensor", tp_rank: int = 0, tp_world_size: int = 1,
                  seed: int = 0, all_reduce: str = "nccl", gemv: bool = True):
    model = build_model(spec, seed=seed, tp_rank=tp_rank, tp_world_size=tp_world_size,
                        all_reduce=all_reduce)
    if weights != "bf16":
        quantize_model(model, weights=weights, scaling=scaling, granularity=granularity,
                       compile_quantize=True, include_lm_head=True)
        if weights == "fp8" and scaling == "static":
            tokens = torch.randint(0, spec.vocab_size, (1, 256), device="cuda")
            calibrate_static_scales(model, lambda: model(tokens))
    if gemv:
        from executor.kernels import use_gemv

        use_gemv(model)
    _free()
    return model


def _bytes_per_param(weights: str) -> float:
    return {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}[weights]


def measure_point(model, spec: ModelSpec, *, weights: str, batch: int, prompt: int = 0,
                  context: int = 0, tp: int = 1, kv_dtype: str = "bf16", use_graphs: bool = True,
                  iters: int = 20) -> dict:
    """One prefill (``prompt`` > 0) or decode-step (``context``) timing; OOM -> fits False."""
    record = {"phase": "prefill" if prompt else "decode", "weights": weights, "tp": tp,
              "batch": batch, "prompt": prompt or None, "context": context or None,
              "kv_dtype": kv_dtype, "cuda_graphs": use_graphs, "gemv": True}
    graphs = graph = None
    try:
        length = (prompt if prompt else context) + 16
        kv_torch_dtype = FP8_DTYPE if kv_dtype == "fp8" else None
        model.setup_caches(max_batch=batch, max_seq_length=length, kv_dtype=kv_torch_dtype)
        device = model.embed_tokens.weight.device
        if prompt:
            tokens = torch.randint(0, spec.vocab_size, (batch, prompt), device=device)
            positions = torch.arange(prompt, device=device)

            def run_prefill():
                return model(tokens, positions, last_token_only=True)

            if use_graphs:
                graph, _ = capture_graph(run_prefill, warmup=1)
                run_prefill = graph.replay  # noqa: F811 - time the captured prefill
            samples = time_cuda(run_prefill, warmup=2,
                                iters=max(3, iters if batch * prompt < 8192 else 5))
        else:
            fill_cache_random(model)
            graphs = DecodeGraphs(model, use_graphs=use_graphs)
            graphs.capture(batch, position=context, fixed_position=True)
            graphs.static_tokens[batch].random_(0, spec.vocab_size)
            samples = time_cuda(lambda: graphs.replay(batch), warmup=3, iters=iters)
        seconds = median(samples)
    except torch.OutOfMemoryError as error:
        record.update(fits=False, reason="out of memory: " + str(error).splitlines()[0][:160])
        del graphs, graph
        model.free_caches()
        _free()
        return record
    except Exception as error:  # keep the run going; the record says what broke
        if torch.distributed.is_initialized():
            raise
        record.update(fits=False, error=f"{type(error).__name__}: {str(error)[:300]}",
                      reason="error")
        _log(f"point failed: {record}")
        del graphs, graph
        model.free_caches()
        _free()
        return record
    cost = step_cost(spec, batch=batch, prompt=prompt, context=context, tp=tp,
                     weight_bytes_per_param=_bytes_per_param(weights),
                     kv_bytes_per_value=1.0 if kv_dtype == "fp8" else 2.0,
                     lm_head_bytes_per_param=_bytes_per_param(weights))
    tokens_done = batch * prompt if prompt else batch
    record.update(
        fits=True, time_s=seconds, samples_s=samples, tokens_per_s=tokens_done / seconds,
        weight_bytes=cost.weight_bytes, kv_bytes=cost.kv_bytes, bytes=cost.bytes,
        flops=cost.flops, achieved_bytes_per_s=cost.bytes / seconds,
        achieved_flops_per_s=cost.flops / seconds,
        peak_memory_bytes=torch.cuda.max_memory_allocated(),
    )
    del graphs, graph
    model.free_caches()
    _free()
    return record


def _print_points(records: list[dict]) -> None:
    _log(f"{'phase':>7} {'w':>4} {'tp':>2} {'B':>4} {'P/C':>6} {'time':>10} {'tok/s':>10} "
         f"{'GB/s':>7} {'TFLOP/s':>8}")
    for r in records:
        size = r["prompt"] or r["context"]
        if not r["fits"]:
            _log(f"{r['phase']:>7} {r['weights']:>4} {r['tp']:>2} {r['batch']:>4} {size:>6}  "
                 f"infeasible ({r['reason'][:40]})")
            continue
        _log(f"{r['phase']:>7} {r['weights']:>4} {r['tp']:>2} {r['batch']:>4} {size:>6} "
             f"{r['time_s'] * 1e3:8.3f}ms {r['tokens_per_s']:10.0f} "
             f"{r['achieved_bytes_per_s'] / 1e9:7.0f} {r['achieved_flops_per_s'] / 1e12:8.1f}")


def model_grid(smoke: bool, name: str = "full") -> dict:
    if name == "compare":  # the points bench_hf times, and the must-show points
        return {"weights": ["bf16", "fp8"], "batches": [1, 16, 64], "contexts": [1024, 4096],
                "prompts": [512, 2048, 8192]}
    if smoke:
        return {"weights": ["bf16", "fp8"], "batches": [1, 8], "contexts": [512],
                "prompts": [256]}
    return {"weights": ["bf16", "fp8"], "batches": [1, 4, 16, 64, 256],
            "contexts": [1024, 4096, 16384], "prompts": [128, 512, 2048, 8192, 16384]}


def bench_model(spec: ModelSpec, *, smoke: bool = False, tp_rank: int = 0,
                tp_world_size: int = 1, grid: dict | None = None,
                all_reduce: str = "nccl") -> list:
    grid = grid or model_grid(smoke)
    records = []
    for weights in grid["weights"]:
        model = prepare_model(spec, weights=weights, tp_rank=tp_rank,
                              tp_world_size=tp_world_size, all_reduce=all_reduce)
        backend = getattr(model, "all_reduce_backend", None)
        first = len(records)
        for prompt in grid["prompts"]:
            records.append(measure_point(model, spec, weights=weights, batch=1, prompt=prompt,
                                         tp=tp_world_size))
        for batch in grid["batches"]:
            for context in grid["contexts"]:
                records.append(measure_point(model, spec, weights=weights, batch=batch,
                                             context=context, tp=tp_world_size))
        for record in records[first:]:
            record["all_reduce"] = backend
        if tp_world_size == 1:  # what graphs, the GEMV and an fp8 KV cache change, at batch 1
            context = grid["contexts"][0]
            records.append(measure_point(model, spec, weights=weights, batch=1,
                                         context=context, use_graphs=False))
            records.append(measure_point(model, spec, weights=weights, batch=1,
                                         context=context, kv_dtype="fp8"))
            from executor.kernels import use_gemv

            use_gemv(model, enabled=False)
            records.append(measure_point(model, spec, weights=weights, batch=1,
                                         context=context))
            records[-1]["gemv"] = False
            use_gemv(model, enabled=True)
        del model
        _free()
    if tp_rank == 0:
        _print_points(records)
    return records


# ----------------------------------------------------------------------------------------------
# Hugging Face transformers, side by side


def _hf_model(spec: ModelSpec):
    from transformers import LlamaConfig, LlamaForCausalLM

    from simulator.models import to_hf_config

    config = LlamaConfig(**{k: v for k, v in to_hf_config(spec).items()
                            if k not in ("architectures", "model_type")})
    config._attn_implementation = "sdpa"
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device("cuda"):
            model = LlamaForCausalLM(config)
    finally:
        torch.set_default_dtype(default_dtype)
    return model.eval().requires_grad_(False)


@torch.no_grad()
def bench_hf(spec: ModelSpec, ours: list[dict], *, smoke: bool = False) -> dict:
    """Check HF against the executor on the same weights, then time HF at the executor's points."""
    executor_model = build_model(spec, seed=0)
    hf = _hf_model(spec)
    from executor.model import to_hf_state_dict

    missing, unexpected = hf.load_state_dict(to_hf_state_dict(executor_model), strict=False)
    tokens = torch.randint(0, spec.vocab_size, (2, 64), device="cuda")
    ref = hf(input_ids=tokens).logits.float()
    got = executor_model(tokens).float()
    rel_error = ((got - ref).norm() / ref.norm()).item()
    top1 = (got.argmax(-1) == ref.argmax(-1)).float().mean().item()
    _log(f"executor vs HF logits, same weights: relative error {rel_error:.2e}, "
         f"top-1 agreement {top1:.3f} (missing {len(missing)}, unexpected {len(unexpected)})")
    del executor_model
    _free()

    points = [(1, 0, 1024), (16, 0, 1024), (64, 0, 1024), (1, 0, 4096), (1, 512, 0),
              (1, 2048, 0), (1, 8192, 0)]
    if smoke:
        points = [(1, 0, 512), (1, 256, 0)]
    records = []
    for batch, prompt, context in points:
        record = {"phase": "prefill" if prompt else "decode", "weights": "bf16", "tp": 1,
                  "batch": batch, "prompt": prompt or None, "context": context or None}
        try:
            if prompt:
                ids = torch.randint(0, spec.vocab_size, (batch, prompt), device="cuda")
                samples = time_cuda(lambda: hf(input_ids=ids, logits_to_keep=1),  # noqa: B023
                                    warmup=2, iters=5)
            else:
                ids = torch.randint(0, spec.vocab_size, (batch, context), device="cuda")
                cache = hf(input_ids=ids, use_cache=True, logits_to_keep=1).past_key_values
                step_ids = torch.randint(0, spec.vocab_size, (batch, 1), device="cuda")
                samples = time_cuda(lambda: hf(input_ids=step_ids,  # noqa: B023
                                               past_key_values=cache, use_cache=True),  # noqa: B023
                                    warmup=3, iters=15)
                del cache
            record.update(fits=True, time_s=median(samples), samples_s=samples)
        except torch.OutOfMemoryError as error:
            record.update(fits=False, reason=str(error).splitlines()[0][:160])
        _free()
        match = [r for r in ours if r["fits"] and r["phase"] == record["phase"]
                 and r["weights"] == "bf16" and r["batch"] == batch and r["tp"] == 1
                 and r["cuda_graphs"] and r["kv_dtype"] == "bf16" and r.get("gemv", True)
                 and (r["prompt"] or 0) == prompt and (r["context"] or 0) == context]
        if match and record.get("fits"):
            record["executor_time_s"] = match[0]["time_s"]
            record["speedup"] = record["time_s"] / match[0]["time_s"]
        records.append(record)
    _log(f"{'phase':>7} {'B':>4} {'P/C':>6} {'HF':>10} {'executor':>10} {'speedup':>8}")
    for r in records:
        if not r.get("fits"):
            _log(f"{r['phase']:>7} {r['batch']:>4}  HF infeasible")
            continue
        ex = r.get("executor_time_s")
        _log(f"{r['phase']:>7} {r['batch']:>4} {r['prompt'] or r['context']:>6} "
             f"{r['time_s'] * 1e3:8.2f}ms "
             + (f"{ex * 1e3:8.2f}ms {r['speedup']:7.2f}x" if ex else "   (no executor point)"))
    del hf
    _free()
    return {"check": {"relative_error": rel_error, "top1_agreement": top1,
                      "tokens": list(tokens.shape)}, "points": records,
            "mode": "transformers LlamaForCausalLM, bf16, sdpa, eager, default dynamic cache"}


# ----------------------------------------------------------------------------------------------
# collectives


def bench_allreduce(sizes_bytes: list[int], *, group=None, iters: int = 20,
                    reduce=None, backend: str = "nccl") -> list:
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
        record = {"world_size": world, "bytes": size, "time_s": seconds, "backend": backend,
                  "bus_bytes_per_s": 2 * (world - 1) / world * size / seconds}
        if size <= 2**22:
            dist.barrier(group=group)
            record["graph_time_s"] = time_graph(lambda: reduce(x), calls=20)  # noqa: B023
        records.append(record)
        del x
    return records


# ----------------------------------------------------------------------------------------------


def _machine() -> dict:
    from executor.gpu import provenance

    info = provenance()
    info["device_name"] = torch.cuda.get_device_name(0)
    info["device_count"] = str(torch.cuda.device_count())
    return info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m executor.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--suite", default="micro,model,hf")
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--smoke", action="store_true", help="tiny grid, to check the script")
    parser.add_argument("--all-reduce", default="nccl", choices=["nccl", "symm"],
                        help="TP all-reduce: NCCL, or one-shot over symmetric memory")
    parser.add_argument("--grid", default="full", choices=["full", "compare"],
                        help="model grid: full (calibration) or compare (the HF points)")
    args = parser.parse_args(argv)
    from executor.parallel import init_distributed
    from simulator.models import get_model

    rank, world = init_distributed()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    spec = get_model(args.model)
    suites = args.suite.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"model": spec.name, "machine": _machine(), "world_size": world}
    started = time.time()
    torch.manual_seed(0)
    if "micro" in suites:
        micro = bench_micro(spec, smoke=args.smoke)
        summary["micro"] = {"hbm_read_bytes_per_s": micro["hbm"]["read_bytes_per_s"],
                            "gemm_peak_bf16_flops_per_s": micro["gemm_peak"]["bf16"]["flops_per_s"]}
        _write(out / "micro.json", {**summary, "results": micro})
    ours: list = []
    if "model" in suites:
        ours = bench_model(spec, smoke=args.smoke, grid=model_grid(args.smoke, args.grid))
        _write(out / "model.json", {**summary, "results": ours})
    if "hf" in suites:
        hf = bench_hf(spec, ours, smoke=args.smoke)
        _write(out / "hf.json", {**summary, "results": hf})
        summary["hf_speedups"] = [r.get("speedup") for r in hf["points"]]
    if "allreduce" in suites or "tp" in suites:
        import torch.distributed as dist

        records = []
        if "allreduce" in suites and world > 1:
            sizes = [2**p for p in range(10, 31, 2)] if not args.smoke else [2**12, 2**20]
            records = bench_allreduce(sizes)
            if world >= 4:
                pair = dist.new_group([0, 1])
                if rank in (0, 1):
                    records += bench_allreduce(sizes, group=pair)
            dist.barrier()
            if args.all_reduce == "symm":
                from executor.parallel import symmetric_memory_all_reduce

                one_shot = symmetric_memory_all_reduce(max_bytes=2**22)
                if one_shot is not None:
                    small = [s for s in sizes if s <= 2**22]
                    records += bench_allreduce(small, reduce=one_shot, backend="symm")
            dist.barrier()
            if rank == 0:
                for r in records:
                    graph = r.get("graph_time_s")
                    _log(f"all-reduce {r['backend']:>4} world {r['world_size']} "
                         f"{r['bytes']:>11} B: {r['time_s'] * 1e6:9.1f} us eager, "
                         + (f"{graph * 1e6:7.1f} us in a graph, " if graph else "")
                         + f"bus {r['bus_bytes_per_s'] / 1e9:6.1f} GB/s")
        tp_records = []
        if "tp" in suites:
            grid = model_grid(args.smoke, "compare")
            tp_records = bench_model(spec, smoke=args.smoke, tp_rank=rank, tp_world_size=world,
                                     grid=grid, all_reduce=args.all_reduce)
        if rank == 0:
            _write(out / f"tp{world}-{args.all_reduce}.json",
                   {**summary, "results": {"allreduce": records,
                                                                    "model": tp_records}})
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    summary["wall_s"] = time.time() - started
    if rank == 0:
        print(json.dumps(summary, default=str))
    return 0


def _write(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
