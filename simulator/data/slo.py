"""Service-level objectives: a percentile of a latency metric under a target, and goodput.

An SLO reads ``ttft_p99=2s``: the 99th percentile of time to first token, over the requests of
a run, must be at most 2 s. Metrics:

- ``ttft``: first token time - arrival (queueing + prefill);
- ``tpot``: (finish - first token) / (output tokens - 1), per request;
- ``itl``: every gap between two token emissions of a request (a step that emits several
  speculative tokens at once is one gap);
- ``e2e``: finish - arrival.

Goodput (as DistServe defines it) is the rate of requests that met *every* SLO on their own:
a request counts when its TTFT, TPOT and E2E are each within the target of that metric. ITL has
no per-request value here (its gaps are kept as one pool), so an ITL SLO is checked only on the
pooled percentile and the per-request check uses TPOT in its place.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from ..errors import WorkloadError
from ..units import format_seconds, parse_duration

__all__ = ["Slo", "SloCheck", "parse_slo", "check_slos", "requests_meeting_slos", "METRICS"]

METRICS = ("ttft", "tpot", "itl", "e2e")
_SLO = re.compile(r"^\s*(ttft|tpot|itl|e2e)_p(\d+(?:\.\d+)?)\s*(?:=|<=|<)\s*(.+?)\s*$", re.I)


class Slo(BaseModel):
    """``percentile`` of ``metric`` must be at most ``target_s``."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: Literal["ttft", "tpot", "itl", "e2e"]
    percentile: float = Field(gt=0, le=100)
    target_s: float = Field(gt=0)

    @property
    def name(self) -> str:
        return f"{self.metric}_p{self.percentile:g}"

    def __str__(self) -> str:
        return f"{self.name} <= {format_seconds(self.target_s)}"


def parse_slo(text: str) -> Slo:
    """``'ttft_p99=2s'`` -> ``Slo('ttft', 99, 2.0)``; ``'tpot_p90=50ms'``; bad text raises
    ``WorkloadError`` with the expected form."""
    match = _SLO.match(str(text))
    if not match:
        raise WorkloadError(
            f"not an SLO: {text!r} (expected METRIC_pPCT=DURATION with METRIC one of "
            f"{', '.join(METRICS)}, e.g. ttft_p99=2s or tpot_p90=50ms)"
        )
    metric, pct, target = match.group(1).lower(), float(match.group(2)), match.group(3)
    if not target.strip() or target.strip()[-1].isdigit():
        # "tpot_p99=50" is 50 ms to one reader and 50 s to another: the unit is required.
        raise WorkloadError(
            f"SLO {text!r}: the target needs a unit (us, ms, s or min), e.g. {text}ms"
        )
    try:
        target_s = parse_duration(target)
    except ValueError as error:
        raise WorkloadError(f"SLO {text!r}: {error}") from None
    if not 0 < pct <= 100:
        raise WorkloadError(f"SLO {text!r}: the percentile must be in (0, 100]")
    if target_s <= 0:
        raise WorkloadError(f"SLO {text!r}: the target must be positive")
    return Slo(metric=metric, percentile=pct, target_s=target_s)


@dataclass(frozen=True)
class SloCheck:
    """One SLO against one run: the achieved percentile and whether it is within target."""

    slo: Slo
    value_s: float
    met: bool

    def as_dict(self) -> dict:
        return {
            "name": self.slo.name,
            "metric": self.slo.metric,
            "percentile": self.slo.percentile,
            "target_s": self.slo.target_s,
            "value_s": self.value_s,
            "met": self.met,
        }


def _metric(samples: dict[str, np.ndarray], metric: str) -> np.ndarray:
    values = np.asarray(samples[metric], dtype=float)
    return values[np.isfinite(values)]


def check_slos(slos, samples: dict[str, np.ndarray]) -> list[SloCheck]:
    """Each SLO's percentile over ``samples[metric]`` (arrays of seconds) against its target.
    A metric with no samples (TPOT when every request has one output token) meets its SLO."""
    checks = []
    for slo in slos:
        values = _metric(samples, slo.metric)
        value = float(np.percentile(values, slo.percentile)) if values.size else 0.0
        checks.append(SloCheck(slo=slo, value_s=value, met=value <= slo.target_s))
    return checks


def requests_meeting_slos(
    slos, *, ttft_s: np.ndarray, tpot_s: np.ndarray, e2e_s: np.ndarray
) -> np.ndarray:
    """Boolean per request: met every SLO's target on its own (NaN TPOT, one output token,
    counts as met). With no SLOs every finished request counts."""
    ok = np.isfinite(e2e_s)
    per_request = {"ttft": ttft_s, "tpot": tpot_s, "itl": tpot_s, "e2e": e2e_s}
    for slo in slos:
        values = per_request[slo.metric]
        ok &= ~(values > slo.target_s)  # NaN compares False: counts as met
    return ok
