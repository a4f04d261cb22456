"""Probes as Optuna trials: what the study stores, and who runs the simulations.

Every simulation the search runs is one trial of the study. Its parameters say which replica
configuration was probed, as how many replicas, at which arrival rate per replica; its user
attributes keep what the probe found (met or not, the latency percentiles, the limits that
shaped the run), so a study is enough to rebuild the search's knowledge: a re-run resumes
where the last one stopped, and ``tune report`` redraws the history. Its two objective values
are the deployment's cost (``$/h``, or GPUs) and its p99 TPOT (for a search without a rate:
output tokens/s per GPU served, and p99 TPOT), with one constraint per SLO, so Optuna's own
views of the study (``best_trials``, the dashboard) show the cost against latency.

Two runners execute probes:

- ``LocalRunner`` simulates in this process and stores each finished probe as one complete
  trial (a single write; nothing half-done ever reaches the storage);
- ``SharedRunner`` puts the probe into the study as a queued trial and works through the queue
  itself, beside any ``tune worker`` processes on the same storage (PostgreSQL): the search
  queues the probes it is likely to need next (``prefetch``), workers take them, and a worker
  that dies has its trial failed by heartbeat and queued again.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict
from typing import Any

from simulator.serving.results import EngineLimits
from tuner.search.probe import ProbeResult, simulate_probe
from tuner.search.space import Point

__all__ = [
    "KIND_ATTR",
    "DONE_ATTR",
    "SLEEP_ENV",
    "distributions",
    "probe_params",
    "probe_trial",
    "result_of",
    "preload",
    "LocalRunner",
    "SharedRunner",
    "make_objective",
    "serve_queue",
]

KIND_ATTR = "probe"  # user attr: "deployment" (at the traffic's rate) or "capacity"
QUEUED_ATTR = "queued"  # user attr of a queued probe: its parameters
DONE_ATTR = "rooftune_done"  # study user attr: the search has finished; workers may leave
# Test hook: seconds each probe sleeps before it simulates (to kill a process mid-probe).
SLEEP_ENV = "ROOFTUNE_TRIAL_SLEEP_S"
_RETRY_GRACE_S = 2.0  # how long a failed probe waits for its heartbeat retry before requeueing
_KNOBS = ("hardware", "tp", "pp", "ep", "weights", "kv", "max_num_seqs", "chunked_prefill",
          "max_num_batched_tokens", "spec_method", "spec_tokens")  # fmt: skip


def distributions(space: Any) -> dict[str, Any]:
    """The Optuna distribution of every probe parameter (fixed choices, so trials compare)."""
    from optuna.distributions import (
        CategoricalDistribution,
        FloatDistribution,
        IntDistribution,
    )

    tokens = tuple(sorted({*space.max_num_batched_tokens, space.unchunked_tokens}))
    return {
        "hardware": CategoricalDistribution(space.hardware_names),
        "tp": CategoricalDistribution(space.tp),
        "pp": CategoricalDistribution(space.pp),
        "ep": CategoricalDistribution(space.ep),
        "weights": CategoricalDistribution(space.weights),
        "kv": CategoricalDistribution(space.kv),
        "max_num_seqs": CategoricalDistribution(space.max_num_seqs),
        "chunked_prefill": CategoricalDistribution((True, False)),
        "max_num_batched_tokens": CategoricalDistribution(tokens),
        "spec_method": CategoricalDistribution(space.spec_methods),
        "spec_tokens": CategoricalDistribution((0, *space.spec_tokens)),
        "replicas": IntDistribution(1, max(space.gpus, 1)),
        "rate": FloatDistribution(1e-9, 1e9, log=True),
    }


def probe_params(point: Point, replicas: int, rate: float) -> dict[str, Any]:
    params = {name: getattr(point, name) for name in _KNOBS}
    return {**params, "replicas": int(replicas), "rate": float(rate)}


def _point(params: dict[str, Any]) -> tuple[Point, int, float]:
    knobs = {name: params[name] for name in _KNOBS}
    return Point(replicas=1, **knobs), int(params["replicas"]), float(params["rate"])


def _values(search: Any, candidate: Any, replicas: int, rate: float, result: ProbeResult):
    """The trial's objective values and constraints (<= 0 feasible)."""
    tpot = result.metrics.get("tpot_p99_s")
    tpot = 1e3 if tpot is None else float(tpot)
    if search.rate is None:  # no rate: what one GPU serves at this probe's rate
        first = (result.metrics.get("output_tokens_per_s") or 0.0) / candidate.gpus
    else:
        first = candidate.cost(replicas)
    # A run that does not fit, or whose queue keeps growing, meets nothing whatever its
    # percentiles say (they only reflect how long the simulated run was).
    unstable = bool(result.metrics.get("overloaded")) or not result.metrics.get("fits", 1.0)
    constraints = {"stable": 1.0 if unstable else 0.0}
    for slo in search.slos:
        value = result.metrics.get(slo.name)
        value = math.inf if value is None else float(value)
        constraints[slo.name] = _bounded((value - slo.target_s) / slo.target_s)
    return [float(first), tpot], constraints


