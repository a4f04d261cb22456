"""How well a calibrated model predicts measured steps: the fidelity table.

``fidelity_table`` joins predictions with measurements (``executor.bench`` records) on (phase,
weights, tp, batch, prompt, context) and reports the relative error of each point and the median
absolute relative error; ``format_fidelity`` writes it as Markdown (the ``fidelity.md`` files
beside the measurements under ``studies/``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simulator.results import relative_error

__all__ = ["FidelityRow", "FidelityTable", "fidelity_table", "format_fidelity"]


@dataclass(frozen=True)
class FidelityRow:
    phase: str
    weights: str
    tp: int
    batch: int
    prompt: int | None
    context: int | None
    predicted_s: float
    measured_s: float

    @property
    def relative_error(self) -> float:
        return relative_error(self.predicted_s, self.measured_s)


@dataclass
class FidelityTable:
    hardware: str
    rows: list[FidelityRow] = field(default_factory=list)
    infeasible: list[dict[str, Any]] = field(default_factory=list)

    @property
    def errors(self) -> np.ndarray:
        return np.array([row.relative_error for row in self.rows], dtype=float)

    @property
    def median_abs_error(self) -> float:
        return float(np.median(np.abs(self.errors))) if self.rows else float("nan")

    def step_error(self) -> dict[str, tuple[float, float]]:
        """Per phase, the 10th and 90th percentile of the relative error: what
        ``Efficiency.step_error`` records and the plans' SLO bands read."""
        out = {}
        for phase in ("prefill", "decode"):
            errors = [row.relative_error for row in self.rows if row.phase == phase]
            if errors:
                low, high = np.percentile(np.asarray(errors, dtype=float), [10, 90])
                out[phase] = (float(low), float(high))
        return out

    def as_dict(self) -> dict[str, Any]:
        return {
            "hardware": self.hardware,
            "median_abs_relative_error": self.median_abs_error,
            "points": len(self.rows),
            "rows": [{**row.__dict__, "relative_error": row.relative_error} for row in self.rows],
            "infeasible": self.infeasible,
        }


def fidelity_table(
    measured: list[dict[str, Any]], predict_step: Any, *, hardware: str
) -> FidelityTable:
    """Join measured step times with ``predict_step(record) -> seconds | None``.

    ``record`` is one measured point (phase, weights, tp, batch, prompt, context); the callable
    returns the predicted prefill time or decode step time (None: not predictable, skipped).
    Points measured as out of memory are listed apart.
    """
    table = FidelityTable(hardware=hardware)
    for record in measured:
        if not record.get("fits"):
            table.infeasible.append(
                {
                    k: record.get(k)
                    for k in ("phase", "weights", "tp", "batch", "prompt", "context", "reason")
                }
            )
            continue
        predicted = predict_step(record)
        if predicted is None or not np.isfinite(predicted):
            continue
        table.rows.append(
            FidelityRow(
                phase=record["phase"],
                weights=record["weights"],
                tp=int(record["tp"]),
                batch=int(record["batch"]),
                prompt=record.get("prompt"),
                context=record.get("context"),
                predicted_s=float(predicted),
                measured_s=float(record["time_s"]),
            )
        )
    return table


def format_fidelity(table: FidelityTable) -> str:
    """A Markdown table: one row per point, then the median absolute error."""
    lines = [
        f"Fidelity on {table.hardware}: predicted vs measured step time",
        "",
        "| phase | weights | tp | batch | prompt | context | predicted ms | measured ms | error |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.rows:
        lines.append(
            f"| {row.phase} | {row.weights} | {row.tp} | {row.batch} | {row.prompt or ''} | "
            f"{row.context or ''} | {row.predicted_s * 1e3:.3f} | {row.measured_s * 1e3:.3f} | "
            f"{row.relative_error:+.1%} |"
        )
    lines += [
        "",
        f"Median absolute relative error: {table.median_abs_error:.1%} over "
        f"{len(table.rows)} points; {len(table.infeasible)} points out of memory.",
    ]
    return "\n".join(lines)
