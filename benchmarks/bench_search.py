"""Does the search find the cheapest plan? The branch and bound against brute force.

For each case the search is built as ``tune plan`` builds it (space, pruning, bounds), then:

- **default**: the branch and bound of ``tune plan`` (``tuner.search.cheapest``), from a fresh start;
- **exhaustive**: every candidate with no bound. With a rate: one replica, two, ... until it
  serves the rate (the cheapest count for each candidate); with no rate: each candidate's
  capacity, bisected from a thousandth of ten times its bound up to ten times its bound.
  The candidates are split over ``--jobs`` processes.

The optimum is the cheapest exhaustive deployment that also launches under vLLM's memory rule
(the default search applies the same rule). Per case the table prints the default's cost (or,
with no rate, its capacity), the optimum's, their ratio, the simulations each needed, and how
often the exhaustive runs saw a bound broken (a candidate serving the rate with fewer replicas
than its bound allows, or a capacity above its bound). The claim: ratio 1.00 on every case,
with at most 10 % of the exhaustive simulations.

Exhaustive runs take minutes to hours; ``--cache DIR`` keeps each case's result as JSON so the
table can be printed again (``--fresh-default`` runs the default search again against the
kept exhaustive results). Prints the table, then one JSON line last.
Run: ``python benchmarks/bench_search.py [--cases 70b-8,8b-8] [--jobs 2] [--cache DIR]``.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

SLOS = ["ttft_p99=2s", "tpot_p99=50ms"]
CASES: dict[str, dict] = {
    "70b-8": dict(model="llama-3.1-70b", hardware=["h100-sxm"], gpus=8),
    "70b-16": dict(model="llama-3.1-70b", hardware=["h100-sxm"], gpus=16),
    "405b-64": dict(model="llama-3.1-405b", hardware=["h100-sxm"], gpus=64),
    "8b-8": dict(model="llama-3.1-8b", hardware=["h100-sxm"], gpus=8),
    "maverick-16": dict(model="llama-4-maverick-17b-128e", hardware=["h200-sxm"], gpus=16),
    "8b-2-max": dict(model="llama-3.1-8b", hardware=["h100-sxm"], gpus=2, rate="inf"),
}
RATIO_GOAL, SHARE_GOAL = 1.0, 0.10


def spec(case: str) -> dict:
    base = {
        "workload": "chat", "rate": None, "requests": 500, "seed": 0, "slos": SLOS,
        "allow_quant": "bf16,fp8", "speculative": True, "small": False, "objective": "cost",
        "max_model_len": None, "calibration": True, "engine": "vllm", "model_id": None,
        "exhaustive": False,
    }  # fmt: skip
    return {**base, **CASES[case]}


def _search(case: str):
    from tuner.search.run import build_search

    return build_search(spec(case))


def default_search(case: str) -> dict:
    from tuner.choose import launch_check
    from tuner.plan import hf_model_id
    from tuner.search.probe import Prober
    from tuner.search.run import run_search
    from tuner.search.trials import LocalRunner

    start = time.perf_counter()
    search = _search(case)
    prober = Prober(search.table, LocalRunner(search, None))
    check = launch_check(search, "vllm", hf_model_id(search.space.model))
    outcome = run_search(search, prober, admissible=check)
    best = outcome.best
    return {
        "wall_s": time.perf_counter() - start,
        "simulations": prober.simulations,
        "candidates": len(search.table),
        "visited": len(outcome.visited),
        "cost": best.cost if best else None,
        "capacity": best.total_capacity if best else None,
        "label": best.candidate.deployment(best.replicas).label() if best else "-",
    }


def _exhaustive_shard(case: str, shard: int, shards: int) -> list[dict]:
    """Every candidate of one shard, with no bound (see the module docstring)."""
    from simulator.serving.capacity import highest_rate
    from tuner.search.cheapest import _EXHAUSTIVE_SPAN
    from tuner.search.probe import simulate_probe

    search = _search(case)
    rows = []
    for candidate in search.table.candidates[shard::shards]:
        probes = 0

        def meets(rate: float, candidate=candidate) -> bool:
            nonlocal probes
            probes += 1
            return simulate_probe(search, candidate, rate).meets

        row = {"index": candidate.index, "bound": candidate.rate_bound}
        if search.rate is None:
            top = candidate.rate_bound * _EXHAUSTIVE_SPAN
            row["capacity"] = highest_rate(meets, low=top / 1000, high=top)[0]
        else:
            row["replicas"] = next(
                (n for n in range(1, search.space.gpus // candidate.gpus + 1)
                 if meets(search.rate / n)), None,
            )  # fmt: skip
        row["probes"] = probes
        rows.append(row)
    return rows


def exhaustive(case: str, jobs: int) -> dict:
    from tuner.choose import launch_check
    from tuner.plan import hf_model_id

    start = time.perf_counter()
    with ProcessPoolExecutor(jobs) as pool:
        parts = pool.map(_exhaustive_shard, [case] * jobs, range(jobs), [jobs] * jobs)
        rows = sorted((row for part in parts for row in part), key=lambda r: r["index"])
    search = _search(case)
    check = launch_check(search, "vllm", hf_model_id(search.space.model))
    table, budget = search.table.candidates, search.space.gpus
    violations = 0
    worst_excess = 0.0  # the largest capacity / bound seen: how close the bound came to breaking
    scored = []
    for row in rows:
        candidate = table[row["index"]]
        if search.rate is None:
            capacity = row["capacity"]
            violations += capacity is not None and capacity > candidate.rate_bound
            if capacity:
                worst_excess = max(worst_excess, capacity / candidate.rate_bound)
            if capacity:
                total = (budget // candidate.gpus) * capacity
                scored.append((-total, candidate.gpus * (budget // candidate.gpus), row))
        else:
            replicas = row["replicas"]
            least = max(1, math.ceil(search.rate / candidate.rate_bound - 1e-9))
            violations += replicas is not None and replicas < least
            if replicas is not None:
                scored.append((candidate.cost(replicas), 0, row))
    best = next((row for *_, row in sorted(scored, key=lambda s: s[:2])
                 if check(table[row["index"]]) is None), None)  # fmt: skip
    result = {
        "wall_s": time.perf_counter() - start,
        "simulations": sum(row["probes"] for row in rows),
        "violations": int(violations),
        "worst_excess": round(worst_excess, 4) if search.rate is None else None,
        "label": "-",
        "cost": None,
        "capacity": None,
    }
    if best is not None:
        candidate = table[best["index"]]
        if search.rate is None:
            replicas = budget // candidate.gpus
            result["capacity"] = replicas * best["capacity"]
        else:
            replicas = best["replicas"]
            result["cost"] = candidate.cost(replicas)
        result["label"] = candidate.deployment(replicas).label()
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES), help="comma-separated case names")
    parser.add_argument("--jobs", type=int, default=2, help="processes for the exhaustive runs")
    parser.add_argument("--cache", default=None, help="directory keeping each case's result")
    parser.add_argument(
        "--fresh-default",
        action="store_true",
        help="run the default search again, keeping the cached exhaustive results",
    )
    args = parser.parse_args()
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cache = Path(args.cache) if args.cache else None
    results = {}
    for case in args.cases.split(","):
        stored = cache / f"{case}.json" if cache else None
        if stored is not None and stored.exists():
            results[case] = json.loads(stored.read_text())
            if args.fresh_default:
                print(f"{case}: default search...", file=sys.stderr, flush=True)
                results[case]["default"] = default_search(case)
                stored.write_text(json.dumps(results[case], indent=1) + "\n")
            continue
        print(f"{case}: default search...", file=sys.stderr, flush=True)
        fast = default_search(case)
        print(f"{case}: exhaustive ({args.jobs} processes)...", file=sys.stderr, flush=True)
        full = exhaustive(case, args.jobs)
        results[case] = {"case": case, "spec": spec(case), "default": fast, "exhaustive": full}
        if stored is not None:
            stored.parent.mkdir(parents=True, exist_ok=True)
            stored.write_text(json.dumps(results[case], indent=1) + "\n")
    head = (f"{'case':<12} {'default':>12} {'optimum':>12} {'ratio':>6} {'sims':>6} "
            f"{'exhaustive':>10} {'share':>7} {'broken':>6}  plan")  # fmt: skip
    print(head)
    rows = []
    for case, r in results.items():
        fast, full = r["default"], r["exhaustive"]
        if full["cost"] is not None:  # cheaper is better: optimum / default <= 1
            mine, best = fast["cost"], full["cost"]
            ratio = best / mine if mine else 0.0
            unit = "$/h"
        else:  # more capacity is better
            mine, best = fast["capacity"], full["capacity"]
            ratio = mine / best if best else 0.0
            unit = "req/s"
        share = fast["simulations"] / max(full["simulations"], 1)
        rows.append({"case": case, "ratio": round(ratio, 4), "share": round(share, 4),
                     "default_simulations": fast["simulations"],
                     "exhaustive_simulations": full["simulations"],
                     "bound_violations": full["violations"], "default_wall_s": round(
                         fast["wall_s"], 2), "plan": fast["label"], "optimum": full["label"]})  # fmt: skip
        print(f"{case:<12} {mine:>8.2f} {unit:<4}{best:>8.2f} {unit:<4}{ratio:>5.2f} "
              f"{fast['simulations']:>6} {full['simulations']:>10} {100 * share:>6.2f}% "
              f"{full['violations']:>6}  {fast['label']}")  # fmt: skip
    print(json.dumps({
        "benchmark": "search_vs_exhaustive",
        "cases": rows,
        "all_optimal": all(r["ratio"] >= RATIO_GOAL - 1e-9 for r in rows),
        "worst_share": max((r["share"] for r in rows), default=0.0),
        "within_goal": all(r["ratio"] >= RATIO_GOAL - 1e-9 and r["share"] <= SHARE_GOAL
                           for r in rows),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
