"""Microbenchmarks and model step timings on the GPU at hand, written as JSON.

Suites (``--suite a,b``):
- ``micro`` (``executor.microbench``): what ``simulator.calibrate`` fits efficiency from: HBM,
  GEMM vs tokens, attention, per-kernel cost; ``peaks``: the HBM read and GEMM peak alone.
- ``model``: the executor's Llama, prefill and decode over a grid of batch x context x dtype;
  an out-of-memory point is recorded as ``fits: false``.
- ``hf`` (``executor.hf_compare``): Hugging Face ``LlamaForCausalLM`` at the same shapes and
  weights, checked against the executor's logits, then timed at the same points.
- ``profile``: kernel-by-kernel profiles of an 8k-token bf16 prefill and of batch-1 decode
  steps (bf16, FP8).
- ``tp`` (under ``torchrun``): the model grid at TP = world size, and ``allreduce``: all-reduce
  time vs message size (NCCL, and the one-shot kernel of ``executor.allreduce`` for the sizes
  it takes). ``--all-reduce`` picks the model's all-reduce: ``one-shot`` (default) or ``nccl``.

Every timing is a median of CUDA-event samples after warm-up, on fresh random data. Each suite
prints a readable table, then one JSON line last; the full records go to ``--out DIR``.

    PYTHONPATH=$PWD python3 -m executor.bench --suite micro,model,hf --out /tmp/bench
    torchrun --nproc-per-node 4 -m executor.bench --suite tp,allreduce --out /tmp/bench
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from pathlib import Path

import torch

from executor.fused import (
    DECODE_ATTENTION_MODES,
    DEFAULT_DECODE_ATTENTION,
    decode_attention_for,
)
from executor.points import free_memory, machine_info, measure_point, prepare_model
from simulator.specs import ModelSpec

__all__ = ["bench_model", "main"]


def _log(*parts) -> None:
    print(*parts, flush=True)


def _print_points(records: list[dict]) -> None:
    _log(
        f"{'phase':>7} {'w':>4} {'tp':>2} {'B':>4} {'P/C':>6} {'time':>10} {'tok/s':>10} "
        f"{'GB/s':>7} {'TFLOP/s':>8}"
    )
    for r in records:
        size = r["prompt"] or r["context"]
        if not r["fits"]:
            _log(
                f"{r['phase']:>7} {r['weights']:>4} {r['tp']:>2} {r['batch']:>4} {size:>6}  "
                f"infeasible ({r['reason'][:40]})"
            )
            continue
        _log(
            f"{r['phase']:>7} {r['weights']:>4} {r['tp']:>2} {r['batch']:>4} {size:>6} "
            f"{r['time_s'] * 1e3:8.3f}ms {r['tokens_per_s']:10.0f} "
            f"{r['achieved_bytes_per_s'] / 1e9:7.0f} {r['achieved_flops_per_s'] / 1e12:8.1f}"
        )


def model_grid(smoke: bool, name: str = "full") -> dict:
    if name == "compare":  # the points bench_hf times, and the must-show points
        return {
            "weights": ["bf16", "fp8"],
            "batches": [1, 16, 64],
            "contexts": [1024, 4096],
            "prompts": [512, 2048, 8192],
        }
    if name == "decode1":  # the batch-1 decode steps of the must-show ratios, alone
        return {"weights": ["bf16", "fp8"], "batches": [1], "contexts": [1024], "prompts": []}
    if smoke:
        return {"weights": ["bf16", "fp8"], "batches": [1, 8], "contexts": [512], "prompts": [256]}
    full = {
        "weights": ["bf16", "fp8"],
        "batches": [1, 4, 16, 64, 256],
        "contexts": [1024, 4096, 16384],
        "prompts": [128, 512, 2048, 8192, 16384],
    }
    if name == "decode":  # the full grid's decode steps alone (to compare decode kernels)
        return {**full, "prompts": []}
    return full


def bench_model(
    spec: ModelSpec,
    *,
    smoke: bool = False,
    tp_rank: int = 0,
    tp_world_size: int = 1,
    grid: dict | None = None,
    all_reduce: str = "one-shot",
    extras: bool = True,
    decode_attention: str = DEFAULT_DECODE_ATTENTION,
) -> list:
    grid = grid or model_grid(smoke)
    records = []
    for weights in grid["weights"]:
        model = prepare_model(
            spec,
            weights=weights,
            tp_rank=tp_rank,
            tp_world_size=tp_world_size,
            all_reduce=all_reduce,
            decode_attention=decode_attention,
        )
        backend = model.collectives.backend if model.collectives is not None else None
        first = len(records)
        for prompt in grid["prompts"]:
            records.append(
                measure_point(
                    model, spec, weights=weights, batch=1, prompt=prompt, tp=tp_world_size
                )
            )
        for batch in grid["batches"]:
            for context in grid["contexts"]:
                records.append(
                    measure_point(
                        model,
                        spec,
                        weights=weights,
                        batch=batch,
                        context=context,
                        tp=tp_world_size,
                    )
                )
        variant = _grid_variant(decode_attention, backend)
        for record in records[first:]:
            record["all_reduce"] = backend
            record["variant"] = variant
        if model.collectives is not None and model.collectives.one_shot is not None:
            model.collectives.one_shot.check()  # no wait gave up: the timings are valid
        if extras and tp_world_size == 1:
            records += _batch1_variants(model, spec, weights, grid)
        del model
        free_memory()
    if tp_rank == 0:
        _print_points(records)
    return records


def _grid_variant(decode_attention: str, all_reduce: str | None) -> str | None:
    """None for the engine as it serves by default, else what differs (the calibration fits and
    scores only the default)."""
    parts = []
    if decode_attention != DEFAULT_DECODE_ATTENTION:
        parts.append(f"{decode_attention}-decode-attention")
    if all_reduce not in (None, "one-shot"):
        parts.append(f"{all_reduce}-all-reduce")
    return "+".join(parts) or None


def _batch1_variants(model, spec: ModelSpec, weights: str, grid: dict) -> list[dict]:
    """What the engine's parts are worth at batch 1: the step again with CUDA graphs off, an FP8
    KV cache, PDL off, the other decode attention, cuBLAS in place of the GEMV, and cuDNN's
    prefill for the two longest prompts. Each record names its ``variant``."""
    from executor import pdl
    from executor.kernels import use_gemv

    context = grid["contexts"][0]
    records = []

    def measure(variant: str, **kwargs) -> None:
        kwargs.setdefault("context", context)
        record = measure_point(model, spec, weights=weights, batch=1, **kwargs)
        records.append({**record, "variant": variant})

    measure("no-graphs", use_graphs=False)
    measure("fp8-kv-cache", kv_dtype="fp8")
    if pdl.enabled():
        pdl.set_enabled(False)
        measure("no-pdl")
        pdl.set_enabled(True)
    ours = model.kernels.decode_attention_mode
    if model.kernels.decode_attention is not None:  # the attention the default does not pick
        for kv_dtype in ("bf16", "fp8"):
            for mode in ("sdpa", "triton"):
                if mode == decode_attention_for(ours, kv_dtype == "fp8"):
                    continue  # the default row (or "fp8-kv-cache") is this one
                model.kernels.decode_attention_mode = mode
                suffix = "+fp8-kv-cache" if kv_dtype == "fp8" else ""
                measure(f"{mode}-decode-attention{suffix}", kv_dtype=kv_dtype)
        model.kernels.decode_attention_mode = ours
    use_gemv(model, enabled=False)
    measure("cublas-gemv")
    records[-1]["gemv"] = False
    use_gemv(model, enabled=True)
    model.kernels.prefill_backend = "cudnn"
    for prompt in grid["prompts"][-2:]:
        measure("cudnn-prefill", prompt=prompt, context=0)
    model.kernels.prefill_backend = "flash"
    return records


def profile_steps(
    spec: ModelSpec,
    *,
    prompt: int,
    context: int = 1024,
    tp_rank: int = 0,
    tp_world_size: int = 1,
    all_reduce: str = "one-shot",
    decode_attention: str = DEFAULT_DECODE_ATTENTION,
) -> None:
    """Where the time goes, kernel by kernel (torch.profiler, CUDA time): a bf16 prefill of
    ``prompt`` tokens, then a batch-1 decode step at ``context`` in bf16 and in FP8 (run
    eagerly: the kernels' own times, without the launch gaps a graph removes). Under torchrun
    every rank runs the steps (they meet in the all-reduces) and rank 0 prints."""
    from torch.profiler import ProfilerActivity, profile

    def report(title: str, run) -> None:
        for _ in range(3):
            run()
        torch.cuda.synchronize()
        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            run()
            torch.cuda.synchronize()
        if tp_rank != 0:
            return
        _log(f"{title}, TP {tp_world_size}, decode attention {decode_attention}")
        table = prof.key_averages().table(
            sort_by="cuda_time_total", row_limit=18, max_name_column_width=70
        )
        _log(table)

    for weights in ("bf16", "fp8"):
        model = prepare_model(
            spec,
            weights=weights,
            tp_rank=tp_rank,
            tp_world_size=tp_world_size,
            all_reduce=all_reduce,
            decode_attention=decode_attention,
        )
        if weights == "bf16":
            model.setup_caches(max_batch=1, max_seq_length=prompt + 16)
            tokens = torch.randint(0, spec.vocab_size, (1, prompt), device="cuda")
            positions = torch.arange(prompt, device="cuda")
            report(
                f"bf16 prefill of {prompt} tokens",
                lambda: model(tokens, positions, last_token_only=True),  # noqa: B023
            )
        model.setup_caches(max_batch=1, max_seq_length=context + 16)
        token = torch.randint(0, spec.vocab_size, (1, 1), device="cuda")
        position = torch.tensor([context], device="cuda")
        report(
            f"{weights} decode step, batch 1, context {context}",
            lambda: model(token, position, kv_length=context + 1),  # noqa: B023
        )
        model = None  # free the weights before the next dtype's model is built
        free_memory()


# ----------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m executor.bench",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--suite", default="micro,model,hf")
    parser.add_argument("--model", default="llama-3.1-8b")
    parser.add_argument("--out", default="bench-out")
    parser.add_argument("--smoke", action="store_true", help="tiny grid, to check the script")
    parser.add_argument(
        "--all-reduce",
        default="one-shot",
        choices=["nccl", "one-shot"],
        help="TP all-reduce: NCCL, or the fused one-shot kernel (executor.allreduce)",
    )
    parser.add_argument(
        "--decode-attention",
        default=DEFAULT_DECODE_ATTENTION,
        choices=list(DECODE_ATTENTION_MODES),
        help="decode attention: the Triton kernel with RoPE and the cache write (triton), the "
        "RoPE kernel then PyTorch's SDPA (sdpa), or triton for an FP8 KV cache and sdpa for a "
        "bf16 one (auto, the default)",
    )
    parser.add_argument(
        "--no-extras",
        action="store_true",
        help="skip the batch-1 variants (no graphs, no PDL, Triton decode attention, no GEMV, "
        "fp8 KV cache, cuDNN prefill)",
    )
    parser.add_argument(
        "--grid",
        default="full",
        choices=["full", "compare", "decode", "decode1"],
        help="model grid: full (calibration), compare (the HF points; the default under TP), "
        "decode (the full grid's decode steps) or decode1 (batch-1 decode only)",
    )
    args = parser.parse_args(argv)
    from executor import hf_compare, microbench
    from executor.parallel import init_distributed
    from simulator.models import get_model

    rank, world = init_distributed()
    torch.cuda.set_device(int(os.environ.get("LOCAL_RANK", "0")))
    spec = get_model(args.model)
    suites = args.suite.split(",")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    summary: dict = {"model": spec.name, "machine": machine_info(), "world_size": world}
    started = time.time()
    torch.manual_seed(0)
    if "peaks" in suites:  # the two ceilings only: HBM read and the large-GEMM peak
        peaks = {
            "hbm": microbench.bench_hbm(),
            "gemm_peak": microbench.bench_gemm_peak(["bf16", "fp8"]),
        }
        _log(
            f"HBM read {peaks['hbm']['read_bytes_per_s'] / 1e12:.2f} TB/s; GEMM peak bf16 "
            f"{peaks['gemm_peak']['bf16']['flops_per_s'] / 1e12:.0f} TFLOP/s"
        )
        summary["micro"] = {
            "hbm_read_bytes_per_s": peaks["hbm"]["read_bytes_per_s"],
            "gemm_peak_bf16_flops_per_s": peaks["gemm_peak"]["bf16"]["flops_per_s"],
        }
        _write(out / "peaks.json", {**summary, "results": peaks})
    if "micro" in suites:
        micro = microbench.bench_micro(spec, smoke=args.smoke)
        summary["micro"] = {
            "hbm_read_bytes_per_s": micro["hbm"]["read_bytes_per_s"],
            "gemm_peak_bf16_flops_per_s": micro["gemm_peak"]["bf16"]["flops_per_s"],
        }
        _write(out / "micro.json", {**summary, "results": micro})
    ours: list = []
    if "model" in suites:
        ours = bench_model(
            spec,
            smoke=args.smoke,
            grid=model_grid(args.smoke, args.grid),
            extras=not args.no_extras,
            decode_attention=args.decode_attention,
        )
        _write(out / "model.json", {**summary, "results": ours})
    if "profile" in suites:
        profile_steps(
            spec,
            prompt=2048 if args.smoke else 8192,
            tp_rank=rank,
            tp_world_size=world,
            all_reduce=args.all_reduce,
            decode_attention=args.decode_attention,
        )
    if "hf" in suites:
        hf = hf_compare.bench_hf(spec, ours, smoke=args.smoke)
        _write(out / "hf.json", {**summary, "results": hf})
        summary["hf_speedups"] = [r.get("speedup") for r in hf["points"]]
    if "allreduce" in suites or "tp" in suites:
        import torch.distributed as dist

        records = []
        if "allreduce" in suites and world > 1:
            sizes = [2**p for p in range(10, 31, 2)] if not args.smoke else [2**12, 2**20]
            records = microbench.bench_allreduce(sizes)
            if world >= 4:
                pair = dist.new_group([0, 1])
                if rank in (0, 1):
                    records += microbench.bench_allreduce(sizes, group=pair)
            dist.barrier()
            if args.all_reduce == "one-shot":
                records += _bench_one_shot(spec, sizes)
            dist.barrier()
            if rank == 0:
                for r in records:
                    graph = r.get("graph_time_s")
                    _log(
                        f"all-reduce {r['backend']:>4} world {r['world_size']} "
                        f"{r['bytes']:>11} B: {r['time_s'] * 1e6:9.1f} us eager, "
                        + (f"{graph * 1e6:7.1f} us in a graph, " if graph else "")
                        + f"bus {r['bus_bytes_per_s'] / 1e9:6.1f} GB/s"
                    )
        tp_records = []
        if "tp" in suites:
            grid = model_grid(args.smoke, "compare" if args.grid == "full" else args.grid)
            tp_records = bench_model(
                spec,
                smoke=args.smoke,
                tp_rank=rank,
                tp_world_size=world,
                grid=grid,
                all_reduce=args.all_reduce,
                decode_attention=args.decode_attention,
            )
        if rank == 0:
            _write(
                out / f"tp{world}-{args.all_reduce}-{args.grid}.json",
                {**summary, "results": {"allreduce": records, "model": tp_records}},
            )
        if dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()
    summary["wall_s"] = time.time() - started
    if rank == 0:
        print(json.dumps(summary, default=str))
    return 0


def _bench_one_shot(spec: ModelSpec, sizes: list[int]) -> list:
    """The one-shot all-reduce at the message sizes it takes (whole rows of ``hidden``)."""
    from executor import microbench
    from executor.allreduce import OneShotAllReduce

    one_shot = OneShotAllReduce.create(hidden=spec.hidden_size, dtype=torch.bfloat16)
    if one_shot is None:
        return []
    row_bytes = 2 * spec.hidden_size
    small = [s for s in sizes if row_bytes <= s <= one_shot.max_rows * row_bytes]
    calls = itertools.count()

    def reduce(x: torch.Tensor) -> torch.Tensor:  # alternate the slots, as the model does
        return one_shot.all_reduce(x.view(-1, spec.hidden_size), slot=next(calls) % 2)

    records = microbench.bench_allreduce(small, reduce=reduce, backend="one-shot")
    one_shot.check()
    return records


def _write(path: Path, document: dict) -> None:
    path.write_text(json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
