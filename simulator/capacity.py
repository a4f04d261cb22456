"""Capacity: the highest arrival rate at which a deployment still meets its SLOs.

Latency percentiles grow with the arrival rate (queues lengthen, batches grow and every step
slows), so "meets the SLOs and is not overloaded" holds below some rate and fails above it.
``find_capacity`` brackets that rate and bisects it:

1. The ceiling is the offline throughput (every request queued at once): no arrival rate at
   or above what the engine completes flat out can be served without the queue growing.
2. A light load (1 % of the ceiling) must meet the SLOs; if it does not, no rate does (the SLO
   asks for less than one request's own prefill or decode time) and the answer is rate 0 with
   the reason.
3. Bisection between the two until the bracket is within ``tolerance`` (relative).

Every probe uses the same seed, and the workload draws its arrival gaps for a unit rate, so the
probes see the same requests compressed in time: the outcome changes with the rate only. A run
starts empty, so a short one hides how long queues get near saturation: the answer is only as
steady as the run is long (a thousand requests or more for a stable rate).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from .results import Prediction
from .serving import Router, ServingResult, simulate
from .specs import DeploymentConfig, HardwareSpec, ModelSpec
from .step import StepModel
from .units import format_seconds
from .workload import Workload

__all__ = ["CapacityResult", "find_capacity", "meets", "at_rate"]


@dataclass(frozen=True)
class CapacityResult:
    """``rate`` in requests/s (0 when no rate meets the SLOs, with ``reason``) and the
    prediction at that rate (None when infeasible)."""

    rate: float
    prediction: Prediction | None
    reason: str | None = None
    probes: tuple[tuple[float, bool], ...] = ()  # (rate, met) of every simulation
    max_throughput_rps: float = 0.0  # offline ceiling
    result: ServingResult | None = None  # the simulation at ``rate``

    @property
    def feasible(self) -> bool:
        return self.rate > 0


def meets(result: ServingResult) -> bool:
    """All SLO checks met and the queue did not grow."""
    return (
        result.prediction.fits
        and not result.overloaded
        and all(check.met for check in result.slo_checks)
    )


def at_rate(workload: Workload, rate: float) -> Workload:
    """``workload`` with open-loop arrivals at ``rate`` (offline becomes Poisson)."""
    arrival = workload.arrival
    process = arrival.process if arrival.process in ("poisson", "gamma", "trace") else "poisson"
    return workload.model_copy(
        update={"arrival": arrival.model_copy(update={"process": process, "rate_per_s": rate})}
    )


def find_capacity(
    model: ModelSpec,
    hardware: HardwareSpec,
    config: DeploymentConfig,
    workload: Workload,
    slos=(),
    *,
    seed: int | None = None,
    tolerance: float = 0.02,
    max_probes: int = 16,
    router: Router = "least_outstanding",
) -> CapacityResult:
    """Highest rate meeting ``slos`` (default: the workload's); see the module docstring."""
    slos = tuple(slos) or workload.slos
    if workload.arrival.process == "closed":
        from .errors import WorkloadError

        raise WorkloadError("capacity needs open-loop arrivals (a rate), not closed-loop users")
    step = StepModel.build(model, hardware, config)
    offline = workload.model_copy(
        update={
            "arrival": workload.arrival.model_copy(
                update={"process": "offline", "rate_per_s": None}
            )
        }
    )
    ceiling_result = simulate(
        model, hardware, config, offline, seed=seed, slos=slos, step_model=step, router=router
    )
    if not ceiling_result.prediction.fits:
        return CapacityResult(rate=0.0, prediction=None, reason=ceiling_result.prediction.reason)
    ceiling = float(ceiling_result.prediction.requests_per_s or 0.0)
    probes: list[tuple[float, bool]] = []

    def probe(rate: float) -> ServingResult:
        result = simulate(
            model,
            hardware,
            config,
            at_rate(workload, rate),
            seed=seed,
            slos=slos,
            step_model=step,
            router=router,
        )
        probes.append((rate, meets(result)))
        return result

    low_rate = ceiling * 0.01
    low = probe(low_rate)
    if not meets(low):
        failed = [c for c in low.slo_checks if not c.met]
        detail = "; ".join(
            f"{c.slo.name} = {format_seconds(c.value_s)} > {format_seconds(c.slo.target_s)}"
            for c in failed
        )
        return CapacityResult(
            rate=0.0,
            prediction=None,
            probes=tuple(probes),
            max_throughput_rps=ceiling,
            reason=f"no arrival rate meets the SLOs: even at {low_rate:.3g} req/s {detail}",
        )
    # The ceiling itself is never sustainable (at utilization 1 the queue grows without
    # bound, however short a run may hide it): search strictly below it.
    best_rate, best = low_rate, low
    high_rate = ceiling
    while len(probes) < max_probes and high_rate - best_rate > tolerance * best_rate:
        mid = math.sqrt(best_rate * high_rate)  # the bracket spans decades at first
        result = probe(mid)
        if meets(result):
            best_rate, best = mid, result
        else:
            high_rate = mid
    return CapacityResult(
        rate=best_rate,
        prediction=best.prediction,
        probes=tuple(probes),
        max_throughput_rps=ceiling,
        result=best,
    )
