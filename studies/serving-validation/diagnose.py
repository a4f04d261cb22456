"""Decode graphs against eager decodes in the serving loop, on a GPU: the same iterations.

A plan's workload is scheduled once on the simulator's own clock (each iteration advances the
clock by its predicted time, so every run below sees the same iterations), and the executor runs
those iterations on a model of the plan's shapes (``--layers`` of them) once per mode: eagerly
("eager"), with decode-only iterations replayed from CUDA graphs ("graphs"), and with
iterations holding prompt chunks from piecewise graphs too ("piecewise"). Greedy tokens are
compared with the first mode's, and each path's mean iteration time is printed. Run it under
``compute-sanitizer`` to have a bad access named.

    python3 studies/serving-validation/diagnose.py PLAN.json [--layers 2] [--requests 40]
        [--modes eager,graphs,piecewise] [--profile]

``--profile`` runs the last mode under PyTorch's profiler and prints its busiest operators, by
GPU time and by host time (the profiler's own cost makes that run's times slower).
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import torch

from executor.points import prepare_model
from executor.serving_loop import ServingExecutor
from simulator.data.hardware import load_hardware
from simulator.serving.capacity import at_rate
from simulator.serving.simulate import simulate
from tuner.plan import load_plan
from tuner.search.run import build_search
from tuner.traffic import traffic_config, traffic_rates


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--requests", type=int, default=40)
    parser.add_argument("--modes", default="eager,graphs")
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    plan = load_plan(args.plan)
    search = build_search(plan.search["spec"])
    config = traffic_config(plan)
    full = search.space.model  # schedules the iterations, and sizes the cache, as the plan's
    spec = full.model_copy(update={"num_hidden_layers": args.layers})
    hardware = load_hardware(plan.hardware)
    rate = dict(traffic_rates(plan))["plan"]
    workload = at_rate(search.workload.model_copy(update={"num_requests": args.requests}), rate)
    predicted = simulate(full, hardware, config, workload, seed=search.seed)
    blocks = int(predicted.prediction.kv_blocks)
    model = prepare_model(spec, weights=config.weight_dtype, scaling=config.fp8_scaling,
                          granularity="per_tensor")  # fmt: skip
    kv_dtype = torch.float8_e4m3fn if config.kv_dtype == "fp8" else None
    runs: dict[str, list] = {}
    for mode in args.modes.split(","):
        started = time.perf_counter()
        executor = ServingExecutor(
            model, num_blocks=blocks, block_size=config.block_size,
            max_seq_length=config.max_model_len, kv_dtype=kv_dtype,
            graphs_up_to=0 if mode == "eager" else config.max_num_seqs,
            piecewise_up_to=config.max_num_batched_tokens if mode == "piecewise" else 0,
            token_budget=config.max_num_batched_tokens,
        )  # fmt: skip
        executor.warm_up()
        print(f"{mode}: warmed up in {time.perf_counter() - started:.1f} s", flush=True)
        tokens: list = []

        def clock(iteration, executor=executor, tokens=tokens) -> float:
            executor(iteration)
            tokens.append(sorted(executor.last_token.items()))
            return iteration.predicted_s

        last = mode == args.modes.split(",")[-1]
        profiler = profile_run() if args.profile and last else None
        if profiler is not None:
            profiler.start()
        simulate(full, hardware, config, workload, seed=search.seed, clock=clock)
        torch.cuda.synchronize()
        if profiler is not None:
            profiler.stop()
            table = profiler.key_averages()
            print(table.table(sort_by="self_device_time_total", row_limit=25), flush=True)
            print(table.table(sort_by="self_cpu_time_total", row_limit=25), flush=True)
        print(f"{mode}: {len(tokens)} iterations in {time.perf_counter() - started:.1f} s",
              flush=True)  # fmt: skip
        for path in ("graph", "piecewise", "eager"):
            group = [r for r in executor.records if r.path == path]
            if group:
                mean = 1e3 / len(group)
                print(f"  {path}: {len(group)} iterations, mean "
                      f"{mean * sum(r.step_s for r in group):.3f} ms measured, "
                      f"{mean * sum(r.predicted_s for r in group):.3f} ms predicted, "
                      f"{sum(r.tokens for r in group) / len(group):.0f} tokens, "
                      f"{sum(r.compiles for r in group)} Triton compiles",
                      flush=True)  # fmt: skip
        runs[mode] = tokens
        del executor
    first_mode, reference = next(iter(runs.items()))
    for mode, tokens in list(runs.items())[1:]:
        same = sum(a == b for a, b in zip(reference, tokens, strict=True))
        first = next(
            (i for i, (a, b) in enumerate(zip(reference, tokens, strict=True)) if a != b), None
        )
        print(json.dumps({"against": first_mode, "mode": mode, "iterations": len(tokens),
                          "same_tokens": same, "first_diff": first}))  # fmt: skip
    return 0


def profile_run():
    from torch.profiler import ProfilerActivity, profile

    return profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA])


if __name__ == "__main__":
    sys.exit(main())
