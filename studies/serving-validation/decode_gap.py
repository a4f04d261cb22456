"""Where a serving decode step's GPU time goes, on a GPU: Llama-3.1-8B (bf16, full depth) in the
serving loop, ``B`` sequences of ``L`` cached tokens decoding together.

The first serving validations measured decode-only iterations (CUDA graph replays) at about
1.5x the predicted step, nearly all of it on the GPU (the loop's host time is ~0.1 ms). This
times, per (B, L): the graph replay as ``tune validate`` runs it (graphs captured for the
plan's longest sequence, 8,192), the same iterations eager, and the GPU kernels of each under
PyTorch's profiler, grouped by kernel and divided per iteration, so a slow kernel is named.
Prints a table per point and one JSON line per point; writes them all to OUT.json.

    python3 studies/serving-validation/decode_gap.py OUT.json [--points 4x1024,32x1024]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections import defaultdict
from dataclasses import dataclass, field

import torch

from executor import jit_compiles
from executor.points import prepare_model
from executor.serving_loop import ServingExecutor
from simulator.data.models import get_model

MAX_SEQ_LENGTH = 8192  # the 8B plans' max_model_len: the decode graphs are captured for it
BLOCK = 16


@dataclass
class _Step:
    decode: list[int]
    prefill: list[tuple[int, int, int]]
    released: list[int] = field(default_factory=list)
    predicted_s: float = 0.0
    accepted: list[int] | None = None


def kernels_per_iteration(run, iterations: int) -> dict[str, float]:
    """GPU microseconds per iteration of each kernel name while ``run()`` runs ``iterations``."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    for event in profiler.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name[:60]] += event.time_range.elapsed_us() / iterations
    return dict(sorted(totals.items(), key=lambda item: -item[1]))


def _median_ms(values) -> float | None:
    values = list(values)
    return None if not values or None in values else 1e3 * statistics.median(values)


def point(executor: ServingExecutor, batch: int, length: int, first_rid: int) -> dict:
    rids = list(range(first_rid, first_rid + batch))
    for rid in rids:  # each prompt in chunks of up to 2,048 tokens
        for start in range(0, length, 2048):
            executor(_Step([], [(rid, start, min(2048, length - start))]))
    decode = _Step(rids, [])
    executor.records.clear()
    for _ in range(40):
        executor(decode)
    graph = [r for r in executor.records[10:] if r.path == "graph"]
    saved, executor.graphs = executor.graphs, None
    executor.records.clear()
    for _ in range(15):
        executor(decode)
    eager = executor.records[5:]
    eager_kernels = kernels_per_iteration(lambda: [executor(decode) for _ in range(3)], 3)
    executor.graphs = saved
    try:
        graph_kernels = kernels_per_iteration(lambda: [executor(decode) for _ in range(3)], 3)
    except Exception as error:  # noqa: BLE001 (a profiler that cannot see into graphs)
        graph_kernels = {"error": str(error)[:200]}
    # Mixed iterations: the decodes beside a fresh prompt's 1,024-token first chunk (eager or
    # piecewise, as the executor is set up), a new request each time.
    executor.records.clear()
    fresh = iter(range(first_rid + 500, first_rid + 1000))

    def mixed() -> None:
        rid = next(fresh)
        executor(_Step(rids, [(rid, 0, 1024)]))
        executor.blocks.release(rid)

    for _ in range(8):
        mixed()
    mixed_records = executor.records[3:]
    mixed_kernels = kernels_per_iteration(lambda: [mixed() for _ in range(3)], 3)
    for rid in rids:
        executor.blocks.release(rid)
    kv_bytes = 2 * 32 * 8 * 128 * 2 * batch * (length + 25)  # K and V, 32 layers, mid-run
    return {
        "batch": batch, "context": length,
        "graph_step_ms": _median_ms(r.step_s for r in graph),
        "graph_device_ms": _median_ms(r.device_s for r in graph),
        "graph_iterations": len(graph),
        "eager_step_ms": _median_ms(r.step_s for r in eager),
        "eager_device_ms": _median_ms(r.device_s for r in eager),
        "kv_gb": kv_bytes / 1e9,
        "eager_kernels_us": {k: round(v, 1) for k, v in list(eager_kernels.items())[:15]},
        "eager_kernel_total_us": round(sum(eager_kernels.values()), 1),
        "graph_kernels_us": {k: (round(v, 1) if isinstance(v, float) else v)
                             for k, v in list(graph_kernels.items())[:15]},
        "graph_kernel_total_us": round(sum(v for v in graph_kernels.values()
                                           if isinstance(v, float)), 1),
        "mixed_path": mixed_records[0].path,
        "mixed_step_ms": _median_ms(r.step_s for r in mixed_records),
        "mixed_device_ms": _median_ms(r.device_s for r in mixed_records),
        "mixed_kernels_us": {k: round(v, 1) for k, v in list(mixed_kernels.items())[:15]},
        "mixed_kernel_total_us": round(sum(mixed_kernels.values()), 1),
        "compiles_so_far": jit_compiles.count(),
    }  # fmt: skip


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--points", default="4x1024,32x1024,64x1024,128x1024,32x4096")
    parser.add_argument("--layers", type=int, default=32, help="fewer for a quick check")
    args = parser.parse_args()
    points = [tuple(int(x) for x in p.split("x")) for p in args.points.split(",")]
    spec = get_model("llama-3.1-8b").model_copy(update={"num_hidden_layers": args.layers})
    model = prepare_model(spec, weights="bf16", scaling="dynamic", granularity="per_tensor")
    largest = max(b * -(-(length + 64) // BLOCK) for b, length in points)
    executor = ServingExecutor(model, num_blocks=largest + 64, block_size=BLOCK,
                               max_seq_length=MAX_SEQ_LENGTH,
                               graphs_up_to=max(b for b, _ in points))  # fmt: skip
    executor.warm_up()
    print(f"warmed up: {jit_compiles.count()} Triton compiles, notes {executor.notes}",
          flush=True)  # fmt: skip
    rows = []
    for i, (batch, length) in enumerate(points):
        row = point(executor, batch, length, first_rid=1000 * (i + 1))
        rows.append(row)
        print(f"== B={batch} L={length}: graph step {row['graph_step_ms']} ms (device "
              f"{row['graph_device_ms']}), eager step {row['eager_step_ms']} ms (device "
              f"{row['eager_device_ms']}), KV {row['kv_gb']:.2f} GB", flush=True)  # fmt: skip
        print(f"  mixed ({row['mixed_path']}, +1,024-token chunk): step {row['mixed_step_ms']} "
              f"ms (device {row['mixed_device_ms']})")  # fmt: skip
        for label in ("eager", "graph", "mixed"):
            print(f"  {label} kernels, us per iteration (total "
                  f"{row[label + '_kernel_total_us']}):")  # fmt: skip
            for name, us in row[label + "_kernels_us"].items():
                print(f"    {us:>9} {name}")
        print(json.dumps({k: v for k, v in row.items() if not k.endswith("kernels_us")}),
              flush=True)  # fmt: skip
        with open(args.out, "w") as out:
            card = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
            json.dump({"card": card, "points": rows}, out, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
