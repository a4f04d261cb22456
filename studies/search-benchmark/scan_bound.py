"""The bound against the simulated capacity of a case's best candidates.

For each candidate whose deployment bound is within 15 % of the best one, bisect its simulated
capacity (the search's own probe) and print it beside the steady-state bound (the bound without
``BOUND_SLACK``); the last line is the largest ratio. Used on 2026-12-06 to size the slack:

    python studies/search-benchmark/scan_bound.py 8b-2-max > scan-8b-2-max.jsonl
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

import bench_search  # noqa: E402

from simulator.serving.bounds import BOUND_SLACK  # noqa: E402
from simulator.serving.capacity import highest_rate  # noqa: E402
from tuner.search.probe import simulate_probe  # noqa: E402


def main(case: str) -> None:
    search = bench_search._search(case)
    budget = search.space.gpus

    def total(candidate) -> float:
        return (budget // candidate.gpus) * candidate.rate_bound

    ranked = sorted(search.table.candidates, key=total, reverse=True)
    near = [c for c in ranked if total(c) >= 0.85 * total(ranked[0])]
    worst = 0.0
    for c in near:
        capacity = highest_rate(
            lambda rate, c=c: simulate_probe(search, c, rate).meets,
            low=c.rate_bound / 10,
            high=c.rate_bound * 1.3,
        )[0]
        steady = c.rate_bound / BOUND_SLACK
        ratio = (capacity or 0.0) / steady
        worst = max(worst, ratio)
        print(json.dumps([c.point.label(), c.limit, round(steady, 2), capacity, round(ratio, 4)]))
    print(json.dumps({"candidates": len(near), "worst_ratio": round(worst, 4)}))


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "8b-2-max")
