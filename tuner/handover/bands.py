"""The uncertainty band a plan puts around each predicted SLO value.

A calibrated GPU profile records how far the calibrated model's step times fell from the
measured ones (``Efficiency.step_error``: the 10th and 90th percentile of
``(predicted - measured) / measured`` per phase). If a deployment's steps err the same way, a
latency built of those steps scales by ``1 / (1 + error)``: TTFT is made of prefill steps,
TPOT, ITL and end-to-end latency mostly of decode steps. The band says so and no more: it does
not cover traffic that differs from the workload, or queueing that the step error compounds.
"""

from __future__ import annotations

from simulator.data.specs import HardwareSpec

__all__ = ["slo_band"]

_PHASE = {"ttft": "prefill", "tpot": "decode", "itl": "decode", "e2e": "decode"}


def slo_band(
    hardware: HardwareSpec, metric: str, predicted_s: float
) -> tuple[tuple[float, float] | None, str | None]:
    """(low, high) seconds around ``predicted_s`` and where the band comes from, or
    (None, None) when the profile has no calibration residuals for that phase."""
    phase = _PHASE.get(metric)
    errors = hardware.efficiency.step_error.get(phase or "")
    if not errors:
        return None, None
    low_error, high_error = errors
    band = (predicted_s / (1.0 + high_error), predicted_s / (1.0 + low_error))
    source = (
        f"{phase} step-time residuals of {hardware.name}'s calibration "
        f"(p10 {low_error:+.1%}, p90 {high_error:+.1%})"
    )
    return band, source
