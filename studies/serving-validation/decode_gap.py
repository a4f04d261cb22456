"""Where a serving decode step's GPU time goes, on a GPU: Llama-3.1-8B (bf16, or a plan's
quantization and KV cache; full depth) in the serving loop, ``B`` sequences of ``L`` cached
tokens decoding together (``BxL``), or of lengths spread around ``L`` as a serving batch's
are (``BxL~``: lognormal, mean ``L``, the longest about 3x it; seeded).

The first serving validations measured decode-only iterations (CUDA graph replays) at about
1.5x the predicted step, nearly all of it on the GPU (the loop's host time is ~0.1 ms). This
times, per (B, L): the graph replay as ``tune validate`` runs it (graphs captured for the
plan's longest sequence, 8,192), the same iterations eager, and the GPU kernels of each under
PyTorch's profiler, grouped by kernel and divided per iteration, so a slow kernel is named.
Prints a table per point and one JSON line per point; writes them all to OUT.json.

First, the paged decode kernel alone over the launches of ``kernel_launch.VARIANTS`` (tile and
chunking: ``kernel_sweep``). Then
each point's serving iterations once per rule (``--splits even,work``:
``executor.decode_splits.BY_WORK``), and last the same shapes through the static-cache decode
step that the calibration was fitted to (equal lengths only).

    python3 studies/serving-validation/decode_gap.py OUT.json [--points 4x1024,32x1024~]
        [--plan studies/serving-validation/8b-fp8-h100/plan.json]

With a speculative plan (``--plan .../8b-bf16-h100-eagle/plan.json``) the drafter runs too:
each decode step is a round (its drafts, the verify; none kept), profiled the same way.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import statistics
import sys
from collections import defaultdict
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import kernel_launch  # noqa: E402

from executor import jit_compiles
from executor.points import prepare_model
from executor.serving_loop import ServingExecutor, Step
from executor.serving_warmup import compile_split_widths
from simulator.data.models import get_model

MAX_SEQ_LENGTH = 8192  # the 8B plans' max_model_len: the decode graphs are captured for it
BLOCK = 16
FP8 = torch.float8_e4m3fn


# CUDA runtime calls that make the host wait for the GPU (or may: a fresh allocation). The loop
# synchronizes once an iteration for its sampled tokens; more than that, inside the model,
# would put the host's launch time on the GPU's critical path.
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize",
              "cudaMemcpy", "cudaMalloc", "cudaFree")  # fmt: skip


def profile_iterations(run, iterations: int) -> tuple[dict[str, float], dict[str, float]]:
    """While ``run()`` runs ``iterations``: GPU microseconds per iteration of each kernel name,
    and the host's waiting calls per iteration (``HOST_WAITS``, exact names: ``cudaMemcpy`` is
    the blocking copy, not ``cudaMemcpyAsync``)."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as profiler:
        run()
        if torch.cuda.is_available():
            torch.cuda.synchronize()
    totals: dict[str, float] = defaultdict(float)
    waits: dict[str, float] = defaultdict(float)
    for event in profiler.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            totals[event.name[:60]] += event.time_range.elapsed_us() / iterations
        elif event.name in HOST_WAITS:
            waits[event.name] += 1 / iterations
    return dict(sorted(totals.items(), key=lambda item: -item[1])), dict(waits)


def _median_ms(values) -> float | None:
    values = list(values)
    return None if not values or None in values else 1e3 * statistics.median(values)


def lengths_of(text: str) -> list[int]:
    """A point's cached lengths: ``BxL`` (all ``L``) or ``BxL~`` (spread around ``L``)."""
    batch, length = text.rstrip("~").split("x")
    if not text.endswith("~"):
        return [int(length)] * int(batch)
    rng, sigma = random.Random(int(batch) * 7919 + int(length)), 0.6
    mu = math.log(int(length)) - sigma**2 / 2  # mean L
    return [min(MAX_SEQ_LENGTH - 128, max(16, round(rng.lognormvariate(mu, sigma))))
            for _ in range(int(batch))]  # fmt: skip


