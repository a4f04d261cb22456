"""Capacity: the highest arrival rate at which a deployment still meets its SLOs.

Latency percentiles grow with the arrival rate (queues lengthen, batches grow and every step
slows), so "meets the SLOs and is not overloaded" holds below some rate and fails above it.

**Rates on a grid.** Capacities are multiples of ``RATE_STEP`` (2 %) on a log grid: a capacity is
the highest grid rate that meets the SLOs. Two configurations then compare exactly (equal, or one
grid step apart), whichever search brackets them, and a search that asks "can this configuration
beat that one?" asks the simulation about one grid rate. ``highest_rate`` bisects the grid
between a rate known to be served and one known not to be, given any "meets at rate r" test.

``find_capacity`` brackets one deployment:

1. The ceiling is the offline throughput (every request queued at once) unless the caller knows
   a better one (a capacity bound, ``bounds.py``): no arrival rate at or above what the engine
   completes flat out can be served without the queue growing, so the search stays below it.
2. The floor (default 1 % of the ceiling) must meet the SLOs; if it does not, no rate does (the
   SLO asks for less than one request's own prefill or decode time) and the answer is rate 0
   with the reason. A caller-given floor that fails says only that the capacity is below it.
3. Bisection on the grid between the two.

Every probe uses the same seed, and the workload draws its arrival gaps for a unit rate, so the
probes see the same requests compressed in time: the outcome changes with the rate only. A run
starts empty, so a short one hides how long queues get near saturation: the answer is only as
steady as the run is long (a thousand requests or more for a stable rate).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from ..cost.step import StepModel
from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec
from ..data.workload import Workload
from ..results import Prediction
from ..units import format_seconds
from .simulate import Router, ServingResult, simulate

__all__ = [
    "CapacityResult",
    "RATE_STEP",
    "find_capacity",
    "grid_index",
    "grid_rate",
    "highest_rate",
    "meets",
    "at_rate",
]

RATE_STEP = 1.02


def grid_index(rate: float) -> int:
    """The index of the highest grid rate at or below ``rate`` (> 0)."""
    return math.floor(math.log(rate) / math.log(RATE_STEP) + 1e-9)


def grid_rate(index: int) -> float:
    return float(RATE_STEP**index)


def highest_rate(
    meets_at: Callable[[float], bool], *, low: float, high: float, low_served: bool = False
) -> tuple[float | None, int]:
    """(the highest grid rate in ``[low, high)`` where ``meets_at`` holds, probes asked).

    ``high`` is known not to be served; ``low`` (rounded down to the grid) is asked first
    unless ``low_served`` says it is known to be, and None comes back when it fails. Assumes
    that a rate below one that is served is served."""
    below, above = grid_index(low), grid_index(high)
    if grid_rate(above) < high * (1 - 1e-9):
        above += 1  # the first grid rate at or above ``high``: not served
    if below >= above:
        return (grid_rate(below) if low_served else None), 0
    asked = 0 if low_served else 1
    if not low_served and not meets_at(grid_rate(below)):
        return None, asked
    while above - below > 1:
        middle = (below + above) // 2
        asked += 1
        if meets_at(grid_rate(middle)):
            below = middle
        else:
            above = middle
    return grid_rate(below), asked


@dataclass(frozen=True)
class CapacityResult:
    """``rate`` in requests/s (0 when no rate meets the SLOs, with ``reason``) and the
    prediction at that rate (None when infeasible)."""

    rate: float
    prediction: Prediction | None
    reason: str | None = None
    unfit: str | None = None  # the configuration cannot run at all: ``Prediction.unfit``
    probes: tuple[tuple[float, bool], ...] = ()  # (rate, met) of every simulation
    max_throughput_rps: float = 0.0  # the ceiling: offline throughput, or the caller's bound
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
    router: Router = "least_outstanding",
    ceiling: float | None = None,
    floor: float | None = None,
) -> CapacityResult:
    """Highest grid rate meeting ``slos`` (default: the workload's); see the module docstring.
    ``ceiling``: a rate known not to be served (default: the offline throughput, simulated);
    ``floor``: the first rate to try (default 1 % of the ceiling)."""
    slos = tuple(slos) or workload.slos
    if workload.arrival.process == "closed":
        from ..errors import WorkloadError

        raise WorkloadError("capacity needs open-loop arrivals (a rate), not closed-loop users")
    step = StepModel.build(model, hardware, config)
    probes: list[tuple[float, bool]] = []
    results: dict[float, ServingResult] = {}

    def simulate_at(rate: float | None) -> ServingResult:
        """One run: open loop at ``rate``, or offline (every request at once) for None."""
        if rate is None:
            offline = workload.arrival.model_copy(
                update={"process": "offline", "rate_per_s": None}
            )
            load = workload.model_copy(update={"arrival": offline})
        else:
            load = at_rate(workload, rate)
        return simulate(
            model, hardware, config, load, seed=seed, slos=slos, step_model=step, router=router
        )

    if ceiling is None:
        offline = simulate_at(None)
        if not offline.prediction.fits:
            unfit = offline.prediction
            return CapacityResult(
                rate=0.0, prediction=None, reason=unfit.reason, unfit=unfit.unfit
            )
        ceiling = float(offline.prediction.requests_per_s or 0.0)
    if ceiling <= 0:
        return CapacityResult(rate=0.0, prediction=None, reason="the engine completes nothing")
    low = 0.01 * ceiling if floor is None else min(floor, ceiling)

    def meets_at(rate: float) -> bool:
        result = simulate_at(rate)
        results[rate] = result
        probes.append((rate, meets(result)))
        return probes[-1][1]

    rate, _ = highest_rate(meets_at, low=low, high=ceiling)
    if rate is None:
        first = next(iter(results.values()), None)
        if first is not None and not first.prediction.fits:
            return CapacityResult(rate=0.0, prediction=None, reason=first.prediction.reason,
                                  unfit=first.prediction.unfit)  # fmt: skip
        if floor is not None:
            reason = f"below {low:.3g} req/s"
        else:
            failed = [c for c in first.slo_checks if not c.met] if first else []
            detail = (
                "; ".join(
                    f"{c.slo.name} = {format_seconds(c.value_s)} > {format_seconds(c.slo.target_s)}"
                    for c in failed
                )
                or "the queue keeps growing"
            )
            reason = f"no arrival rate meets the SLOs: even at {low:.3g} req/s {detail}"
        return CapacityResult(
            rate=0.0, prediction=None, reason=reason, probes=tuple(probes),
            max_throughput_rps=ceiling,
        )  # fmt: skip
    best = results[rate]
    return CapacityResult(
        rate=rate,
        prediction=best.prediction,
        probes=tuple(probes),
        max_throughput_rps=ceiling,
        result=best,
    )
