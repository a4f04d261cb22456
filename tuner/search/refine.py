"""Refinement: Optuna over the knobs a grid samples coarsely, at the plan's cost.

The branch and bound proves which deployment is cheapest over the search space's grid of
batching knobs (``max_num_seqs`` in six steps, four token budgets, two to five drafted tokens).
Those knobs are wide ranges with no bound to steer by, which is where a sampler pays. ``refine``
keeps the plan's layout and replica count, so its cost, and lets Optuna's TPE sampler move
``max_num_seqs`` (16-1024, log), the token budget (1024-32768, log, when chunked prefill is on)
and the drafted tokens (1-8, when speculating) to maximize the capacity of one replica: the
plan's headroom. A trial is a bisection on the rate grid between the rate the plan serves per
replica and the trial's own bound; one that does not serve that rate, or does not launch under
the engine's memory rule, scores 0. The plan's own knobs are the first trial, so refining never
lowers the capacity. Trials go to a study of their own (``STUDY-refine``) in the same storage,
so a re-run adds to it rather than starting over.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from simulator.serving.capacity import grid_index, grid_rate, highest_rate
from tuner.search.candidates import candidate_for
from tuner.search.cheapest import Choice
from tuner.search.probe import Prober
from tuner.search.trials import LocalRunner

__all__ = ["Refinement", "refine", "REFINE_SUFFIX"]

REFINE_SUFFIX = "-refine"
_INDEX_BASE = 10**9  # refined candidates take indices no candidate of the table has


@dataclass(frozen=True)
class Refinement:
    """The refined deployment (the plan's own when nothing beat it) and what it took."""

    choice: Choice
    trials: int
    improved: bool
    from_capacity: float | None

    def as_dict(self) -> dict[str, Any]:
        return {
            "trials": self.trials,
            "improved": self.improved,
            "from_capacity_per_s": self.from_capacity,
            "to_capacity_per_s": self.choice.capacity,
        }


def refine(
    search: Any,
    outcome: Any,
    *,
    trials: int,
    storage: Any,
    study_name: str,
    admissible: Any,
) -> Refinement:
    """Up to ``trials`` trials in all (earlier runs' count) on ``outcome.best``'s knobs."""
    import optuna
    from optuna.trial import TrialState

    best = outcome.best
    assert best is not None, "refine a search that found a deployment"
    base, replicas = best.candidate.point, best.replicas
    served = outcome.rate / replicas if outcome.rate else None
    prober = Prober(search.table, LocalRunner(search, None))
    study = optuna.create_study(
        storage=storage,
        study_name=study_name + REFINE_SUFFIX,
        direction="maximize",
        load_if_exists=True,
        sampler=optuna.samplers.TPESampler(
            seed=search.seed, multivariate=True, n_startup_trials=min(8, trials)
        ),
    )
    if not study.get_trials(deepcopy=False):
        knobs = {"max_num_seqs": base.max_num_seqs}
        if base.chunked_prefill:
            knobs["max_num_batched_tokens"] = base.max_num_batched_tokens
        if base.spec_method != "none":
            knobs["spec_tokens"] = base.spec_tokens
        study.enqueue_trial(knobs)
    candidates: dict[Any, Any] = {}

    def objective(trial: optuna.Trial) -> float:
        point = replace(
            base,
            max_num_seqs=trial.suggest_int("max_num_seqs", 16, 1024, log=True),
            max_num_batched_tokens=trial.suggest_int("max_num_batched_tokens", 1024, 32768,
                                                     log=True)
            if base.chunked_prefill
            else base.max_num_batched_tokens,
            spec_tokens=trial.suggest_int("spec_tokens", 1, 8)
            if base.spec_method != "none"
            else 0,
        )  # fmt: skip
        trial.set_user_attr("label", point.label())
        candidate = candidate_for(
            search, point, index=_INDEX_BASE + trial.number, price=best.candidate.price
        )
        reason = "no rate meets the SLOs" if candidate is None else admissible(candidate)
        if candidate is None or reason is not None:
            trial.set_user_attr("reason", reason)
            return 0.0
        capacity, _ = highest_rate(
            lambda r: prober(candidate, r, replicas=replicas, kind="capacity").meets,
            low=served or candidate.rate_bound / 1000,
            high=grid_rate(grid_index(candidate.rate_bound) + 1),
        )  # the plan's own rate is asked too: a refined knob may not serve it
        candidates[trial.number] = candidate
        trial.set_user_attr("capacity_per_s", capacity or 0.0)
        return capacity or 0.0

    finished = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)
    left = trials - len(study.get_trials(deepcopy=False, states=finished))
    if left > 0:
        study.optimize(objective, n_trials=left, catch=(), gc_after_trial=False)
    top = study.best_trial
    improved = (top.value or 0.0) > (best.capacity or 0.0) * (1 + 1e-9)
    choice = best
    if improved:
        candidate = candidates.get(top.number) or candidate_for(
            search,
            replace(base, **{k: v for k, v in top.params.items()}),
            index=_INDEX_BASE + top.number,
            price=best.candidate.price,
        )
        choice = Choice(candidate, replicas, top.value)
    return Refinement(
        choice=choice,
        trials=len(study.get_trials(deepcopy=False, states=finished)),
        improved=improved,
        from_capacity=best.capacity,
    )
