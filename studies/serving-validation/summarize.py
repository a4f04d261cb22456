"""One call's results at a glance: for each validated plan under DIR (a ``plan.json`` with a
``validation.traffic`` section, an ``iterations.csv`` beside it), each load's predicted and
measured metrics and their errors (then the median over every plan's), its measured over
predicted step by path (with the share of it the host took
to issue, and the loop's median time between iterations, where kept), and its decode steps by
span of batches; then each ``decode-gap*.json``'s serving points (graph, eager and chunk
iterations, the kernels' share) and kernel sweep, fastest first.

    python3 studies/serving-validation/summarize.py DIR
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path

from tuner.iteration_log import read_iterations
from tuner.traffic import decode_step_ratios, decode_steps


def plans(root: Path) -> None:
    every: list[float] = []  # each metric's |error| at each load of each plan
    for path in sorted(root.rglob("plan.json")):
        traffic = (json.loads(path.read_text()).get("validation") or {}).get("traffic")
        if not traffic:
            continue
        print(f"== {path.parent.relative_to(root)}: {traffic['status']}, median error "
              f"{traffic.get('median_abs_relative_error') or 0:.0%}")  # fmt: skip
        kept = path.parent / "iterations.csv"
        rows = read_iterations(kept) if kept.exists() else {}
        for load in traffic["loads"]:
            predicted, measured = load["predicted"], load.get("measured") or {}
            cells = []
            for key, value in predicted.items():
                if key in measured and isinstance(value, float) and measured[key]:
                    scale, unit = (1, "") if key.endswith("_per_s") else (1e3, " ms")
                    cells.append(f"{key} {scale * value:.4g}/{scale * measured[key]:.4g}{unit}")
            print(f"  {load['load']} ({load['rate_per_s']:.2f} req/s): " + ", ".join(cells))
            errors = load.get("errors") or {}
            if errors:
                print("    error (predicted - measured) / measured: "
                      + ", ".join(f"{key} {value:+.1%}" for key, value in errors.items()))  # fmt: skip
                every.extend(abs(value) for value in errors.values())
            paths = {
                k: v for k, v in (load.get("iterations") or {}).items() if isinstance(v, dict)
            }
            if paths:
                records = rows.get(load["load"], [])
                print("    measured/predicted by path: " + ", ".join(
                    f"{name} {p['mean_step_s'] / p['mean_predicted_s']:.2f}x ({p['count']}"
                    + (f", issued in {p['mean_issued_s'] / p['mean_step_s']:.0%} of it"
                       if p.get("mean_issued_s") else "")
                    + _host_median(records, name) + ")"
                    for name, p in paths.items()))  # fmt: skip
            steps = load.get("decode_steps") or decode_steps(rows.get(load["load"], []))
            ratios = decode_step_ratios(steps)
            if ratios:
                print("    decode steps by batch: "
                      + ", ".join(f"{span} {ratio:.2f}x" for span, ratio in ratios))  # fmt: skip
    if every:
        within = sum(error <= 0.15 for error in every)
        print(f"== all plans: median |error| {statistics.median(every):.1%}, {within} of "
              f"{len(every)} within 15 %")  # fmt: skip


def _host_median(records: list, path: str) -> str:
    """ ", loop X ms": the median of the loop's own time between iterations (``host_s``) on
    ``path``, where the run's iterations were kept; the same code's host time says how fast a
    machine's host was."""
    hosts = [r.host_s for r in records if r.path == path and r.host_s > 0]
    return f", loop {1e3 * statistics.median(hosts):.3f} ms" if hosts else ""


def gaps(root: Path) -> None:
    for path in sorted(root.rglob("decode-gap*.json")):
        document = json.loads(path.read_text())
        print(f"== {path.relative_to(root)} ({document.get('card')})")
        for p in document.get("points", []):
            line = (f"  {p.get('splits', '')} {p.get('point', p['batch'])}: graph "
                    f"{p['graph_device_ms']:.2f} ms (kernels "
                    f"{p['graph_kernel_total_us'] / 1e3:.2f})")  # fmt: skip
            for label in ("mixed", "piecewise"):
                if p.get(f"{label}_device_ms"):
                    line += (f", {label} {p[label + '_device_ms']:.2f} ms (kernels "
                             f"{p[label + '_kernel_total_us'] / 1e3:.2f})")  # fmt: skip
            print(line)
        for s in document.get("static", []):
            print(f"  static {s['batch']}x{s['context']}: {s['step_ms']} ms")
        sweep = [r for r in document.get("kernel_sweep", []) if "us" in r]
        for point in dict.fromkeys(r.get("point", f"{r['batch']}x{r['context']}") for r in sweep):
            rows = sorted((r for r in sweep if r.get("point", f"{r['batch']}x{r['context']}")
                           == point), key=lambda r: r["us"])  # fmt: skip
            print(
                f"  sweep {point} ({rows[0].get('kv', 'bf16')}): "
                + "; ".join(f"{r['us']:.1f} us {_launch(r)}" for r in rows[:4])
            )


def _launch(row: dict) -> str:
    """A sweep row's launch: chunk rule, graph or own length, programs aimed at (grid chunks
    a pair), tile, "in-step" where the block table is read in each step, not ahead, and
    "stored-first" where the new K/V are stored before the loop, "down" where chunks are
    rounded down, "f16" where an FP8 cache's dots are float16. Rows before ``kernel_launch``
    carried the knobs themselves, and rows before the two rules had "balanced" or fixed."""
    knobs = row["launch"] if isinstance(row["launch"], dict) else row
    if "by_work" in knobs:
        rule = "work" if knobs["by_work"] else "even"
    else:
        rule = "even" if row.get("balanced") else "fixed"
    where = "cache" if isinstance(row["launch"], dict) else row["launch"]
    grid = f"/g{knobs['min_grid_splits']}" if "min_grid_splits" in knobs else ""
    return (
        f"{rule} {where} t{knobs['target_programs']}{grid} {knobs['block_s']}/"
        f"{knobs['warps']}/{knobs['stages']}{' in-step' if knobs.get('table_ahead') is False else ''}"
        f"{' stored-first' if knobs.get('store_first') else ''}"
        f"{' down' if knobs.get('round_down') else ''}{' f16' if knobs.get('fp8_as_f16') else ''}"
    )


if __name__ == "__main__":
    root = Path(sys.argv[1])
    plans(root)
    gaps(root)
