"""Branch and bound: the cheapest deployment that serves the traffic within the SLOs.

A replica configuration (a *candidate*) has a capacity: the highest arrival rate it serves
within every SLO. Serving ``rate`` takes ``ceil(rate / capacity)`` replicas of it, within the
GPU budget; the plan is the cheapest such deployment. Every candidate carries an upper bound on
its capacity from the step model (``simulator.serving.bounds``), hence a lower bound on its cost,
``ceil(rate / bound)`` replicas. ``cheapest`` visits (candidate, replicas) pairs in order of cost
and asks one simulation each: does one replica serve ``rate / replicas``? A yes confirms that
deployment; a no raises the pair to one more replica. The first confirmed pair is the cheapest
(every pair not yet visited costs at least as much), so the search stops there, having
simulated only what its bounds could not rule out.

**Ties.** Many candidates may cost the same. Among them the plan is the one with the most
capacity (headroom): each further candidate at that cost is asked one question, "do you serve
the next grid rate above the best capacity so far?", and only a yes is worth a bisection.
Candidates whose bound is below the best capacity are ruled out without a simulation; at most
``TIE_PROBES`` simulations go to ties, so the answer is the cheapest for certain and the
roomiest of those it examined.

**No rate** (offline or closed-loop traffic: "as much as these GPUs can serve"):
``most_capacity`` fills the budget with ``budget // gpus_per_replica`` replicas of each
candidate and maximizes the total capacity, visiting candidates in order of their bound and
stopping when no bound beats the best capacity found.

``exhaustive=True`` visits every candidate with no bound (every replica count from one, every
capacity from far above the bound): the reference the benchmark holds the default against.
"""

from __future__ import annotations

import heapq
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from simulator.serving.capacity import grid_index, grid_rate, highest_rate

__all__ = ["Choice", "Outcome", "cheapest", "most_capacity", "TIE_PROBES"]

TIE_PROBES = 16  # simulations spent looking for more headroom at the cheapest cost
PREFETCH = 8  # probes queued ahead for helper processes (tune worker)
# The exhaustive reference brackets capacities this far around the bound, so that a bound that
# is wrong shows up as a capacity above it instead of being assumed.
_EXHAUSTIVE_SPAN = 10.0


@dataclass(frozen=True)
class Choice:
    """A deployment: ``replicas`` of ``candidate``, and the capacity of one replica (req/s on
    the rate grid; None when not measured)."""

    candidate: Any
    replicas: int
    capacity: float | None = None

    @property
    def cost(self) -> float:
        return self.candidate.cost(self.replicas)

    @property
    def gpus(self) -> int:
        return self.replicas * self.candidate.gpus

    @property
    def total_capacity(self) -> float:
        return self.replicas * (self.capacity or 0.0)


@dataclass
class Outcome:
    """What the search found and what it cost."""

    mode: str  # "rate" (cheapest for a rate) or "capacity" (most capacity for the budget)
    rate: float | None
    best: Choice | None = None
    confirmed: list[Choice] = field(default_factory=list)  # every deployment that served
    visited: set[int] = field(default_factory=set)  # candidates asked at least once
    refuted: dict[int, int] = field(default_factory=dict)  # candidate -> replicas too few
    inadmissible: dict[int, str] = field(default_factory=dict)  # cannot launch: why
    ruled_out_by_bound: int = 0  # candidates never asked: their bound could not win
    tie_probes: int = 0
    proven: bool = True  # False when stopped by a budget of simulations or time
    stopped: str | None = None


