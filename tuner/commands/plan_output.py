"""What ``tune plan`` shows: a progress bar (or, in a log, a line every few seconds) while it
searches, and the one screen printed at the end.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from tuner.safe_text import command_line

__all__ = ["PROGRESS_EVERY_S", "progress_reporter", "summary"]


def summary(plan: Any, search: Any, out_dir: Path, files: list) -> str:
    """The one screen printed at the end: the plan, its predictions, where the files are."""
    from tuner.report_tables import summary_rows
    from tuner.textfmt import key_values

    stats, prov = plan.search["bound"], plan.provenance
    traffic = (
        f"{plan.workload.rate_requests_per_s:g} req/s of {plan.workload.name} traffic"
        if plan.workload.rate_requests_per_s
        else f"{plan.workload.name} traffic, as much as the budget serves"
    )
    head = (
        f"tune plan: {plan.model} on up to {plan.gpu_budget} x {plan.hardware}, {traffic}; "
        f"{prov.evaluations} simulations ({stats['simulated_candidates']} of "
        f"{stats['candidates']} candidates simulated, {stats['ruled_out_by_bound']} ruled out "
        f"by bound) in {prov.wall_s:.1f} s"
        + ("" if stats["proven"] else f"; not proven optimal ({stats['stopped']})")
    )
    rows = list(summary_rows(plan))
    for s in plan.slos:
        rows.append(
            (
                s.name,
                f"{s.predicted_s * 1e3:,.1f} ms predicted vs "
                f"{s.target_s * 1e3:,.0f} ms target ({'met' if s.met else 'MISSED'})",
            )
        )
    m = plan.memory
    rows.append(
        (
            "memory per GPU",
            f"weights {m.weights_bytes / 1e9:.1f} GB, KV cache "
            f"{m.kv_cache_bytes / 1e9:.1f} GB ({m.kv_tokens:,.0f} tokens),"
            f" budget {m.budget_bytes / 1e9:.1f} GB",
        )
    )
    names = sorted({str(f.relative_to(out_dir)) for f in files if f.parent == out_dir})
    return "\n".join(
        [
            head,
            key_values(rows, title="best plan:"),
            f"files in {out_dir}/: {', '.join(names)}",
            f"regenerate the report: {command_line(['tune', 'report', out_dir])}",
        ]
    )


PROGRESS_EVERY_S = 5.0  # without a terminal, a progress line this often


def progress_reporter(search: Any, *, quiet: bool):
    """A callback the search calls before each step: (outcome, the cost or bound it tests);
    (None, None) closes the bar. On a terminal a bar; in a log, a line every few seconds."""
    from tqdm import tqdm

    terminal = sys.stderr.isatty()
    bar = tqdm(
        total=len(search.table),
        desc="candidates",
        unit="cand",
        file=sys.stderr,
        leave=False,
        disable=quiet or not terminal,
        dynamic_ncols=True,
    )
    unit, started, last = search.table.unit, time.monotonic(), [time.monotonic()]

    def describe(outcome: Any, level: float | None) -> str:
        best = outcome.best
        if outcome.mode == "rate":
            text = f"testing {level:g} {unit}" if level is not None else ""
            return text + (f", best {best.cost:g} {unit}" if best is not None else "")
        return "" if best is None else f"best {best.total_capacity:.2f} req/s"

    def update(outcome: Any, level: float | None) -> None:
        if outcome is None:
            bar.close()
            return
        if terminal:
            bar.update(len(outcome.visited) - bar.n)
            bar.set_postfix_str(describe(outcome, level), refresh=False)
        elif not quiet and time.monotonic() - last[0] >= PROGRESS_EVERY_S:
            last[0] = time.monotonic()
            print(f"tune plan: {time.monotonic() - started:.0f} s, {len(outcome.visited)} of "
                  f"{len(search.table)} candidates simulated; {describe(outcome, level)}",
                  file=sys.stderr, flush=True)  # fmt: skip

    return update