def point(executor: ServingExecutor, lengths: list[int], first_rid: int) -> dict:
    """One batch of ``lengths``: its decode step from graphs, eagerly and beside a chunk."""
    batch = len(lengths)
    rids = list(range(first_rid, first_rid + batch))
    for rid, length in zip(rids, lengths, strict=True):  # each prompt in chunks of <= 2,048
        for start in range(0, length, 2048):
            executor(Step([], [(rid, start, min(2048, length - start))]))
    decode = Step(rids, [])
    executor.records.clear()
    for _ in range(40):
        executor(decode)
    graph = [r for r in executor.records[10:] if r.path == "graph"]
    saved, executor.graphs = executor.graphs, None
    executor.records.clear()
    for _ in range(15):
        executor(decode)
    eager = executor.records[5:]
    eager_kernels, _ = profile_iterations(lambda: [executor(decode) for _ in range(3)], 3)
    executor.graphs = saved
    try:
        graph_kernels, _ = profile_iterations(lambda: [executor(decode) for _ in range(3)], 3)
    except Exception as error:  # noqa: BLE001 (a profiler that cannot see into graphs)
        graph_kernels = {"error": str(error)[:200]}
    # Mixed iterations: the decodes beside a fresh prompt's first chunk, a new request each
    # time: 1,024 tokens (eager) and 256 (piecewise graphs, attention eager between them).
    fresh = iter(range(first_rid + 500, first_rid + 1000))

    def mixed(chunk: int) -> None:
        rid = next(fresh)
        executor(Step(rids, [(rid, 0, chunk)]))
        executor.blocks.release(rid)

    beside = {}
    for label, chunk in (("mixed", 1024), ("piecewise", 256)):
        executor.records.clear()
        for _ in range(8):
            mixed(chunk)
        records = executor.records[3:]
        kernels, waits = profile_iterations(lambda chunk=chunk: [mixed(chunk) for _ in range(3)],
                                            3)  # fmt: skip
        beside |= {
            f"{label}_path": records[0].path,
            f"{label}_step_ms": _median_ms(r.step_s for r in records),
            f"{label}_device_ms": _median_ms(r.device_s for r in records),
            f"{label}_kernels_us": {k: round(v, 1) for k, v in list(kernels.items())[:15]},
            f"{label}_kernel_total_us": round(sum(kernels.values()), 1),
            f"{label}_host_waits": dict(waits),
        }
    for rid in rids:
        executor.blocks.release(rid)
    element = executor.model.layers[0].attention.kv_cache.k.element_size()  # 2 bf16, 1 fp8
    kv_bytes = 2 * 32 * 8 * 128 * element * (sum(lengths) + 25 * batch)  # K, V; mid-run
    return {
        "batch": batch, "context": round(statistics.mean(lengths)),
        "longest": max(lengths),
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
        **beside,
        "compiles_so_far": jit_compiles.count(),
    }  # fmt: skip