def cheapest(
    table: Any,
    prober: Callable[..., Any],
    *,
    rate: float,
    budget: int,
    admissible: Callable[[Any], str | None] = lambda c: None,
    exhaustive: bool = False,
    tie_capacity: bool = True,
    max_simulations: int | None = None,
    deadline_s: float | None = None,
    on_progress: Callable[[Outcome, float], None] | None = None,
) -> Outcome:
    """The cheapest deployment serving ``rate`` requests/s on at most ``budget`` GPUs (module
    docstring). ``prober(candidate, rate, replicas=, kind=)`` answers one probe."""
    out = Outcome(mode="rate", rate=rate)
    stop = _Stop(prober, max_simulations, deadline_s)
    if exhaustive:
        return _every_deployment(out, table, prober, budget, admissible, tie_capacity, stop)
    heap: list[tuple] = []

    def push(candidate: Any, replicas: int) -> None:
        if replicas * candidate.gpus <= budget:
            bound = replicas * candidate.rate_bound
            heapq.heappush(heap, (candidate.cost(replicas), -bound, candidate.point.risk_rank,
                                  candidate.index, replicas))  # fmt: skip

    for candidate in table.candidates:
        push(candidate, max(1, math.ceil(rate / candidate.rate_bound - 1e-9)))
    while heap:
        cost, _, _, index, replicas = heapq.heappop(heap)
        candidate = table.candidates[index]
        if out.best is not None and cost > out.best.cost * (1 + 1e-12):
            break
        if stop.now(out):
            break
        if on_progress is not None:
            on_progress(out, cost)
        if out.best is not None:  # a tie: worth a simulation only if it could be roomier
            if out.tie_probes >= TIE_PROBES:
                break
            _try_tie(out, candidate, replicas, prober, admissible)
            continue
        if getattr(prober, "parallel", False):  # helpers start on what comes next
            ahead = heapq.nsmallest(PREFETCH, heap)
            prober.prefetch(  # type: ignore[attr-defined]
                [(table.candidates[e[3]], rate / e[4], e[4], "deployment") for e in ahead]
            )
        out.visited.add(index)
        result = prober(candidate, rate / replicas, replicas=replicas)
        if not result.meets:
            out.refuted[index] = replicas
            push(candidate, replicas + 1)
            continue
        reason = admissible(candidate)
        if reason is not None:
            out.inadmissible[index] = reason
            continue
        capacity = _capacity(candidate, prober, rate / replicas, replicas)
        out.best = Choice(candidate, replicas, capacity if tie_capacity else None)
        out.confirmed.append(out.best)
    out.ruled_out_by_bound = len(table.candidates) - len(out.visited)
    return out


