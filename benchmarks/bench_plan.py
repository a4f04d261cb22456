"""How long `tune plan` takes, end to end, on this machine; and `tune predict`.

Runs the real commands in fresh processes (imports, pruning and bounds, the search, the
report, every file) into a temporary directory: each ``tune plan`` case of
``bench_search.py`` three times, ``tune predict`` (step level) ten times, and prints the
medians against their budgets (10 s for 70B on 16 H100, 20 s for every case, 0.25 s for
predict), a table, then one JSON line last.
Run: ``python benchmarks/bench_plan.py [--cases 70b-16] [--repeat 3]`` (``--cases ""``: predict only).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from bench_search import CASES, SLOS  # noqa: E402  (the same cases as the search benchmark)

BUDGET_S = {"70b-16": 10.0}
DEFAULT_BUDGET_S = 20.0
PREDICT_BUDGET_S = 0.25
PREDICT = ["predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--batch", "8",
           "--prompt", "2048", "--context", "1024"]  # fmt: skip


def _tune(*argv: str) -> list[str]:
    tune = Path(sys.executable).with_name("tune")
    return [str(tune)] if tune.exists() else [sys.executable, "-m", "tuner.cli"]


def plan_command(case: str, out: Path) -> list[str]:
    spec = CASES[case]
    argv = [*_tune(), "plan", "--model", spec["model"], "--hardware", ",".join(spec["hardware"]),
            "--gpus", str(spec["gpus"]), "--workload", "chat", "--out", str(out), "--quiet"]  # fmt: skip
    for slo in SLOS:
        argv += ["--slo", slo]
    if spec.get("rate"):
        argv += ["--rate", str(spec["rate"])]
    return argv


# As an installed tool runs: warnings off, and bytecode cached (pip compiles an installed
# package; a shell with PYTHONDONTWRITEBYTECODE set would otherwise recompile every module of
# the project on every run, about 50 ms of a predict here).
_ENV = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
_ENV["PYTHONWARNINGS"] = "ignore"


def timed(argv: list[str]) -> float:
    start = time.perf_counter()
    result = subprocess.run(argv, capture_output=True, text=True, env=_ENV)
    wall = time.perf_counter() - start
    if result.returncode != 0:
        print(result.stderr, file=sys.stderr)
        raise SystemExit(result.returncode)
    return wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", default=",".join(CASES))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for case in filter(None, args.cases.split(",")):
            walls = [
                timed(plan_command(case, Path(tmp) / f"{case}-{i}")) for i in range(args.repeat)
            ]
            plan = json.loads((Path(tmp) / f"{case}-0" / "plan.json").read_text())
            stats = plan["search"]["bound"]
            budget = BUDGET_S.get(case, DEFAULT_BUDGET_S)
            rows.append({
                "case": case, "median_s": round(statistics.median(walls), 2),
                "walls_s": [round(w, 2) for w in walls], "budget_s": budget,
                "simulations": stats["simulations"], "candidates": stats["candidates"],
                "plan": f"{plan['replicas']} x tp{plan['config']['tp']} "
                        f"pp{plan['config']['pp']} = {plan['num_gpus']} GPUs",
            })  # fmt: skip
        timed([*_tune(), *PREDICT])  # untimed: writes the bytecode caches
        predict = [timed([*_tune(), *PREDICT]) for _ in range(10)]
    predict_s = statistics.median(predict)
    print(f"{'case':<12} {'median':>8} {'budget':>7} {'sims':>5}  plan")
    for row in rows:
        print(f"{row['case']:<12} {row['median_s']:>7.2f}s {row['budget_s']:>6.0f}s "
              f"{row['simulations']:>5}  {row['plan']}")  # fmt: skip
    print(f"{'predict':<12} {predict_s:>7.3f}s {PREDICT_BUDGET_S:>6.2f}s")
    print(json.dumps({
        "benchmark": "tune_plan_wall",
        "cases": rows,
        "predict_median_s": round(predict_s, 3),
        "within_budget": all(r["median_s"] <= r["budget_s"] for r in rows)
        and predict_s <= PREDICT_BUDGET_S,
        "cpus": os.cpu_count(),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
