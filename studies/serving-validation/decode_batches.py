"""How many sequences a plan's decode-only iterations hold, at each validation load, on the
simulator's own clock (the schedule ``tune validate --traffic`` runs, no GPU):

    python studies/serving-validation/decode_batches.py PLAN.json [--requests 100]
"""

from __future__ import annotations

import argparse
import statistics

from simulator.data.hardware import load_hardware
from simulator.serving.capacity import at_rate
from simulator.serving.simulate import simulate
from tuner.plan import load_plan
from tuner.search.run import build_search
from tuner.traffic import traffic_config, traffic_rates


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("plan")
    parser.add_argument("--requests", type=int, default=100)
    args = parser.parse_args()
    plan = load_plan(args.plan)
    search, config = build_search(plan.search["spec"]), traffic_config(plan)
    hardware = load_hardware(plan.hardware)
    for name, rate in traffic_rates(plan):
        workload = at_rate(search.workload.model_copy(update={"num_requests": args.requests}),
                           rate)  # fmt: skip
        iterations: list = []

        def clock(iteration, iterations=iterations) -> float:
            iterations.append(iteration)
            return iteration.predicted_s

        simulate(search.space.model, hardware, config, workload, seed=search.seed, clock=clock)
        decodes = [i for i in iterations if not i.prefill]
        print(f"{name}: {rate:.2f} req/s, {len(iterations)} iterations, {len(decodes)} decode-only:"
              f" mean batch {statistics.fmean(len(i.decode) for i in decodes):.1f}, mean predicted"
              f" {1e3 * statistics.fmean(i.predicted_s for i in decodes):.2f} ms")  # fmt: skip


if __name__ == "__main__":
    main()
