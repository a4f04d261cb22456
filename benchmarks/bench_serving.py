"""How fast the serving simulation runs: 10,000 chat requests, Llama-3.1-8B, one H100 SXM.

Prints a table (wall time per run, simulated engine iterations, iterations per second of wall
time, and the headline latencies so a speed-up that changed the answer shows), then one JSON
line last. Run: ``python benchmarks/bench_serving.py [--requests N] [--repeat R]``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig
from simulator.data.workload import get_workload
from simulator.serving.simulate import simulate

BUDGET_S = 2.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    model = get_model("llama-3.1-8b")
    hardware = load_hardware("h100-sxm")
    config = DeploymentConfig()
    workload = get_workload("chat", num_requests=args.requests)
    simulate(model, hardware, config, get_workload("chat", num_requests=50))  # imports, caches
    rows = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = simulate(model, hardware, config, workload, seed=0)
        rows.append((time.perf_counter() - start, result.prediction))
    header = (
        f"{'run':>3}  {'wall s':>7}  {'iterations':>10}  {'iter/s':>9}  "
        f"{'TTFT p99':>9}  {'TPOT p99':>9}  {'out tok/s':>9}"
    )
    print(
        f"serving simulation: {args.requests} x {workload.name} "
        f"({workload.arrival.rate_per_s:g} req/s Poisson), {model.name}, {hardware.name}"
    )
    print(header)
    print("-" * len(header))
    for i, (wall, p) in enumerate(rows):
        print(
            f"{i:>3}  {wall:>7.3f}  {p.iterations:>10,}  {p.iterations / wall:>9,.0f}  "
            f"{p.ttft_s.p99 * 1e3:>7.1f}ms  {p.tpot_s.p99 * 1e3:>7.2f}ms  "
            f"{p.output_tokens_per_s:>9,.0f}"
        )
    walls = [wall for wall, _ in rows]
    best = min(walls)
    p = rows[0][1]
    print(
        json.dumps(
            {
                "benchmark": "serving",
                "model": model.name,
                "hardware": hardware.name,
                "workload": workload.name,
                "requests": args.requests,
                "wall_s": round(best, 4),
                "wall_s_median": round(statistics.median(walls), 4),
                "budget_s": BUDGET_S,
                "within_budget": best <= BUDGET_S,
                "iterations": p.iterations,
                "iterations_per_s": round(p.iterations / best),
                "ttft_p99_s": p.ttft_s.p99,
                "tpot_p99_s": p.tpot_s.p99,
                "output_tokens_per_s": p.output_tokens_per_s,
            }
        )
    )


if __name__ == "__main__":
    main()
