"""Microbenchmarks and model step timings on the GPU at hand, written as JSON.

Suites (``--suite a,b``):
- ``micro`` (``executor.microbench``): what ``simulator.calibration.fit`` fits efficiency from: HBM,
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
import json
import os
import sys
import time
from pathlib import Path

import torch

from executor.fused import DECODE_ATTENTION_MODES, DEFAULT_DECODE_ATTENTION
from executor.model_bench import bench_model, log, model_grid
from executor.points import machine_info
from executor.profiling import profile_steps
from simulator.data.specs import ModelSpec
from simulator.results import StepMeasurement

__all__ = ["main"]


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
    from executor.parallel import finish_distributed, init_distributed
    from simulator.data.models import get_model

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
        log(
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
    ours: list[StepMeasurement] = []
    if "model" in suites:
        ours = bench_model(
            spec,
            smoke=args.smoke,
            grid=model_grid(args.smoke, args.grid),
            extras=not args.no_extras,
            decode_attention=args.decode_attention,
        )
        _write(out / "model.json", {**summary, "results": _as_json(ours)})
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
                    log(
                        f"all-reduce {r['backend']:>4} world {r['world_size']} "
                        f"{r['bytes']:>11} B: {r['time_s'] * 1e6:9.1f} us eager, "
                        + (f"{graph * 1e6:7.1f} us in a graph, " if graph else "")
                        + f"bus {r['bus_bytes_per_s'] / 1e9:6.1f} GB/s"
                    )
        tp_records: list[StepMeasurement] = []
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
                {**summary, "results": {"allreduce": records, "model": _as_json(tp_records)}},
            )
        finish_distributed()
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
    small = sorted(
        {row_bytes, *(s for s in sizes if row_bytes <= s <= one_shot.max_rows * row_bytes)}
    )

    def reduce(x: torch.Tensor) -> torch.Tensor:
        return one_shot.all_reduce(x.view(-1, spec.hidden_size))

    records = microbench.bench_allreduce(small, reduce=reduce, backend="one-shot")
    one_shot.check()
    return records


def _as_json(records: list[StepMeasurement]) -> list[dict]:
    return [record.model_dump(mode="json") for record in records]


def _write(path: Path, document: dict) -> None:
    from simulator.files import write_atomic

    write_atomic(path, json.dumps(document, indent=1, default=str))


if __name__ == "__main__":
    sys.exit(main())
