"""From a trial to objectives and constraints: the one function Optuna calls.

``Evaluator.evaluate(point)`` scores one point of the search space:

1. look the point's replica configuration up in the pruning pass. Invalid, memory-infeasible
   or SLO-hopeless points are answered from the step model (no simulation), with constraint
   values that say by how much they fail; dominated points are pruned;
2. otherwise run the request-level serving simulation (``simulator.serving.simulate``) on the
   workload with a fixed seed, so a point always gets the same answer, and cache it, so a point
   sampled twice is simulated once.

Objectives (``OBJECTIVES``): *goodput per GPU*, the output tokens/s per GPU of the requests
that met every SLO (maximize), or *cost per million tokens* of that goodput (minimize); against
the p99 time per output token (minimize). Constraints, feasible when <= 0, go through
``trial.set_constraint``: ``fit`` (memory need / budget - 1) and one per SLO
((predicted - target) / target). Every metric is kept as a trial user attribute, so plans and
reports are rebuilt from the study alone.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from tuner.prune import STATUS, PruneResult, TrafficStats
from tuner.space import Point, SearchSpace

__all__ = [
    "OBJECTIVES",
    "Evaluation",
    "Evaluator",
    "make_objective",
    "SLEEP_ENV",
]

# objective name -> (metric names, directions)
OBJECTIVES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "goodput": (("goodput_tokens_per_s_per_gpu", "maximize"), ("tpot_p99_s", "minimize")),
    "cost": (("goodput_cost_per_million_tokens", "minimize"), ("tpot_p99_s", "minimize")),
}
# Test hook: seconds each trial sleeps before it evaluates (to kill a worker mid-trial).
SLEEP_ENV = "ROOFTUNE_TRIAL_SLEEP_S"


@dataclass
class Evaluation:
    """The answer for one point: objectives, constraints and the metrics behind them."""

    point: Point
    status: str  # ok | invalid | memory | slo | dominated
    reason: str | None
    objectives: tuple[float, float]
    constraints: dict[str, float]
    metrics: dict[str, float | None] = field(default_factory=dict)
    simulated: bool = False
    prediction: Any = None  # the simulator's Prediction when simulated

    @property
    def feasible(self) -> bool:
        return self.status == "ok" and all(v <= 0 for v in self.constraints.values())


class Evaluator:
    """Scores points with the pruning table in front of the serving simulation (cached)."""

    def __init__(
        self,
        *,
        space: SearchSpace,
        pruned: PruneResult,
        workload: Any,
        slos: list,
        traffic: TrafficStats,
        objective: str = "goodput",
        seed: int = 0,
    ) -> None:
        self.space, self.pruned, self.workload, self.slos = space, pruned, workload, list(slos)
        self.traffic, self.objective, self.seed = traffic, objective, seed
        self.evaluations = 0
        # Exhaustive checks simulate dominated points too, to test the dominance pruning.
        self.simulate_dominated = False
        self.simulate_s = 0.0
        self._cache: dict[Point, Evaluation] = {}

    def evaluate(self, point: Point) -> Evaluation:
        if point not in self._cache:
            self._cache[point] = self._evaluate(point)
        return self._cache[point]

    def _evaluate(self, point: Point) -> Evaluation:
        if not self.pruned.has(point):
            # tp x pp past the GPU budget: the knobs are sampled independently, so this happens.
            reason = (
                f"one replica needs tp x pp = {point.gpus_per_replica} GPUs, more than "
                f"the budget of {self.space.gpus}"
            )
            metrics: dict[str, float | None] = {
                "goodput_tokens_per_s_per_gpu": 0.0,
                "tpot_p99_s": 1e3,
            }
            return Evaluation(
                point=point,
                status="invalid",
                reason=reason,
                objectives=self._objectives(metrics),
                constraints={"fit": 1.0, **{s.name: 1.0 for s in self.slos}},
                metrics=metrics,
            )
        row = self.pruned.index(point)
        status = STATUS[int(self.pruned.status[row])]
        fit = float(self.pruned.fit_violation[row])
        if status == "dominated" and self.simulate_dominated:
            status = "ok"
        if status != "ok":
            return self._estimated(point, row, status, fit)
        from simulator.serving import simulate

        hardware = self.space.hardware_spec(point.hardware)
        config = self.space.to_config(point)
        start = time.perf_counter()
        result = simulate(
            self.space.model, hardware, config, self.workload, seed=self.seed, slos=self.slos
        )
        self.simulate_s += time.perf_counter() - start
        self.evaluations += 1
        prediction = result.prediction
        metrics = self._metrics(prediction, hardware, point)
        constraints = {"fit": self._fit(prediction, config, fit)}
        # An overloaded run's queue grows without bound: its percentiles only reflect how long
        # the simulated run was, so it cannot count as meeting anything.
        constraints["stable"] = 1.0 if getattr(prediction, "overloaded", False) else 0.0
        for slo in self.slos:
            value = metrics.get(slo.name)
            value = math.inf if value is None or not math.isfinite(value) else value
            constraints[slo.name] = _bounded((value - slo.target_s) / slo.target_s)
        return Evaluation(
            point=point,
            status="ok",
            reason=None,
            objectives=self._objectives(metrics),
            constraints=constraints,
            metrics=metrics,
            simulated=True,
            prediction=prediction,
        )

    def _fit(self, prediction: Any, config: Any, fit: float) -> float:
        """Memory rule with what the simulation knows beyond the step model (a draft model's
        weights and KV come out of the target's KV cache)."""
        if not prediction.fits:
            return max(fit, 1e-3)
        blocks = getattr(prediction, "kv_blocks", None)
        if blocks is None:
            return min(fit, 0.0)
        block = config.block_size
        need = max(
            config.max_num_seqs * -(-self.traffic.mean_length // block) * block,
            -(-config.max_model_len // block) * block,
        )
        return _bounded(min(fit, 0.0) if blocks * block >= need else need / (blocks * block) - 1)

    def _estimated(self, point: Point, row: int, status: str, fit: float) -> Evaluation:
        p = self.pruned
        tpot = float(p.tpot_floor_s[row]) if math.isfinite(p.tpot_floor_s[row]) else 1e3
        metrics: dict[str, float | None] = {
            "goodput_tokens_per_s_per_gpu": 0.0,
            "tpot_p99_s": tpot,
            "ttft_floor_s": float(p.ttft_floor_s[row]),
            "tpot_floor_s": tpot,
            "cost_per_million_tokens": None,
        }
        constraints = {"fit": _bounded(fit if status in ("invalid", "memory") else min(fit, 0.0))}
        floors = {"ttft": float(p.ttft_floor_s[row]), "tpot": tpot, "itl": tpot}
        for slo in self.slos:
            floor = floors.get(slo.metric, 0.0)
            # A floor says "at least this slow": a violation when above target, else unknown,
            # which a trial that was never simulated must not pass for, so it counts as missed.
            constraints[slo.name] = _bounded(
                max((floor - slo.target_s) / slo.target_s, 1e-3) if status != "ok" else 0.0
            )
        return Evaluation(
            point=point,
            status=status,
            reason=p.reasons[row],
            objectives=self._objectives(metrics),
            constraints=constraints,
            metrics=metrics,
        )

    def _metrics(self, prediction: Any, hardware: Any, point: Point) -> dict[str, float | None]:
        metrics: dict[str, float | None] = {}
        for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            stats = getattr(prediction, name, None)
            if stats is None:
                continue
            for key in ("mean", "p50", "p90", "p99"):
                metrics[f"{name[:-2]}_{key}_s"] = _finite(getattr(stats, key))
        for name in (
            "output_tokens_per_s",
            "requests_per_s",
            "goodput_requests_per_s",
            "output_tokens_per_s_per_gpu",
            "output_tokens_per_s_per_user",
            "cost_per_million_tokens",
            "total_tokens_per_s",
        ):
            metrics[name] = _finite(getattr(prediction, name, None))
        # Each SLO's own percentile (ttft_p95...), as the simulation checked it.
        for check in getattr(prediction, "slos", None) or []:
            metrics[check["name"]] = _finite(check.get("value_s"))
        metrics["overloaded"] = float(bool(getattr(prediction, "overloaded", False)))
        requests = metrics.get("requests_per_s") or 0.0
        good = metrics.get("goodput_requests_per_s") or 0.0
        per_gpu = metrics.get("output_tokens_per_s_per_gpu") or 0.0
        attainment = good / requests if requests else 0.0
        metrics["slo_attainment"] = attainment
        metrics["goodput_tokens_per_s_per_gpu"] = per_gpu * attainment
        price = hardware.price_per_hour
        goodput_total = per_gpu * attainment * point.num_gpus
        metrics["goodput_cost_per_million_tokens"] = (
            price * point.num_gpus / 3600.0 / goodput_total * 1e6
            if price is not None and goodput_total > 0
            else None
        )
        metrics["num_gpus"] = float(point.num_gpus)
        return metrics

    def _objectives(self, metrics: dict[str, float | None]) -> tuple[float, float]:
        tpot = metrics.get("tpot_p99_s")
        tpot = 1e3 if tpot is None else float(tpot)
        if self.objective == "cost":
            cost = metrics.get("goodput_cost_per_million_tokens")
            return (1e9 if cost is None else float(cost), tpot)
        return (float(metrics.get("goodput_tokens_per_s_per_gpu") or 0.0), tpot)


def _finite(value: Any) -> float | None:
    if value is None:
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _bounded(value: float) -> float:
    """Constraint values must be finite numbers (Optuna rejects NaN; inf breaks samplers)."""
    if math.isnan(value):
        return 1e6
    return float(min(max(value, -1e6), 1e6))


def make_objective(evaluator: Evaluator, *, budget: int) -> Any:
    """The Optuna objective: suggest a point, evaluate it, record constraints and metrics."""
    import optuna

    from tuner.study import surplus, worker_id

    space = evaluator.space

    def objective(trial: optuna.Trial) -> tuple[float, float]:
        trial.set_user_attr("worker", worker_id())
        if surplus(trial, budget):
            trial.set_user_attr("status", "surplus")
            raise optuna.TrialPruned("the study's trial budget is already taken")
        point = space.suggest(trial)
        trial.set_user_attr("label", point.label())
        trial.set_user_attr("point", point.as_dict())
        pause = float(os.environ.get(SLEEP_ENV, "0") or 0)
        if pause > 0:  # after suggesting: a trial killed here has parameters to retry
            time.sleep(pause)
        result = evaluator.evaluate(point)
        trial.set_user_attr("risk", point.risk)
        trial.set_user_attr("status", result.status)
        trial.set_user_attr("simulated", result.simulated)
        if result.reason:
            trial.set_user_attr("reason", result.reason)
        trial.set_user_attr("metrics", result.metrics)
        if result.status == "dominated":
            raise optuna.TrialPruned(result.reason)
        already = set(trial.constraints) if hasattr(trial, "constraints") else set()
        for key, value in result.constraints.items():
            if key not in already:  # a retried trial inherits its original's constraints
                trial.set_constraint(key, value)
        return result.objectives

    return objective
