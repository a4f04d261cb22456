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
    from simulator.serving.bounds import Drafter, tpot_at
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
        estimate = tpot_at(
            search.space.model,
            hardware,
            search.space.config_arrays([p[1].point.replica_key for p in mine]),
            search.shape,
            np.array([rate / p[2] for p in mine]),
            drafters=drafters,
            drafter=np.array([options.index((p[1].point.spec_method, p[1].point.spec_tokens))
                              for p in mine]),
        )  # fmt: skip
        for level in levels:
            ranked = sorted(
                (e, i) for i, (p, e) in enumerate(zip(mine, estimate, strict=True))
                if p[0] == level and np.isfinite(e)
            )  # fmt: skip
            for _, i in ranked[:PER_LEVEL]:
                _, candidate, replicas = mine[i]
                if prober(candidate, rate / replicas, replicas=replicas).meets:
                    outcome.confirmed.append(Choice(candidate, replicas))
    return prober.simulations - before
