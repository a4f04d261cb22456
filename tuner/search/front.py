"""The cost-latency front: what paying for more GPUs would buy in p99 TPOT.

The plan is the cheapest deployment that meets the SLOs; its reader also wants to know what
each step up in cost buys. For each of the next ``LEVELS`` costs above the plan's, the steady
state of the step model (``simulator.serving.bounds.tpot_at``) ranks every deployment of that cost by
its p99 TPOT serving the traffic, and the ``PER_LEVEL`` most promising are simulated: each a
trial of the study, so the report draws the front from the study like every other result.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

__all__ = ["explore_front", "LEVELS", "PER_LEVEL"]

LEVELS = 3
PER_LEVEL = 2


def explore_front(search: Any, outcome: Any, prober: Any) -> int:
    """Simulate the most promising deployments of the next costs above the plan, adding those
    that serve the traffic to ``outcome.confirmed``; returns how many it simulated. Only for a
    search with a rate."""
    from simulator.serving.bounds import Drafter, tpot_at, tpot_floor
    from tuner.search.cheapest import Choice

    if outcome.rate is None or outcome.best is None:
        return 0
    rate, budget, floor = outcome.rate, search.space.gpus, outcome.best.cost
    pairs = []  # (cost, candidate, replicas) above the plan's cost, within the budget
    for candidate in search.table.candidates:
        least = max(1, math.ceil(rate / candidate.rate_bound - 1e-9))
        for replicas in range(least, budget // candidate.gpus + 1):
            cost = candidate.cost(replicas)
            if cost > floor * (1 + 1e-12):
                pairs.append((cost, candidate, replicas))
    levels = sorted({cost for cost, _, _ in pairs})[:LEVELS]
    pairs = [p for p in pairs if p[0] in levels]
    before = prober.simulations
    for hardware in search.space.hardware:
        mine = [p for p in pairs if p[1].point.hardware == hardware.name]
        if not mine:
            continue
        options = sorted({(p[1].point.spec_method, p[1].point.spec_tokens) for p in mine})
        drafters = [Drafter.of(search.space.speculative_option(m, g)) for m, g in options]
        choice = np.array([options.index((p[1].point.spec_method, p[1].point.spec_tokens))
                           for p in mine])  # fmt: skip

        def bound(
            rows: np.ndarray,
            exact: bool,
            mine=mine,
            drafters=drafters,
            choice=choice,
            hardware=hardware,
        ):
            """p99 TPOT of the pairs ``rows`` at their rates (``exact``), or its floor."""
            common = dict(drafters=drafters, drafter=choice[rows])
            configs = search.space.config_arrays([mine[i][1].point.replica_key for i in rows])
            rates = np.array([rate / mine[i][2] for i in rows])
            of = tpot_at if exact else tpot_floor
            return of(search.space.model, hardware, configs, search.shape, rates, **common)

        floors = bound(np.arange(len(mine)), exact=False)
        for level in levels:
            for i in _most_promising(mine, level, floors, bound):
                _, candidate, replicas = mine[i]
                if prober(candidate, rate / replicas, replicas=replicas).meets:
                    outcome.confirmed.append(Choice(candidate, replicas))
    return prober.simulations - before


def _most_promising(mine: list, level: float, floors: np.ndarray, bound) -> list[int]:
    """The ``PER_LEVEL`` pairs of cost ``level`` with the lowest p99 TPOT bound (finite ones
    only). Pairs are bounded exactly in order of their floors, in doubling chunks, until the
    next floor is above the last of the best found: the same pairs as bounding them all."""
    rows = [i for i, p in enumerate(mine) if p[0] == level and np.isfinite(floors[i])]
    rows.sort(key=lambda i: floors[i])
    exact: list[tuple[float, int]] = []
    done, chunk = 0, 16
    while done < len(rows):
        if len(exact) >= PER_LEVEL and exact[PER_LEVEL - 1][0] < floors[rows[done]]:
            break
        batch = np.array(rows[done : done + chunk])
        values = bound(batch, exact=True)
        exact = sorted(
            exact + [(v, i) for v, i in zip(values, batch, strict=True) if np.isfinite(v)]
        )
        done, chunk = done + len(batch), chunk * 2
    return [int(i) for _, i in exact[:PER_LEVEL]]