def kernel_sweep(points: list[str], kv_dtype: str = "bf16", rows: list | None = None,
                 saved=lambda: None) -> list[dict]:  # fmt: skip
    """The paged decode kernel alone, one layer (32 heads, 8 K/V heads of 128), blocks
    scattered, launched as a decode graph is captured (for the cache's longest sequence), at
    each of ``kernel_launch.VARIANTS``: tile and chunking. Graph
    replays, medians; GB/s of K/V read. ``kv_dtype`` "fp8": an FP8 cache. Each row is
    appended to ``rows`` and ``saved()`` called, so a sweep cut short keeps what it timed."""
    from executor import decode_attention as attention
    from executor.engine import time_graph
    from executor.kv_cache import PagedKVCache

    rows = [] if rows is None else rows
    for text in points:
        lengths = lengths_of(text)
        batch, width = len(lengths), -(-MAX_SEQ_LENGTH // BLOCK)
        used = [-(-(n + 1) // BLOCK) for n in lengths]
        dtype = FP8 if kv_dtype == "fp8" else torch.bfloat16
        cache = PagedKVCache(sum(used) + 1, 8, BLOCK, 128, dtype, "cuda")
        cache.k.copy_(torch.randn(cache.k.shape, device="cuda").to(dtype))
        cache.v.copy_(torch.randn(cache.v.shape, device="cuda").to(dtype))
        order = torch.randperm(sum(used), device="cuda").tolist()
        tables = torch.full((batch, width), sum(used), dtype=torch.long, device="cuda")
        for row, count in enumerate(used):
            first = sum(used[:row])
            tables[row, :count] = torch.tensor(order[first : first + count])
        positions = torch.tensor(lengths, dtype=torch.long, device="cuda")
        angles = torch.randn(batch, 64, device="cuda").repeat(1, 2)
        cos, sin = angles.cos(), angles.sin()
        qkv = torch.randn(batch, 1, 48, 128, device="cuda", dtype=torch.bfloat16)
        kv_bytes = 2 * 8 * (sum(lengths) + batch) * 128 * cache.k.element_size()
        for change in kernel_launch.VARIANTS:
            launch = kernel_launch.apply(change)
            where = {"point": text, "kv": kv_dtype, "batch": batch,
                     "context": round(statistics.mean(lengths)), "longest": max(lengths),
                     "launch": launch}  # fmt: skip
            try:
                seconds = time_graph(functools.partial(
                    attention.decode_attention, qkv, cos, sin, positions, cache,
                    MAX_SEQ_LENGTH, 32, block_table=tables))  # fmt: skip
            except Exception as error:  # noqa: BLE001 (a tile that does not compile)
                rows.append({**where, "error": str(error)[:200]})
                continue
            row = {**where, "us": seconds * 1e6, "gb_per_s": kv_bytes / seconds / 1e9}
            rows.append(row)
            saved()
            print(json.dumps(row), flush=True)
        kernel_launch.apply({})
    return rows


def main() -> int:
    from executor import decode_splits

    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--points", default="4x1024,32x1024,128x1024")
    parser.add_argument("--splits", default="even,work",
                        help="decode kernel chunk rules: even, work, or workN (by work with at "
                        "least N chunks a pair in the grid: MIN_GRID_SPLITS)")  # fmt: skip
    parser.add_argument("--sweep", default="4x1024,32x1024,128x1024,128x4096",
                        help="points of the kernel-alone sweep ('' for none)")  # fmt: skip
    parser.add_argument("--sweep-kv", default="bf16", choices=("bf16", "fp8"),
                        help="the kernel-alone sweep's cache")  # fmt: skip
    parser.add_argument("--layers", type=int, default=32, help="fewer for a quick check")
    parser.add_argument("--plan", help="a plan.json: its weights and KV cache (bf16 without)")
    args = parser.parse_args()
    points = [p for p in args.points.split(",") if p]
    document: dict = {"card": torch.cuda.get_device_name() if torch.cuda.is_available()
                      else "cpu", "points": []}  # fmt: skip

    def save() -> None:
        with open(args.out, "w") as out:
            json.dump(document, out, indent=1)

    if args.sweep and torch.cuda.is_available():
        try:
            sweep = [p for p in args.sweep.split(",") if p]
            document["kernel_sweep"] = []
            kernel_sweep(sweep, args.sweep_kv, document["kernel_sweep"], save)
        except Exception as error:  # noqa: BLE001 (the serving points below still run)
            print(f"kernel sweep failed: {error!r}", flush=True)
        save()
    if not points:
        return 0
    spec = get_model("llama-3.1-8b").model_copy(update={"num_hidden_layers": args.layers})
    quantization, kv_dtype, config = {"weights": "bf16"}, "bf16", None
    if args.plan:
        from executor.points import quantization_of
        from tuner.plan import load_plan

        config = load_plan(args.plan).config
        quantization, kv_dtype = quantization_of(config), config.kv_dtype
    document["quantization"], document["kv_dtype"] = quantization, kv_dtype
    model = prepare_model(spec, **quantization)
    drafter = None  # a speculative plan's: each decode step is then a round (none kept)
    if config is not None and config.speculative is not None:
        from executor.validate import drafter_factory

        drafter = drafter_factory(config, rank=0, world=1, seed=0)(model)
        document["speculative"] = config.speculative.model_dump(mode="json")
    # Each point's sequences grow by ~80 decoded tokens, beside a fresh 1,024-token chunk.
    largest = max(sum(-(-(n + 128) // BLOCK) for n in lengths_of(p)) for p in points)
    executor = ServingExecutor(model, num_blocks=largest + 2 * 1024 // BLOCK, block_size=BLOCK,
                               max_seq_length=MAX_SEQ_LENGTH, token_budget=2048,
                               graphs_up_to=max(len(lengths_of(p)) for p in points),
                               piecewise_up_to=2048,
                               kv_dtype=FP8 if kv_dtype == "fp8" else None,
                               drafter=drafter)  # fmt: skip
    executor.warm_up()
    print(f"warmed up: {jit_compiles.count()} Triton compiles, notes {executor.notes}",
          flush=True)  # fmt: skip
    default = decode_splits.BY_WORK, decode_splits.MIN_GRID_SPLITS
    for rule in args.splits.split(","):
        # Compile-time constants of the kernel and the grid of each captured graph: its
        # variants compiled, and the graphs captured anew.
        decode_splits.BY_WORK = rule.startswith("work")
        decode_splits.MIN_GRID_SPLITS = int(rule[4:]) if rule[4:] else default[1]
        compile_split_widths(executor)
        if executor.graphs is not None:
            executor.graphs.capture()
        for i, text in enumerate(points):
            row = {"splits": rule, "point": text,
                   **point(executor, lengths_of(text), first_rid=1000 * (i + 1))}  # fmt: skip
            document["points"].append(row)
            save()
            print(f"== {rule} {text} (mean {row['context']}, longest {row['longest']}): graph "
                  f"step {row['graph_step_ms']} ms (device {row['graph_device_ms']}), eager "
                  f"step {row['eager_step_ms']} ms (device {row['eager_device_ms']}), KV "
                  f"{row['kv_gb']:.2f} GB", flush=True)  # fmt: skip
            for label, chunk in (("mixed", "1,024"), ("piecewise", "256")):
                print(f"  {label} ({row[label + '_path']}, +{chunk}-token chunk): step "
                      f"{row[label + '_step_ms']} ms (device {row[label + '_device_ms']}, "
                      f"kernels {row[label + '_kernel_total_us'] / 1e3:.2f}), host waits per "
                      f"iteration {row[label + '_host_waits']}")  # fmt: skip
            for label in ("eager", "graph", "mixed", "piecewise"):
                print(f"  {label} kernels, us per iteration (total "
                      f"{row[label + '_kernel_total_us']}):")  # fmt: skip
                for name, us in row[label + "_kernels_us"].items():
                    print(f"    {us:>9} {name}")
            print(json.dumps({k: v for k, v in row.items() if not k.endswith("kernels_us")}),
                  flush=True)  # fmt: skip
    decode_splits.BY_WORK, decode_splits.MIN_GRID_SPLITS = default
    # The same shapes through the static-cache decode step (`tune measure`'s, whose times the
    # calibration was fitted to): what the serving path costs beyond it.
    from executor.points import measure_point

    executor = None
    model.free_caches()
    torch.cuda.empty_cache()
    document["static"] = []
    for batch, length in (map(int, p.split("x")) for p in points if not p.endswith("~")):
        record = measure_point(model, spec, weights=quantization["weights"], batch=batch,
                               context=length, kv_dtype=kv_dtype)  # fmt: skip
        ms = record.time_s * 1e3 if record.fits and record.time_s else None
        document["static"].append({"batch": batch, "context": length, "step_ms": ms,
                                   "decode_attention": record.decode_attention})  # fmt: skip
        save()
        print(f"== static B={batch} L={length}: step {ms} ms ({record.decode_attention})",
              flush=True)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
