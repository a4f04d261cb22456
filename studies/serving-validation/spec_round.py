"""One speculative round's drafts and verify apart, on a GPU, against the model's prices.

In `h100-bound-2026-12-07/` the EAGLE and draft-model plans' rounds ran 1.16-1.24x the
predicted at every batch, where plain decode steps ran within 4-7 %: the drafts of a round
cost about 1 ms more than priced, with either drafter. This builds a plan's executor with its
drafter (as ``tune validate`` does), then for each batch replays, with every sequence at
``--context`` tokens over blocks of its own:

- the round's graph (``executor.speculative_graphs.RoundGraphs``: the drafts, then the
  verify of ``g + 1`` tokens a sequence);
- the drafts' graph alone (``ProposeGraphs``), so the verify is the difference;

each timed with CUDA events (3 warm-ups, the median of 20), beside the model's draft and verify
times at the same batch and context (``simulator.serving.speculative.SpeculativeModel``).
``--profile`` then lists the busiest kernels of ten replays of the first batch's round.

    python3 studies/serving-validation/spec_round.py PLAN.json OUT.json [--batches 1,4,16,64]
        [--context 1024] [--profile]
"""

from __future__ import annotations

import argparse
import json
import sys

import numpy as np
import torch

from executor.engine import time_cuda
from executor.points import prepare_model, quantization_of
from executor.serving_loop import ServingExecutor
from executor.validate import drafter_factory
from simulator.cost.step import StepModel
from simulator.cost.step_fast import FastStep
from simulator.data.hardware import load_hardware
from simulator.serving.speculative import SpeculativeModel
from tuner.plan import load_plan
from tuner.search.run import build_search
from tuner.traffic import traffic_config


def fill(buffers: tuple, batch: int, context: int, per_row: int, scratch: int) -> None:
    """A bucket's static inputs: ``batch`` sequences at ``context`` tokens, each over blocks
    of its own; the bucket's other rows padding at position 1 on the scratch block."""
    last, first, tables = buffers[:3]
    size, width = tables.shape
    last.copy_(torch.randint(0, 32000, (size,), device=last.device))
    first.fill_(1)
    first[:batch] = context
    rows = np.full((size, width), scratch, dtype=np.int64)
    rows[:batch, :per_row] = np.arange(batch * per_row).reshape(batch, per_row)
    tables.copy_(torch.from_numpy(rows))


def median_ms(graph) -> float:
    return 1e3 * float(np.median(time_cuda(graph.replay, warmup=3, iters=20)))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("out")
    parser.add_argument("--batches", default="1,4,16,64")
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument("--profile", action="store_true")
    args = parser.parse_args()
    batches = [int(b) for b in args.batches.split(",")]
    plan = load_plan(args.plan)
    config = traffic_config(plan)
    spec = build_search(plan.search["spec"]).space.model
    hardware = load_hardware(plan.hardware)
    g = config.speculative.num_speculative_tokens
    priced = SpeculativeModel(model=spec, hardware=hardware, config=config,
                              target=FastStep(StepModel.build(spec, hardware, config)), seed=0)  # fmt: skip

    model = prepare_model(spec, **quantization_of(config), seed=0)
    block = config.block_size
    per_row = -(-(args.context + g + 2) // block)
    executor = ServingExecutor(
        model, num_blocks=max(batches) * per_row + 8, block_size=block,
        max_seq_length=config.max_model_len,
        kv_dtype=torch.float8_e4m3fn if config.kv_dtype == "fp8" else None,
        graphs_up_to=max(batches), token_budget=config.max_num_batched_tokens,
        drafter=drafter_factory(config, rank=0, world=1, seed=0)(model),
    )  # fmt: skip
    executor.warm_up()
    scratch = executor.blocks.scratch
    rows = []
    for batch in batches:
        contexts = np.array([float(batch * args.context)])
        draft_s = float(priced.draft_times(batch, contexts)[0])
        verify_s = float(priced.verify_times(batch, contexts)[0])
        graph, buffers = executor.graphs.graphs[executor.graphs.bucket(batch)][:2]
        fill(buffers, batch, args.context, per_row, scratch)
        round_ms = median_ms(graph)
        graph, buffers = executor.proposals.graphs[executor.proposals.bucket(batch)][:2]
        fill(buffers, batch, args.context, per_row, scratch)
        drafts_ms = median_ms(graph)
        row = {"batch": batch, "bucket": executor.graphs.bucket(batch), "round_ms": round_ms,
               "drafts_ms": drafts_ms, "verify_ms": round_ms - drafts_ms,
               "predicted_drafts_ms": 1e3 * draft_s, "predicted_verify_ms": 1e3 * verify_s}  # fmt: skip
        rows.append(row)
        print(f"batch {batch:>3}: round {round_ms:6.2f} ms ({1e3 * (draft_s + verify_s):6.2f} "
              f"predicted), drafts {drafts_ms:5.2f} ({1e3 * draft_s:5.2f}), verify "
              f"{round_ms - drafts_ms:5.2f} ({1e3 * verify_s:5.2f})", flush=True)  # fmt: skip
    if args.profile:
        from torch.profiler import ProfilerActivity, profile

        graph, buffers = executor.graphs.graphs[executor.graphs.bucket(batches[0])][:2]
        fill(buffers, batches[0], args.context, per_row, scratch)
        with profile(activities=[ProfilerActivity.CUDA]) as profiler:
            for _ in range(10):
                graph.replay()
            torch.cuda.synchronize()
        print(profiler.key_averages().table(sort_by="self_device_time_total", row_limit=30))
    with open(args.out, "w") as out:
        json.dump({"card": torch.cuda.get_device_name(), "plan": args.plan, "g": g,
                   "method": config.speculative.method, "context": args.context,
                   "rows": rows}, out, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
