"""A probe: one serving simulation of one replica configuration at one arrival rate.

Probes are the search's only expense (tens of milliseconds each, against microseconds for a
bound), so ``Prober`` never runs one twice and skips those it can answer from another:

- a probe already run (in this process, or stored in the study by an earlier run or a worker)
  is looked up;
- candidates of one *schedule group* differ only in batching knobs (``max_num_seqs``, the token
  budget, chunked prefill) and so have the same step times. A run that none of those limits
  shaped, whose peaks fit another candidate's limits, is that candidate's run too
  (``EngineLimits.same_schedule``): the answer is shared, not simulated.

A probe *meets* when the run fits, its queue did not grow, and every SLO percentile is within
target. ``Prober`` hands simulations to a ``runner`` (``tuner.search.trials``: in process, recorded as
a trial, or through the study's storage to ``tune worker`` processes).
"""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

from simulator.serving.results import EngineLimits

__all__ = ["ProbeResult", "Prober", "simulate_probe"]


@dataclass(frozen=True)
class ProbeResult:
    """What a probe found: met or not, the metrics, and what limited the run."""

    meets: bool
    metrics: dict[str, float | None] = field(default_factory=dict)
    misses: tuple[str, ...] = ()  # one line per failed check
    limits: EngineLimits = field(default_factory=EngineLimits)
    simulated: bool = True  # False: answered by the run of an equivalent candidate

    @property
    def tpot_p99_s(self) -> float:
        value = self.metrics.get("tpot_p99_s")
        return math.inf if value is None else float(value)


def simulate_probe(
    search: Any, candidate: Any, rate: float, step_model: Any = None
) -> ProbeResult:
    """Run one probe: ``candidate`` (one replica) under the search's workload at ``rate``."""
    from simulator.serving.capacity import at_rate, meets
    from simulator.serving.simulate import simulate
    from simulator.units import format_seconds

    space = search.space
    config = space.to_config(candidate.point)
    result = simulate(
        space.model,
        space.hardware_spec(candidate.point.hardware),
        config,
        at_rate(search.workload, rate),
        seed=search.seed,
        slos=search.slos,
        step_model=step_model,
        stop_on_miss=True,  # a probe only asks whether it meets
    )
    prediction = result.prediction
    metrics: dict[str, float | None] = {}
    for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
        stats = getattr(prediction, name, None)
        for key in ("mean", "p50", "p90", "p99"):
            value = None if stats is None else getattr(stats, key)
            metrics[f"{name[:-2]}_{key}_s"] = _finite(value)
    for check in result.slo_checks:
        metrics[check.slo.name] = _finite(check.value_s)
    for name in ("output_tokens_per_s", "requests_per_s", "goodput_requests_per_s"):
        metrics[name] = _finite(getattr(prediction, name, None))
    metrics["fits"] = float(prediction.fits)
    metrics["overloaded"] = float(result.overloaded)
    metrics["preemptions"] = float(prediction.preemptions or 0)
    metrics["mean_batch"] = _finite(prediction.mean_batch)
    metrics["stopped_early"] = float(result.stopped is not None)
    misses = []
    if result.stopped is not None:
        misses.append(result.stopped)
    elif not prediction.fits:
        misses.append(prediction.reason or "does not fit")
    if result.overloaded:
        misses.append("overloaded: arrivals outpace service and the queue keeps growing")
    misses += [
        f"misses {c.slo.name}: {format_seconds(c.value_s)} > {format_seconds(c.slo.target_s)}"
        for c in result.slo_checks
        if not c.met and result.stopped is None
    ]
    return ProbeResult(
        meets=meets(result), metrics=metrics, misses=tuple(misses), limits=result.limits
    )


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


class Prober:
    """Answers probes of a candidate table: looked up, shared within a schedule group, or
    handed to ``runner.run(candidate, rate, replicas, kind) -> ProbeResult``."""

    def __init__(self, table: Any, runner: Any):
        self.table, self.runner = table, runner
        self.simulations = 0  # run through the runner by this process
        self.shared = 0  # answered by an equivalent candidate's run
        self.stopped_early = 0  # runs ended at a certain SLO miss (simulator.serving.early_stop)
        self._known: dict[tuple[int, float], ProbeResult] = {}
        # (schedule group, rate) -> simulated results of the group at that rate
        self._runs: dict[tuple, list[ProbeResult]] = defaultdict(list)

    def add(self, candidate: Any, rate: float, result: ProbeResult) -> None:
        """A result found elsewhere (an earlier run of the study, a worker)."""
        key = (candidate.index, _rate_key(rate))
        if key not in self._known:
            self._known[key] = result
            if result.simulated:
                self._runs[(candidate.schedule_group, _rate_key(rate))].append(result)

    def known(self, candidate: Any, rate: float) -> ProbeResult | None:
        """The answer without a simulation, when there is one."""
        rate_key = _rate_key(rate)
        hit = self._known.get((candidate.index, rate_key))
        if hit is not None:
            return hit
        for run in self._runs.get((candidate.schedule_group, rate_key), ()):
            if run.limits.same_schedule(
                max_num_seqs=candidate.point.max_num_seqs,
                token_budget=candidate.token_budget,
                kv_blocks=candidate.kv_blocks,
            ):
                shared = ProbeResult(
                    meets=run.meets,
                    metrics=run.metrics,
                    misses=run.misses,
                    limits=run.limits,
                    simulated=False,
                )
                self._known[(candidate.index, rate_key)] = shared
                self.shared += 1
                return shared
        return None

    def __call__(
        self, candidate: Any, rate: float, *, replicas: int = 1, kind: str = "deployment"
    ) -> ProbeResult:
        hit = self.known(candidate, rate)
        if hit is not None:
            return hit
        result = self.runner.run(candidate, rate, replicas, kind)
        self.simulations += 1
        self.stopped_early += int(bool(result.metrics.get("stopped_early")))
        self.add(candidate, rate, result)
        return result

    @property
    def parallel(self) -> bool:
        """Whether other processes may run probes queued ahead (``prefetch``)."""
        return hasattr(self.runner, "prefetch")

    def prefetch(self, requests: list[tuple[Any, float, int, str]]) -> None:
        """Probes likely needed next ``(candidate, rate, replicas, kind)``: a runner with
        helpers queues them, so they run while this process runs its own."""
        if self.parallel:
            wanted = [r for r in requests if self.known(r[0], r[1]) is None]
            if wanted:
                self.runner.prefetch(wanted)


def _rate_key(rate: float) -> float:
    """Rates as keys: equal to 12 significant digits (a rate read back from storage)."""
    return float(f"{rate:.12g}")
