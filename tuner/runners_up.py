"""What the plan says of the deployments it did not choose: the Pareto set of those simulated
(cost against p99 TPOT) and up to ten runners-up, one per layout, each with why it lost
(more GPUs, an SLO missed at its rate, no launch under the engine's memory rule, or ruled out
by its capacity bound without a simulation).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["alternatives", "pareto_front"]


def _trial_candidate(trial: Any, names: list[str], why_not: str | None = None) -> Any:
    from tuner.plan import Candidate

    metrics = trial.user_attrs.get("metrics", {})
    shown = ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "output_tokens_per_s", "requests_per_s")
    return Candidate(
        trial=trial.number,
        label=trial.user_attrs.get("label", "?"),
        params=dict(trial.params),
        feasible=bool(trial.user_attrs.get("meets")),
        objectives=dict(zip(names, trial.values, strict=True)),
        metrics={k: metrics.get(k) for k in shown if k in metrics},
        risk=trial.user_attrs.get("risk", "none"),
        why_not=why_not,
    )


def pareto_front(trials: list[Any], names: list[str], maximize_first: bool) -> list[Any]:
    """Deployments that met every SLO and that no other beats on both objectives."""
    ok = [t for t in trials if t.user_attrs.get("meets")]
    sign = -1.0 if maximize_first else 1.0
    front = []
    for t in ok:
        a0, a1 = sign * t.values[0], t.values[1]
        if not any(
            (sign * o.values[0] <= a0 and o.values[1] <= a1)
            and (sign * o.values[0] < a0 or o.values[1] < a1)
            for o in ok
        ):
            front.append(t)
    seen, unique = set(), []
    for t in sorted(front, key=lambda t: (sign * t.values[0], t.values[1], t.number)):
        key = (t.values[0], t.values[1], t.user_attrs.get("label"))
        if key not in seen:
            seen.add(key)
            unique.append(_trial_candidate(t, names))
    return unique


def alternatives(search: Any, outcome: Any, prober: Any = None, limit: int = 10) -> list[Any]:
    """Runners-up, one per layout (GPU, parallelism, dtypes, speculation), each with why it
    lost: simulated ones first (cheapest first), then those the bounds ruled out."""
    from tuner.plan import Candidate
    from tuner.search.cheapest import TIE_PROBES

    best, unit, table = outcome.best, search.table.unit, search.table.candidates
    rows: dict[tuple, tuple[tuple, Any]] = {}

    def layout(candidate: Any) -> tuple:
        p = candidate.point
        return (p.hardware, p.tp, p.pp, p.ep, p.weights, p.kv, p.spec_method)

    def money(value: float) -> str:
        return f"${value:,.2f}/h" if unit == "$/h" else f"{value:g} GPUs"

    def offer(rank: tuple, candidate: Any, replicas: int, text: str) -> None:
        key = layout(candidate)
        if key == layout(best.candidate) or (key in rows and rows[key][0] <= rank):
            return
        metrics = {}
        known = (
            prober.known(candidate, outcome.rate / replicas) if prober and outcome.rate else None
        )
        if known is not None:
            shown = ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s")
            metrics = {k: known.metrics.get(k) for k in shown}
        rows[key] = (rank, Candidate(
            trial=-1, label=candidate.deployment(replicas).label(),
            params=candidate.point.as_dict(), feasible=known is not None and known.meets,
            objectives={}, metrics=metrics, risk=candidate.point.risk, why_not=text,
        ))  # fmt: skip

    for choice in outcome.confirmed:
        if choice.candidate.index == best.candidate.index:
            continue
        extra = choice.cost - best.cost
        if extra > 1e-9:
            text = f"serves the traffic on {choice.gpus} GPUs: {money(extra)} more"
            known = (
                prober.known(choice.candidate, outcome.rate / choice.replicas) if prober else None
            )
            if known is not None and known.metrics.get("tpot_p99_s") is not None:
                text += f" for a p99 TPOT of {known.metrics['tpot_p99_s'] * 1e3:.1f} ms"
        elif choice.capacity is not None and best.capacity is not None:
            text = (f"same cost, less headroom ({choice.total_capacity:.2f} against "
                    f"{best.total_capacity:.2f} req/s)")  # fmt: skip
        else:
            text = f"same cost ({money(choice.cost)}); the plan was found first"
        offer((0, choice.cost), choice.candidate, choice.replicas, text)
    for index, replicas in outcome.refuted.items():
        candidate = table[index]
        rate = (outcome.rate or 0.0) / replicas
        known = prober.known(candidate, rate) if prober else None
        why = known.misses[0] if known and known.misses else "misses an SLO"
        text = f"{replicas} replica(s) ({replicas * candidate.gpus} GPUs) at {rate:.2f} req/s each: {why}"
        offer((1, candidate.cost(replicas + 1)), candidate, replicas, text)
    for index, reason in outcome.inadmissible.items():
        # after those that ran and missed: a deployment that cannot launch is no runner-up
        offer((1.5, table[index].cost(1)), table[index], 1, reason)
    for candidate in table:
        if candidate.index in outcome.visited:
            continue
        if outcome.rate is None:
            replicas = search.space.gpus // candidate.gpus
            text = f"ruled out by bound: at most {replicas * candidate.rate_bound:.2f} req/s"
            offer((2, -replicas * candidate.rate_bound), candidate, replicas, text)
            continue
        least = max(1, math.ceil(outcome.rate / candidate.rate_bound - 1e-9))
        cost = candidate.cost(least)
        if cost > best.cost * (1 + 1e-12):
            text = (f"ruled out by bound: one replica serves at most {candidate.rate_bound:.2f} "
                    f"req/s ({candidate.limit}), so {least * candidate.gpus} GPUs or more")  # fmt: skip
            offer((3, cost), candidate, least, text)
            continue
        if best.capacity is not None and least * candidate.rate_bound <= best.total_capacity:
            text = (f"could cost the same, but its bound ({least * candidate.rate_bound:.2f} "
                    "req/s) is below the plan's capacity")  # fmt: skip
        else:
            text = (
                f"could cost the same; not simulated (the {TIE_PROBES} simulations for ties went)"
            )
        offer((2, cost), candidate, least, text)
    ranked = sorted(rows.values(), key=lambda item: item[0])
    ties = [entry for rank, entry in ranked if rank[0] == 2][:_TIES_SHOWN]
    kept = [entry for rank, entry in ranked if rank[0] != 2 or entry in ties]
    return kept[:limit]


_TIES_SHOWN = 3  # runners-up at the plan's own cost worth a row