def _every_deployment(out: Outcome, table: Any, prober, budget: int, admissible,
                      tie_capacity: bool, stop: _Stop) -> Outcome:  # fmt: skip
    """The reference: every candidate at one replica, two, ... until it serves the rate; then
    the cheapest, and among those the roomiest (``tie_capacity``) or the first in the default
    search's order."""
    assert out.rate is not None
    prober_prefetch = getattr(prober, "prefetch", None)
    if prober_prefetch is not None and getattr(prober, "parallel", False):
        prober_prefetch([(c, out.rate, 1, "deployment") for c in table.candidates])
    for candidate in table.candidates:
        for replicas in range(1, budget // candidate.gpus + 1):
            if stop.now(out):
                return out
            out.visited.add(candidate.index)
            if prober(candidate, out.rate / replicas, replicas=replicas).meets:
                reason = admissible(candidate)
                if reason is None:
                    out.confirmed.append(Choice(candidate, replicas))
                else:
                    out.inadmissible[candidate.index] = reason
                break
            out.refuted[candidate.index] = replicas
    if not out.confirmed:
        return out
    least = min(choice.cost for choice in out.confirmed)
    ties = sorted(
        (choice for choice in out.confirmed if choice.cost <= least * (1 + 1e-12)),
        key=lambda ch: (-ch.replicas * ch.candidate.rate_bound, ch.candidate.point.risk_rank,
                        ch.candidate.index),
    )  # fmt: skip
    if not tie_capacity:
        out.best = ties[0]
        return out
    capacities = _capacities(
        [(c.candidate, out.rate / c.replicas, c.replicas) for c in ties], prober
    )
    for choice, capacity in zip(ties, capacities, strict=True):
        measured = Choice(choice.candidate, choice.replicas, capacity)
        if out.best is None or measured.total_capacity > out.best.total_capacity:
            out.best = measured
    return out


def _capacities(jobs: list[tuple[Any, float, int]], prober) -> list[float | None]:
    """Capacities of many candidates from rates they serve, bisected in lockstep so that each
    round's probes can run side by side (``prefetch``); up to ``_EXHAUSTIVE_SPAN`` x bound."""
    brackets = []
    for candidate, served, _ in jobs:
        below = grid_index(served)
        above = grid_index(candidate.rate_bound * _EXHAUSTIVE_SPAN) + 1
        brackets.append([below, max(above, below + 1)])
    while True:
        asks = [(i, (b + a) // 2) for i, (b, a) in enumerate(brackets) if a - b > 1]
        if not asks:
            break
        if getattr(prober, "parallel", False):
            prober.prefetch([(jobs[i][0], grid_rate(m), jobs[i][2], "capacity") for i, m in asks])
        for i, middle in asks:
            candidate, _, replicas = jobs[i]
            if prober(candidate, grid_rate(middle), replicas=replicas, kind="capacity").meets:
                brackets[i][0] = middle
            else:
                brackets[i][1] = middle
    return [grid_rate(below) for below, _ in brackets]


def _try_tie(out: Outcome, candidate: Any, replicas: int, prober, admissible) -> None:
    """Ask a candidate at the best cost whether it has more capacity than the best."""
    assert out.best is not None and out.rate is not None
    need = max(out.best.total_capacity / replicas, out.rate / replicas)
    ask = grid_rate(grid_index(need) + 1)  # the next grid rate: strictly more capacity
    if ask > candidate.rate_bound:
        return  # its bound says it cannot
    out.visited.add(candidate.index)
    before = getattr(prober, "simulations", 0)
    meets = prober(candidate, ask, replicas=replicas, kind="capacity").meets
    out.tie_probes += int(getattr(prober, "simulations", 0) > before)
    if not meets or admissible(candidate) is not None:
        return
    capacity = _capacity(candidate, prober, ask, replicas)
    if capacity is not None and replicas * capacity > out.best.total_capacity:
        out.best = Choice(candidate, replicas, capacity)
        out.confirmed.append(out.best)


def _capacity(candidate: Any, prober, served: float, replicas: int,
              span: float = 1.0) -> float | None:  # fmt: skip
    """The candidate's capacity on the rate grid, from a rate it is known to serve, below
    ``span`` times its bound."""
    found, _ = highest_rate(
        lambda r: prober(candidate, r, replicas=replicas, kind="capacity").meets,
        low=served,
        high=_above(candidate.rate_bound * span),
        low_served=True,
    )
    return found


def _above(bound: float) -> float:
    """The first grid rate past a bound (a replica may serve its bound, not more)."""
    return grid_rate(grid_index(bound) + 1)


def most_capacity(
    table: Any,
    prober: Callable[..., Any],
    *,
    budget: int,
    admissible: Callable[[Any], str | None] = lambda c: None,
    exhaustive: bool = False,
    max_simulations: int | None = None,
    deadline_s: float | None = None,
    on_progress: Callable[[Outcome, float], None] | None = None,
) -> Outcome:
    """The deployment of ``budget // gpus`` replicas with the most capacity (module docstring)."""
    out = Outcome(mode="capacity", rate=None)
    stop = _Stop(prober, max_simulations, deadline_s)

    def replicas(c: Any) -> int:
        return budget // c.gpus

    span = _EXHAUSTIVE_SPAN if exhaustive else 1.0
    order = sorted(
        (c for c in table.candidates if replicas(c) >= 1),
        key=lambda c: (-replicas(c) * c.rate_bound, c.point.risk_rank, c.index),
    )
    for candidate in order:
        n = replicas(candidate)
        best_total = out.best.total_capacity if out.best else 0.0
        if not exhaustive and out.best is not None and n * candidate.rate_bound <= best_total:
            break
        if stop.now(out):
            break
        if on_progress is not None:
            on_progress(out, n * candidate.rate_bound)
        if exhaustive or out.best is None:
            low = candidate.rate_bound * span / 1000
        else:
            low = grid_rate(grid_index(best_total / n) + 1)
            if low > candidate.rate_bound:
                continue
        out.visited.add(candidate.index)

        def meets_at(rate: float, c: Any = candidate, n: int = n) -> bool:
            return bool(prober(c, rate, replicas=n, kind="capacity").meets)

        capacity, _ = highest_rate(meets_at, low=low, high=_above(candidate.rate_bound * span))
        if capacity is None:
            continue
        reason = admissible(candidate)
        if reason is not None:
            out.inadmissible[candidate.index] = reason
            continue
        choice = Choice(candidate, n, capacity)
        out.confirmed.append(choice)
        if out.best is None or _roomier(choice, out.best):
            out.best = choice
    out.ruled_out_by_bound = len(table.candidates) - len(out.visited)
    return out


def _roomier(a: Choice, b: Choice) -> bool:
    """More total capacity; at equal capacity, fewer GPUs."""
    if a.total_capacity != b.total_capacity:
        return a.total_capacity > b.total_capacity
    return a.gpus < b.gpus


class _Stop:
    """A budget of simulations and of wall time; the outcome is then not proven."""

    def __init__(self, prober: Any, max_simulations: int | None, deadline_s: float | None):
        self.prober, self.max_simulations = prober, max_simulations
        self.deadline = None if deadline_s is None else time.monotonic() + deadline_s

    def now(self, out: Outcome) -> bool:
        simulations = getattr(self.prober, "simulations", 0)
        if self.max_simulations is not None and simulations >= self.max_simulations:
            out.proven, out.stopped = False, f"stopped after {simulations} simulations"
            return True
        if self.deadline is not None and time.monotonic() >= self.deadline:
            out.proven, out.stopped = False, "stopped at the time limit"
            return True
        return False
