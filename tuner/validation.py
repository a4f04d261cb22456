"""Validate a plan on a GPU: measure the chosen configuration's steps and record the error.

``tune plan`` only predicts. ``tune validate plan.json`` runs the plan's per-replica
configuration through the PyTorch executor at the shapes its traffic produces, and writes what
it measured into the plan's ``validation`` section beside what the model predicted:

- a decode step at the plan's simulated mean batch, with the mean context a running request
  has (mean prompt + half the mean output);
- a prefill of one mean-length prompt.

The executor runs the target model only (bf16 or FP8 W8A8; TP under torchrun), so speculative
decoding and INT8/INT4 schemes are not exercised: the validation says so rather than pretend.
Everything here but the measurement itself is plain Python, so it is tested without a GPU.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from simulator.results import relative_error

__all__ = [
    "ValidationShape",
    "validation_shape",
    "validation_section",
    "validation_summary",
    "VALIDATION_HEAD",
    "AGREEMENT",
]

# A plan whose measured steps are within this of the prediction is marked as agreeing.
AGREEMENT = 0.10


@dataclass(frozen=True)
class ValidationShape:
    batch: int
    prompt: int
    context: int


def validation_shape(plan: Any) -> ValidationShape:
    """The step shapes that stand for the plan's traffic (see the module docstring)."""
    config = plan.config
    mean_batch = plan.predicted.mean_batch or 1.0
    batch = max(1, min(int(round(mean_batch)), config.max_num_seqs))
    prompt = max(1, int(round(plan.workload.mean_prompt_tokens)))
    context = max(
        1, int(round(plan.workload.mean_prompt_tokens + plan.workload.mean_output_tokens / 2))
    )
    return ValidationShape(batch=batch, prompt=prompt, context=context)


def _not_exercised(plan: Any) -> list[str]:
    notes = []
    if plan.speculative is not None:
        notes.append("speculative decoding is not run by the executor: target steps only")
    if plan.config.weight_dtype not in ("bf16", "fp16", "fp8"):
        notes.append(f"{plan.config.weight_dtype} weights are not run by the executor")
    return notes


def validation_section(
    plan: Any, shape: ValidationShape, predicted: Any, measured: Any, *, command: str
) -> dict[str, Any]:
    """The plan's ``validation`` section: each measured phase beside its prediction."""
    points = []
    for phase in ("prefill", "decode"):
        p, m = getattr(predicted, phase), getattr(measured, phase)
        if p is None or m is None:
            continue
        points.append(
            {
                "phase": phase,
                "batch": shape.batch if phase == "decode" else 1,
                "prompt": shape.prompt if phase == "prefill" else None,
                "context": shape.context if phase == "decode" else None,
                "predicted_s": p.time_s,
                "measured_s": m.time_s,
                "relative_error": relative_error(p.time_s, m.time_s),
            }
        )
    errors = [abs(point["relative_error"]) for point in points]
    median = statistics.median(errors) if errors else None
    if not measured.fits:
        status = f"not measured: {measured.reason}"
    elif median is None:
        status = "not measured"
    else:
        status = "agrees" if median <= AGREEMENT else "differs"
    return {
        "status": status,
        "median_abs_relative_error": median,
        "agreement_threshold": AGREEMENT,
        "points": points,
        "machine": dict(getattr(measured, "machine", {}) or {}),
        "notes": _not_exercised(plan),
        "command": command,
        "measured_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


VALIDATION_HEAD = ["phase", "shape", "predicted", "measured", "error"]


def validation_summary(section: dict[str, Any] | None) -> tuple[str, list[list[str]], list[str]]:
    """A plan's ``validation`` section for the report: a one-line summary, a row per measured
    phase (``VALIDATION_HEAD``) and the notes."""
    if not section or "status" not in section:  # none, or measured under traffic only
        summary = (
            "Not measured yet: `tune validate plan.json` on a GPU runs this configuration and "
            "writes what it measured here."
        )
        return summary, [], []
    rows = []
    for point in section.get("points") or []:
        if point["phase"] == "decode":
            shape = f"batch {point['batch']} at context {point['context']:,}"
        else:
            shape = f"one prompt of {point['prompt']:,} tokens"
        rows.append(
            [
                point["phase"],
                shape,
                f"{point['predicted_s'] * 1e3:,.2f} ms",
                f"{point['measured_s'] * 1e3:,.2f} ms",
                f"{100 * point['relative_error']:+.1f}%",
            ]
        )
    machine = section.get("machine") or {}
    median = section.get("median_abs_relative_error")
    error = f"median error {100 * median:.1f}%, " if median is not None else ""
    summary = (
        f"{section['status']} ({error}agreement within "
        f"{100 * section['agreement_threshold']:.0f}%) on "
        f"{machine.get('device_name', 'a GPU')} x {machine.get('device_count', '?')}, "
        f"{section.get('measured_utc', '')}: `{section.get('command', '')}`"
    )
    return summary, rows, list(section.get("notes") or [])
