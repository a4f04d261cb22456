"""Does the search find the optimum? Exhaustive enumeration against the Optuna search.

On a space small enough to enumerate (Llama-3.1-70B on up to 8 H100 SXM, chat traffic,
``--small-space``), simulate *every* point that fits in memory (dominated ones included, so the
pruning is checked too) and take the best feasible goodput per GPU. Then run the search as
``tune plan`` does (pruning, seeded baselines, TPE with constraints) from a fresh cache, for a
few seeds, and compare: the best it found must be within 2 % of the optimum while running at
most 10 % of the exhaustive run's simulations.

``--offline`` queues every request at once (TPOT SLO only), so throughput per GPU varies with
every knob instead of with the GPU count; ``--no-seeds`` leaves out the step model's ranked
baselines (TPE alone, the pruning table still answering infeasible points for free).

Prints a table, then one JSON line last. Run: ``python benchmarks/bench_search.py``.
"""

from __future__ import annotations

import argparse
import json
import time

import optuna

from tuner.objective import make_objective
from tuner.search import seed_baselines
from tuner.study import make_sampler

TOLERANCE = 0.02
EVALUATION_SHARE = 0.10


SEEDED = True  # --no-seeds: TPE alone, without the step model's ranked baselines
OFFLINE = False  # --offline: every request queued at once; throughput decides, not GPU count


def spec(requests: int, seed: int) -> dict:
    return {
        "model": "llama-3.1-70b",
        "hardware": ["h100-sxm"],
        "gpus": 8,
        "workload": "chat",
        "rate": "inf" if OFFLINE else None,
        "requests": requests,
        "seed": seed,
        "slos": ["tpot_p99=50ms"] if OFFLINE else ["ttft_p99=2s", "tpot_p99=50ms"],
        "allow_quant": "bf16,fp8",
        "speculative": False,
        "small": True,
        "objective": "goodput",
        "max_model_len": None,
        "calibration": True,
        "trials": 0,
        "sampler": "tpe",
        "engine": "vllm",
        "model_id": None,
        "exhaustive": False,
    }


def best_of(evaluations) -> tuple[float, str]:
    feasible = [e for e in list(evaluations) if e.feasible]
    if not feasible:
        return 0.0, "-"
    top = max(feasible, key=lambda e: (e.objectives[0], -e.objectives[1]))
    return top.objectives[0], top.point.label()


def exhaustive(requests: int) -> dict:
    from tuner.search import build_search

    search = build_search(spec(requests, 0))
    search.evaluator.simulate_dominated = True
    start = time.perf_counter()
    results = [search.evaluator.evaluate(p) for p in search.space.points()]
    value, label = best_of(results)
    return {
        "points": search.space.size(),
        "evaluations": search.evaluator.evaluations,
        "wall_s": time.perf_counter() - start,
        "optimum": value,
        "label": label,
    }


def searched(requests: int, seed: int, max_evaluations: int, optimum: float) -> dict:
    from tuner.search import build_search

    search = build_search(spec(requests, 0))
    study = optuna.create_study(
        directions=search.directions, sampler=make_sampler("tpe", seed=seed)
    )
    if SEEDED:
        seed_baselines(study, search, limit=8)
    objective = make_objective(search.evaluator, budget=10**6)
    start = time.perf_counter()
    trials, first_within = 0, None
    # Stop on the expensive budget (simulations), not on trials: cached and pruned points are
    # nearly free, and the claim is about simulations.
    while search.evaluator.evaluations < max_evaluations and trials < 20 * max_evaluations:
        study.optimize(objective, n_trials=1)
        trials += 1
        if (
            first_within is None
            and best_of(search.evaluator._cache.values())[0] >= (1 - TOLERANCE) * optimum
        ):
            first_within = search.evaluator.evaluations
    evaluations = list(search.evaluator._cache.values())
    value, label = best_of(evaluations)
    return {
        "seed": seed,
        "trials": trials,
        "evaluations": search.evaluator.evaluations,
        "wall_s": time.perf_counter() - start,
        "best": value,
        "label": label,
        "first_within": first_within,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument(
        "--offline",
        action="store_true",
        help="offline traffic (rate inf, TPOT SLO only): a harder landscape",
    )
    parser.add_argument(
        "--no-seeds",
        action="store_true",
        help="ablation: no step-model baselines, TPE from random startup",
    )
    args = parser.parse_args()
    global OFFLINE, SEEDED
    OFFLINE, SEEDED = args.offline, not args.no_seeds
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    full = exhaustive(args.requests)
    cap = int(EVALUATION_SHARE * full["evaluations"])
    runs = [searched(args.requests, seed, cap, full["optimum"]) for seed in range(args.seeds)]
    print(
        f"space: {full['points']} points; exhaustive: {full['evaluations']} simulations in "
        f"{full['wall_s']:.1f} s; optimum {full['optimum']:.1f} tokens/s/GPU ({full['label']})"
    )
    print(
        f"{'run':>10} {'trials':>7} {'sims':>6} {'share':>7} {'best':>9} {'gap':>7} "
        f"{'in 2% at':>9}  config"
    )
    print(
        f"{'exhaustive':>10} {'-':>7} {full['evaluations']:>6} {'100.0%':>7} "
        f"{full['optimum']:>9.1f} {'0.00%':>7} {'-':>9}  {full['label']}"
    )
    worst_gap, worst_share = 0.0, 0.0
    for run in runs:
        gap = 1.0 - run["best"] / full["optimum"] if full["optimum"] else 1.0
        share = run["evaluations"] / full["evaluations"]
        worst_gap, worst_share = max(worst_gap, gap), max(worst_share, share)
        print(
            f"{'seed ' + str(run['seed']):>10} {run['trials']:>7} {run['evaluations']:>6} "
            f"{100 * share:>6.1f}% {run['best']:>9.1f} {100 * gap:>6.2f}% "
            f"{str(run['first_within'] or '-'):>9}  {run['label']}"
        )
    print(
        json.dumps(
            {
                "benchmark": "search_vs_exhaustive",
                "traffic": "offline" if OFFLINE else "chat 8 req/s",
                "seeded": SEEDED,
                "space_points": full["points"],
                "exhaustive_evaluations": full["evaluations"],
                "optimum": full["optimum"],
                "search_evaluations": [r["evaluations"] for r in runs],
                "search_best": [r["best"] for r in runs],
                "first_within_tolerance_at": [r["first_within"] for r in runs],
                "worst_gap": round(worst_gap, 4),
                "worst_evaluation_share": round(worst_share, 4),
                "within_tolerance": worst_gap <= TOLERANCE and worst_share <= EVALUATION_SHARE,
            }
        )
    )


if __name__ == "__main__":
    main()
