"""Stopping a search probe's run as soon as it has certainly missed an SLO.

A search asks of most runs only "does this configuration meet the SLOs at this rate?", and most
of them do not: refuting is what a branch-and-bound search spends its simulations on. A run
that misses usually shows it early (a queue that grows, or slow tokens from the start), yet a
full run simulates every request to the end.

The percentile of ``n`` samples (linear interpolation, as ``check_slos`` takes it) at ``p``
percent is at least the sorted sample ``i = floor(p (n - 1) / 100)``, so it is above a target
once ``n - i`` samples are. During a run, some samples are known to be above their target
before the request finishes:

- TTFT ``first - arrival`` of a request still waiting for its first token is at least ``now -
  arrival`` (every later event of the run is at ``now`` or after);
- TPOT ``(finish - first) / (output - 1)`` of a request still decoding is at least ``(now -
  first) / (output - 1)``;
- E2E ``finish - arrival`` of an unfinished request is at least ``now - arrival``.

``MissWatch.check(now)`` counts them; once a percentile SLO has ``n - i`` such samples, the
miss is certain and the run can stop: the full run would report the same miss. Only open-loop
runs over all requests qualify (a steady-state window leaves requests out; a closed loop's
arrivals depend on the run), and ITL SLOs are never stopped on (their gaps are pooled).

The peaks the run reached by then are a lower bound of the full run's, and every candidate of
the schedule group that shares them schedules the same way up to the stop, so it misses too.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..data.slo import Slo, SloCheck
from ..results import Prediction
from ..units import format_seconds
from .results import ServingResult, run_limits

__all__ = ["MissWatch", "CertainMiss", "stopped_result"]


@dataclass(frozen=True)
class CertainMiss:
    """An SLO that a run has certainly missed by ``at_s``: ``late`` samples above the target
    where ``needed`` decide it; the percentile is at least ``at_least_s``."""

    slo: Slo
    late: int
    needed: int
    samples: int
    at_s: float
    at_least_s: float

    def line(self) -> str:
        return (
            f"misses {self.slo.name}: at least {format_seconds(self.at_least_s)} > "
            f"{format_seconds(self.slo.target_s)} ({self.late} of {self.samples} requests past "
            f"it {self.at_s:.0f} s into the run, {self.needed} decide it; stopped there)"
        )


def needed_above(samples: int, percentile: float) -> int:
    """How many of ``samples`` values above a target put their ``percentile`` above it."""
    return samples - math.floor(percentile / 100.0 * (samples - 1))


class MissWatch:
    """Watches one run for a certain SLO miss (module docstring). ``arrival`` is the run's
    array of arrival times (NaN until a request arrives), ``run`` its ``simulate.Run``."""

    def __init__(self, slos: tuple[Slo, ...], arrival: np.ndarray, run) -> None:
        self.arrival, self.run = arrival, run
        self.output = np.asarray(run.output, dtype=float)
        multi = int((self.output > 1).sum())  # the requests that have a TPOT
        self.rules = []  # (SLO, its samples, how many above its target decide it)
        for slo in slos:
            if slo.metric in ("ttft", "tpot", "e2e"):
                samples = multi if slo.metric == "tpot" else len(arrival)
                self.rules.append((slo, samples, needed_above(samples, slo.percentile)))

    def check(self, now: float) -> CertainMiss | None:
        """The first SLO certainly missed with every event before ``now`` simulated."""
        if not self.rules:
            return None
        first = np.asarray(self.run.first_s, dtype=float)
        finish = np.asarray(self.run.finish_s, dtype=float)
        for slo, samples, needed in self.rules:
            low = self._lower_bounds(slo.metric, now, first, finish)
            late = low[low > slo.target_s]
            if late.size >= needed:
                at_least = float(np.partition(late, late.size - needed)[late.size - needed])
                return CertainMiss(slo, int(late.size), needed, samples, now, at_least)
        return None

    def _lower_bounds(
        self, metric: str, now: float, first: np.ndarray, finish: np.ndarray
    ) -> np.ndarray:
        """Each request's known lower bound of ``metric`` at ``now`` (NaN: nothing known)."""
        with np.errstate(invalid="ignore", divide="ignore"):
            if metric == "ttft":
                return np.where(np.isnan(first), now, first) - self.arrival
            if metric == "e2e":
                return np.where(np.isnan(finish), now, finish) - self.arrival
            decoding = np.where(np.isnan(finish), now, finish) - first  # NaN before a first token
            return np.where(self.output > 1, decoding / (self.output - 1), np.nan)


def stopped_result(model, hardware, config, run, engines, miss: CertainMiss) -> ServingResult:
    """A run stopped at a certain SLO miss (``early_stop``): the miss, the limits so far, no
    metrics."""
    check = SloCheck(slo=miss.slo, value_s=miss.at_least_s, met=False)
    prediction = Prediction(
        model=model.name,
        hardware=hardware.name,
        config=config.model_dump(mode="json"),
        fits=True,
        num_gpus=config.num_gpus,
        slos=[check.as_dict()],
        slos_met=False,
        source="rooftune serving simulation, stopped at a certain SLO miss",
    )
    return ServingResult(
        prediction=prediction,
        slo_checks=[check],
        limits=run_limits(config, run, engines),
        stopped=miss.line(),
    )
