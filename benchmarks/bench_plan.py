"""How long `tune plan` takes: Llama-3.1-70B on up to 16 H100 SXM, chat traffic, full space.

Runs the real command in a fresh process (imports, pruning, the study, the report, every file)
into a temporary directory and times it against the 60 s budget. Prints a table (phase counts
from the plan's provenance and pruning) and one JSON line last.
Run: ``python benchmarks/bench_plan.py [--gpus 16] [--trials N]``.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BUDGET_S = 60.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--gpus", type=int, default=16)
    parser.add_argument("--trials", type=int, default=None, help="default: tune plan's default")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "study"
        command = [
            sys.executable,
            "-m",
            "tuner.cli",
            "plan",
            "--model",
            "llama-3.1-70b",
            "--hardware",
            "h100-sxm",
            "--gpus",
            str(args.gpus),
            "--workload",
            "chat",
            "--slo",
            "ttft_p99=2s",
            "--slo",
            "tpot_p99=50ms",
            "--out",
            str(out),
            "--quiet",
        ]
        if args.trials:
            command += ["--trials", str(args.trials)]
        start = time.perf_counter()
        result = subprocess.run(
            command, capture_output=True, text=True, env=dict(os.environ, PYTHONWARNINGS="ignore")
        )
        wall = time.perf_counter() - start
        if result.returncode != 0:
            print(result.stderr, file=sys.stderr)
            raise SystemExit(result.returncode)
        plan = json.loads((out / "plan.json").read_text())
    prov, pruning = plan["provenance"], plan["search"]["pruning"]
    rows = [
        ("space points", plan["search"]["space"]["size"]),
        ("replica configs", sum(pruning.values())),
        ("  survived pruning", pruning["ok"]),
        ("  memory-infeasible", pruning["memory"]),
        ("  SLO-hopeless", pruning["slo"]),
        ("  dominated", pruning["dominated"]),
        ("trials", prov["trials"]),
        ("simulations", prov["evaluations"]),
        (
            "plan",
            f"{plan['replicas']} x tp{plan['config']['tp']} pp{plan['config']['pp']} "
            f"{plan['quantization']['weights']}/{plan['quantization']['kv_dtype']} = "
            f"{plan['num_gpus']} GPUs",
        ),
        ("goodput tokens/s/GPU", f"{plan['predicted']['goodput_tokens_per_s_per_gpu']:.0f}"),
        ("wall time", f"{wall:.1f} s (budget {BUDGET_S:.0f} s)"),
    ]
    width = max(len(k) for k, _ in rows)
    for key, value in rows:
        print(f"{key.ljust(width)}  {value}")
    print(
        json.dumps(
            {
                "benchmark": "tune_plan",
                "model": "llama-3.1-70b",
                "hardware": "h100-sxm",
                "gpus": args.gpus,
                "trials": prov["trials"],
                "simulations": prov["evaluations"],
                "wall_s": round(wall, 2),
                "budget_s": BUDGET_S,
                "within_budget": wall <= BUDGET_S,
                "cpus": os.cpu_count(),
            }
        )
    )


if __name__ == "__main__":
    main()
