"""The host's share of a serving iteration, fitted from the serving loop's measurements.

An engine spends time on the host every iteration (scheduling, preparing inputs, copying the
sampled tokens back, streaming them), beside the GPU's work. The simulator prices it as
``step_overhead_s`` per iteration plus ``token_overhead_s`` per token emitted. ``tune validate
--traffic`` measures, for each iteration, its wall time and the GPU's part of it (CUDA events),
so the rest is this overhead; ``fit_host_overhead`` fits the two terms to it by least squares
(never negative), and ``tune calibrate --from PLAN.json`` writes them into the GPU's
calibration.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

__all__ = ["fit_host_overhead", "combine_fits"]


def fit_host_overhead(emitting: Sequence[int], overhead_s: Sequence[float]) -> dict[str, float]:
    """``overhead = per_iteration + per_token x emitting``, both at least 0, over iterations;
    with the fit's spread (``residual_s``, the root mean square) and count."""
    x = np.asarray(emitting, dtype=float)
    y = np.asarray(overhead_s, dtype=float)
    keep = np.isfinite(y)
    x, y = x[keep], y[keep]
    if not len(y):
        raise ValueError("no iteration with a measured overhead")
    per_token = 0.0
    if len(y) > 1 and np.ptp(x) > 0:
        per_token = max(float(np.polyfit(x, y, 1)[0]), 0.0)
    per_iteration = max(float(np.mean(y - per_token * x)), 0.0)
    residual = float(np.sqrt(np.mean((y - per_iteration - per_token * x) ** 2)))
    return {"per_iteration_s": per_iteration, "per_token_s": per_token,
            "residual_s": residual, "iterations": int(len(y))}  # fmt: skip


def combine_fits(fits: Sequence[dict[str, float]]) -> dict[str, float]:
    """Several loads' fits as one, each weighted by its iterations."""
    weights = np.array([f["iterations"] for f in fits], dtype=float)
    if not weights.sum():
        raise ValueError("no fitted iterations")

    def mean(key: str) -> float:
        return float(np.average([f[key] for f in fits], weights=weights))

    return {"per_iteration_s": mean("per_iteration_s"), "per_token_s": mean("per_token_s"),
            "residual_s": mean("residual_s"), "iterations": int(weights.sum())}  # fmt: skip
