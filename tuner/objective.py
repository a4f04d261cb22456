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

import numpy as np

from tuner.prune import STATUS, PruneResult, TrafficStats
from tuner.space import Point, SearchSpace

__all__ = ["OBJECTIVES", "Evaluation", "Evaluator", "Search", "build_search", "make_objective",
           "traffic_stats", "max_model_len_for", "SLEEP_ENV"]

# objective name -> (metric names, directions)
OBJECTIVES: dict[str, tuple[tuple[str, str], tuple[str, str]]] = {
    "goodput": (("goodput_tokens_per_s_per_gpu", "maximize"), ("tpot_p99_s", "minimize")),
    "cost": (("cost_per_million_tokens", "minimize"), ("tpot_p99_s", "minimize")),
}
# Test hook: seconds each trial sleeps before it evaluates (to kill a worker mid-trial).
SLEEP_ENV = "ROOFTUNE_TRIAL_SLEEP_S"


def traffic_stats(workload: Any) -> TrafficStats:
    """Mean and median lengths of the workload's sampled requests, and its arrival rate."""
    from simulator.workload import sample_requests

    requests = sample_requests(workload)
    rate = workload.arrival.rate_per_s
    if workload.arrival.process in ("offline", "closed") or rate is None:
        rate = math.inf
    return TrafficStats(mean_prompt=float(requests.prompt_tokens.mean()),
                        mean_output=float(requests.output_tokens.mean()),
                        median_prompt=float(np.median(requests.prompt_tokens)), rate=float(rate))


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

    def __init__(self, *, space: SearchSpace, pruned: PruneResult, workload: Any, slos: list,
                 traffic: TrafficStats, objective: str = "goodput", seed: int = 0) -> None:
        self.space, self.pruned, self.workload, self.slos = space, pruned, workload, list(slos)
        self.traffic, self.objective, self.seed = traffic, objective, seed
        self.evaluations = 0
        self.simulate_s = 0.0
        self._cache: dict[Point, Evaluation] = {}

    def evaluate(self, point: Point) -> Evaluation:
        if point not in self._cache:
            self._cache[point] = self._evaluate(point)
        return self._cache[point]

    def _evaluate(self, point: Point) -> Evaluation:
        if not self.pruned.has(point):
            # tp x pp past the GPU budget: the knobs are sampled independently, so this happens.
            reason = (f"one replica needs tp x pp = {point.gpus_per_replica} GPUs, more than "
                      f"the budget of {self.space.gpus}")
            metrics: dict[str, float | None] = {"goodput_tokens_per_s_per_gpu": 0.0,
                                                "tpot_p99_s": 1e3}
            return Evaluation(point=point, status="invalid", reason=reason,
                              objectives=self._objectives(metrics),
                              constraints={"fit": 1.0, **{s.name: 1.0 for s in self.slos}},
                              metrics=metrics)
        row = self.pruned.index(point)
        status = STATUS[int(self.pruned.status[row])]
        fit = float(self.pruned.fit_violation[row])
        if status != "ok":
            return self._estimated(point, row, status, fit)
        from simulator.serving import simulate

        hardware = self.space.hardware_spec(point.hardware)
        config = self.space.to_config(point)
        start = time.perf_counter()
        result = simulate(self.space.model, hardware, config, self.workload, seed=self.seed,
                          slos=self.slos)
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
        return Evaluation(point=point, status="ok", reason=None,
                          objectives=self._objectives(metrics), constraints=constraints,
                          metrics=metrics, simulated=True, prediction=prediction)

    def _fit(self, prediction: Any, config: Any, fit: float) -> float:
        """Memory rule with what the simulation knows beyond the step model (a draft model's
        weights and KV come out of the target's KV cache)."""
        if not prediction.fits:
            return max(fit, 1e-3)
        blocks = getattr(prediction, "kv_blocks", None)
        if blocks is None:
            return min(fit, 0.0)
        block = config.block_size
        need = max(config.max_num_seqs * -(-self.traffic.mean_length // block) * block,
                   -(-config.max_model_len // block) * block)
        return _bounded(min(fit, 0.0) if blocks * block >= need else need / (blocks * block) - 1)

    def _estimated(self, point: Point, row: int, status: str, fit: float) -> Evaluation:
        p = self.pruned
        tpot = float(p.tpot_floor_s[row]) if math.isfinite(p.tpot_floor_s[row]) else 1e3
        metrics: dict[str, float | None] = {
            "goodput_tokens_per_s_per_gpu": 0.0, "tpot_p99_s": tpot,
            "ttft_floor_s": float(p.ttft_floor_s[row]), "tpot_floor_s": tpot,
            "cost_per_million_tokens": None}
        constraints = {"fit": _bounded(fit if status in ("invalid", "memory") else min(fit, 0.0))}
        floors = {"ttft": float(p.ttft_floor_s[row]), "tpot": tpot, "itl": tpot}
        for slo in self.slos:
            floor = floors.get(slo.metric, 0.0)
            # A floor says "at least this slow": a violation when above target, else unknown,
            # which a trial that was never simulated must not pass for, so it counts as missed.
            constraints[slo.name] = _bounded(max((floor - slo.target_s) / slo.target_s, 1e-3)
                                             if status != "ok" else 0.0)
        return Evaluation(point=point, status=status, reason=p.reasons[row],
                          objectives=self._objectives(metrics), constraints=constraints,
                          metrics=metrics)

    def _metrics(self, prediction: Any, hardware: Any, point: Point) -> dict[str, float | None]:
        metrics: dict[str, float | None] = {}
        for name in ("ttft_s", "tpot_s", "itl_s", "e2e_s"):
            stats = getattr(prediction, name, None)
            if stats is None:
                continue
            for key in ("mean", "p50", "p90", "p99"):
                metrics[f"{name[:-2]}_{key}_s"] = _finite(getattr(stats, key))
        for name in ("output_tokens_per_s", "requests_per_s", "goodput_requests_per_s",
                     "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user",
                     "cost_per_million_tokens", "total_tokens_per_s"):
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
            if price is not None and goodput_total > 0 else None)
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
        pause = float(os.environ.get(SLEEP_ENV, "0") or 0)
        if pause > 0:
            time.sleep(pause)
        point = space.suggest(trial)
        result = evaluator.evaluate(point)
        trial.set_user_attr("label", point.label())
        trial.set_user_attr("point", point.as_dict())
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


def max_model_len_for(workload: Any, model: Any, requests: Any = None) -> int:
    """The longest prompt + output the workload can send, rounded up to 1024 tokens (capped at
    the model's context): the engine must accept every request it will see."""
    from simulator.workload import sample_requests

    lengths = []
    if workload.prompt is not None and workload.output is not None:
        if workload.prompt.max and workload.output.max:
            lengths.append(workload.prompt.max + workload.output.max)
    requests = requests if requests is not None else sample_requests(workload)
    lengths.append(int((requests.prompt_tokens + requests.output_tokens).max()))
    longest = max(lengths)
    return int(min(-(-longest // 1024) * 1024, model.max_position_embeddings))


@dataclass
class Search:
    """Everything one process needs to run trials of a study, rebuilt from its ``spec``."""

    spec: dict[str, Any]
    space: SearchSpace
    workload: Any
    slos: list
    traffic: TrafficStats
    pruned: PruneResult
    evaluator: Evaluator
    prune_s: float

    @property
    def metric_names(self) -> list[str]:
        return [name for name, _ in OBJECTIVES[self.spec["objective"]]]

    @property
    def directions(self) -> list[str]:
        return [direction for _, direction in OBJECTIVES[self.spec["objective"]]]


def build_search(spec: dict[str, Any]) -> Search:
    """Models, GPUs, workload and SLOs from names; the space; the pruning pass. Bad names raise
    one-line RooftuneErrors before anything is written."""
    from simulator.errors import ConfigError
    from simulator.hardware import load_hardware
    from simulator.models import get_model
    from simulator.slo import parse_slo
    from simulator.workload import get_workload
    from tuner.prune import prune

    model = get_model(spec["model"])
    hardware = [load_hardware(name, calibration=spec.get("calibration", True))
                for name in spec["hardware"]]
    if len({h.name for h in hardware}) != len(hardware):
        raise ConfigError("--hardware lists the same GPU twice")
    slos = [parse_slo(text) for text in spec["slos"]]
    if len({s.name for s in slos}) != len(slos):
        raise ConfigError("two --slo flags name the same metric and percentile")
    workload = get_workload(spec["workload"], rate=spec.get("rate"),
                            num_requests=spec.get("requests"), seed=spec.get("seed", 0),
                            slos=slos)
    if spec["objective"] not in OBJECTIVES:
        raise ConfigError(f"unknown objective {spec['objective']!r}; known: {', '.join(OBJECTIVES)}")
    if spec["objective"] == "cost":
        unpriced = [h.name for h in hardware if h.price_per_hour is None]
        if unpriced:
            raise ConfigError(f"--objective cost needs a price per hour; none for "
                              f"{', '.join(unpriced)} (add price_per_hour to its profile)")
    max_model_len = spec.get("max_model_len") or max_model_len_for(workload, model)
    space = SearchSpace.build(model=model, hardware=hardware, gpus=int(spec["gpus"]),
                              max_model_len=int(max_model_len),
                              allow_quant=spec.get("allow_quant", "bf16,fp8"),
                              speculative=spec.get("speculative", True),
                              small=spec.get("small", False))
    traffic = traffic_stats(workload)
    targets = {s.metric: s.target_s for s in slos}
    start = time.perf_counter()
    pruned = prune(space, traffic, ttft_target_s=targets.get("ttft"),
                   tpot_target_s=min(filter(None, (targets.get("tpot"), targets.get("itl"))),
                                     default=None))
    prune_s = time.perf_counter() - start
    evaluator = Evaluator(space=space, pruned=pruned, workload=workload, slos=slos,
                          traffic=traffic, objective=spec["objective"],
                          seed=int(spec.get("seed", 0)))
    return Search(spec=spec, space=space, workload=workload, slos=slos, traffic=traffic,
                  pruned=pruned, evaluator=evaluator, prune_s=prune_s)