def _attrs(candidate: Any, replicas: int, rate: float, kind: str,
           result: ProbeResult) -> dict[str, Any]:  # fmt: skip
    from tuner.search.study import worker_id

    limits = asdict(result.limits)
    limits["bound_by"] = sorted(limits["bound_by"])
    return {
        KIND_ATTR: kind,
        "label": candidate.deployment(replicas).label(),
        "cost": candidate.cost(replicas),  # $/h, or GPUs when the search counts GPUs
        # The rate these replicas were shown to serve within the SLOs (0: they were not).
        "served_rate": replicas * rate if result.meets else 0.0,
        "meets": result.meets,
        "metrics": result.metrics,
        "misses": list(result.misses),
        "limits": limits,
        "gpus": replicas * candidate.gpus,
        "risk": candidate.point.risk,
        "worker": worker_id(),
    }


def result_of(trial: Any) -> ProbeResult:
    """The probe result a complete trial stores."""
    attrs = trial.user_attrs
    limits = dict(attrs.get("limits") or {})
    limits["bound_by"] = frozenset(limits.get("bound_by", ()))
    return ProbeResult(
        meets=bool(attrs.get("meets")),
        metrics=dict(attrs.get("metrics") or {}),
        misses=tuple(attrs.get("misses") or ()),
        limits=EngineLimits(**limits),
    )


def probe_trial(search: Any, candidate: Any, rate: float, replicas: int, kind: str,
                result: ProbeResult) -> Any:  # fmt: skip
    """A complete ``FrozenTrial`` recording one probe."""
    import optuna

    values, constraints = _values(search, candidate, replicas, rate, result)
    return optuna.trial.create_trial(
        values=values,
        params=probe_params(candidate.point, replicas, rate),
        distributions=distributions(search.space),
        user_attrs=_attrs(candidate, replicas, rate, kind, result),
        constraints=constraints,
    )


def preload(study: Any, table: Any, prober: Any) -> int:
    """Feed the probes a study already holds to ``prober``; returns how many."""
    from optuna.trial import TrialState

    index = {c.point: c for c in table.candidates}
    loaded = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if KIND_ATTR not in trial.user_attrs or "rate" not in trial.params:
            continue
        point, _, rate = _point(trial.params)
        candidate = index.get(point)
        if candidate is not None:
            prober.add(candidate, rate, result_of(trial))
            loaded += 1
    return loaded


def _pause() -> None:
    pause = float(os.environ.get(SLEEP_ENV, "0") or 0)
    if pause > 0:
        time.sleep(pause)


class LocalRunner:
    """Simulate in this process; store each finished probe as one complete trial."""

    def __init__(self, search: Any, study: Any | None):
        self.search, self.study = search, study
        self._steps: dict[int, Any] = {}  # candidate -> its StepModel (built once)

    def run(self, candidate: Any, rate: float, replicas: int, kind: str) -> ProbeResult:
        _pause()
        result = simulate_probe(self.search, candidate, rate, self._step(candidate))
        if self.study is not None:
            self.study.add_trial(probe_trial(self.search, candidate, rate, replicas, kind, result))
        return result

    def _step(self, candidate: Any) -> Any:
        step = self._steps.get(candidate.index)
        if step is None:
            from simulator.cost.step import StepModel

            space = self.search.space
            step = StepModel.build(
                space.model,
                space.hardware_spec(candidate.point.hardware),
                space.to_config(candidate.point),
            )
            self._steps[candidate.index] = step
        return step


def make_objective(search: Any, table: Any) -> Any:
    """The Optuna objective of a queued probe: simulate it, record it. A trial that was not
    queued (two processes raced for the last one) is pruned at once."""
    import optuna

    index = {c.point: c for c in table.candidates}
    space = search.space
    dists = distributions(space)
    local = LocalRunner(search, None)

    def objective(trial: optuna.Trial) -> list[float]:
        from tuner.search.study import worker_id

        trial.set_user_attr("worker", worker_id())  # who ran it, should it die mid-way
        fixed = trial.user_attrs.get(QUEUED_ATTR)
        if not fixed:
            raise optuna.TrialPruned("no probe was queued for this trial")
        params = {name: _suggest(trial, name, dists[name], fixed[name]) for name in fixed}
        point, replicas, rate = _point(params)
        candidate = index.get(point)
        if candidate is None:
            raise optuna.TrialPruned(f"not a candidate of this search: {point.label()}")
        kind = trial.user_attrs.get(KIND_ATTR, "deployment")
        result = local.run(candidate, rate, replicas, kind)
        values, constraints = _values(search, candidate, replicas, rate, result)
        for key, value in _attrs(candidate, replicas, rate, kind, result).items():
            trial.set_user_attr(key, value)
        for key, value in constraints.items():
            trial.set_constraint(key, value)
        return values

    return objective


