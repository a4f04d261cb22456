"""The error band every prediction carries: how far this GPU's calibrated step times fell from
measured ones.

A calibrated GPU profile records the 10th and 90th percentile of ``(predicted - measured) /
measured`` over its measured steps, per phase (``Efficiency.step_error``). If a deployment's
steps err the same way, a time built of those steps scales by ``1 / (1 + error)``: TTFT is made
of prefill steps; TPOT, ITL and end-to-end latency mostly of decode steps. The band says that
and no more: it does not cover traffic that differs from the workload, or queueing that a step
error compounds. A profile with no measured residuals gives no band (not a made-up one).
"""

from __future__ import annotations

from ..data.specs import HardwareSpec

__all__ = ["band", "band_source", "bands_of", "PHASE_OF"]

# Which step phase each metric is built of.
PHASE_OF = {
    "ttft": "prefill",
    "prefill": "prefill",
    "tpot": "decode",
    "itl": "decode",
    "e2e": "decode",
    "decode": "decode",
}


def band(hardware: HardwareSpec, metric: str, value_s: float) -> tuple[float, float] | None:
    """(low, high) seconds around a predicted ``value_s`` of ``metric`` (ttft, tpot, itl, e2e,
    prefill or decode), or None when the profile has no residuals for that phase."""
    errors = hardware.efficiency.step_error.get(PHASE_OF.get(metric, ""))
    if not errors:
        return None
    low_error, high_error = errors
    return value_s / (1.0 + high_error), value_s / (1.0 + low_error)


def bands_of(hardware: HardwareSpec, values: dict[str, float | None]) -> dict[str, tuple]:
    """The band of each named value whose metric is the name's prefix (``ttft_p99``,
    ``tpot_mean``, ``prefill``...); values without a band are left out."""
    out = {}
    for name, value in values.items():
        found = band(hardware, name.split("_")[0], value) if value else None
        if found is not None:
            out[name] = found
    return out


def band_source(hardware: HardwareSpec, metric: str) -> str | None:
    """Where ``band`` comes from, in words."""
    phase = PHASE_OF.get(metric, "")
    errors = hardware.efficiency.step_error.get(phase)
    if not errors:
        return None
    return (
        f"{phase} step-time residuals of {hardware.name}'s calibration "
        f"(p10 {errors[0]:+.1%}, p90 {errors[1]:+.1%})"
    )