def _suggest(trial: Any, name: str, distribution: Any, value: Any) -> Any:
    from optuna.distributions import CategoricalDistribution, FloatDistribution

    if isinstance(distribution, CategoricalDistribution):
        return trial.suggest_categorical(name, distribution.choices)
    if isinstance(distribution, FloatDistribution):
        return trial.suggest_float(name, distribution.low, distribution.high, log=True)
    return trial.suggest_int(name, distribution.low, distribution.high)


class SharedRunner:
    """Probes through the study's storage, run by this process and any ``tune worker``."""

    def __init__(self, search: Any, table: Any, study: Any, *, poll_s: float = 0.2):
        self.search, self.table, self.study, self.poll_s = search, table, study, poll_s
        self.objective = make_objective(search, table)

    def _key(self, candidate: Any, rate: float, replicas: int) -> tuple:
        params = probe_params(candidate.point, replicas, rate)
        return tuple(sorted((k, f"{v:.12g}" if isinstance(v, float) else v)
                            for k, v in params.items()))  # fmt: skip

    def _trials(self) -> dict[tuple, list[Any]]:
        by_key: dict[tuple, list[Any]] = {}
        for trial in self.study.get_trials(deepcopy=False):
            params = trial.user_attrs.get(QUEUED_ATTR) or trial.params or {}
            if "rate" in params:
                key = tuple(sorted((k, f"{v:.12g}" if isinstance(v, float) else v)
                                   for k, v in params.items()))  # fmt: skip
                by_key.setdefault(key, []).append(trial)
        return by_key

    def prefetch(self, requests: list[tuple[Any, float, int, str]]) -> None:
        trials = self._trials()
        for candidate, rate, replicas, kind in requests:
            if self._key(candidate, rate, replicas) not in trials:
                self._enqueue(candidate, rate, replicas, kind)

    def _enqueue(self, candidate: Any, rate: float, replicas: int, kind: str) -> None:
        params = probe_params(candidate.point, replicas, rate)
        self.study.enqueue_trial(
            params, user_attrs={KIND_ATTR: kind, QUEUED_ATTR: params}, skip_if_exists=False
        )

    @staticmethod
    def _just_failed(trials: list[Any]) -> bool:
        """A trial of this probe failed moments ago: the heartbeat's retry is on its way, and
        queueing another copy would run the probe twice."""
        from datetime import datetime

        from optuna.trial import TrialState

        ended = [t.datetime_complete for t in trials
                 if t.state == TrialState.FAIL and t.datetime_complete is not None]  # fmt: skip
        if not ended:
            return False
        last = max(ended)
        # Optuna's storages keep naive local times: "now" must be naive too (an aware one
        # cannot be subtracted from it); an aware time gets an aware now in its zone.
        now = datetime.now(last.tzinfo)
        return (now - last).total_seconds() < _RETRY_GRACE_S

    def run(self, candidate: Any, rate: float, replicas: int, kind: str) -> ProbeResult:
        from optuna.storages import fail_stale_trials
        from optuna.storages._heartbeat import is_heartbeat_enabled
        from optuna.trial import TrialState

        key = self._key(candidate, rate, replicas)
        queued = False
        while True:
            trials = self._trials().get(key, [])
            done = [t for t in trials if t.state == TrialState.COMPLETE]
            if done:
                return result_of(done[0])
            live = [t for t in trials if t.state in (TrialState.WAITING, TrialState.RUNNING)]
            if not live and not queued and not self._just_failed(trials):
                self._enqueue(candidate, rate, replicas, kind)
                queued = True
                continue
            waiting = self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
            if waiting:  # help with the queue (Optuna hands out the oldest queued trial)
                self.study.optimize(self.objective, n_trials=1, catch=(), gc_after_trial=False)
                continue
            if not live:  # ours failed and was not queued again: ask once more
                queued = False
                continue
            if is_heartbeat_enabled(self.study._storage):
                fail_stale_trials(self.study)
            time.sleep(self.poll_s)


def _bounded(value: float) -> float:
    """Constraint values must be finite numbers (Optuna rejects NaN; inf breaks samplers)."""
    if math.isnan(value):
        return 1e6
    return float(min(max(value, -1e6), 1e6))


def serve_queue(
    study: Any, objective: Any, *, max_trials: int | None = None, poll_s: float = 0.25
) -> int:
    """A worker's loop: run the study's queued probes until the search is done (and nothing is
    left queued) or ``max_trials`` ran here. Returns how many ran here."""
    from optuna.storages import fail_stale_trials
    from optuna.storages._heartbeat import is_heartbeat_enabled
    from optuna.trial import TrialState

    ran = 0
    while max_trials is None or ran < max_trials:
        waiting = study.get_trials(deepcopy=False, states=(TrialState.WAITING,))
        if waiting:
            study.optimize(objective, n_trials=1, catch=(), gc_after_trial=False)
            ran += 1
            continue
        if study.user_attrs.get(DONE_ATTR):
            break
        if is_heartbeat_enabled(study._storage):
            fail_stale_trials(study)
        time.sleep(poll_s)
    return ran
