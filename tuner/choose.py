"""Choosing the plan from a finished study, and saying why every runner-up lost.

A trial is *feasible* when its point was simulated and every constraint is met (memory fit,
each SLO, a stable queue). Feasible trials are ranked by the first objective (values within
1 % of the best count as equal), then p99 TPOT, then less quantization risk, then chunked
prefill on (the engines' default), then trial number. The first one that also renders under
the chosen engine *and* holds its KV cache under that engine's own memory rule becomes the
plan; a plan that cannot launch is never written. The ten best other configurations are kept
with a one-line reason each (misses an SLO by how much, does not fit, cannot launch, less
goodput, riskier quantization...).
"""

from __future__ import annotations

from typing import Any

__all__ = ["assemble_plan", "trial_feasible", "RISK_ORDER"]


_SHOWN = (
    "ttft_p99_s",
    "tpot_p99_s",
    "e2e_p99_s",
    "goodput_tokens_per_s_per_gpu",
    "output_tokens_per_s_per_gpu",
    "output_tokens_per_s_per_user",
    "slo_attainment",
    "goodput_cost_per_million_tokens",
    "num_gpus",
)


def trial_feasible(trial: Any) -> bool:
    return trial.user_attrs.get("status") == "ok" and all(
        v <= 0 for v in trial.constraints.values()
    )


def _violations(trial: Any, slos: list) -> list[str]:
    out = []
    metrics = trial.user_attrs.get("metrics", {})
    for key, value in trial.constraints.items():
        if value <= 0:
            continue
        if key == "fit":
            out.append(trial.user_attrs.get("reason") or "does not fit in memory")
            continue
        if key == "stable":
            out.append("overloaded: arrivals outpace service and the queue keeps growing")
            continue
        slo = next((s for s in slos if s.name == key), None)
        got = metrics.get(key)
        if slo is not None and got is not None and trial.user_attrs.get("simulated"):
            out.append(f"misses {key}: {got * 1e3:,.1f} ms > {slo.target_s * 1e3:,.0f} ms")
        else:
            out.append(trial.user_attrs.get("reason") or f"misses {key}")
    return list(dict.fromkeys(out))


def _candidate(trial: Any, names: list[str], why_not: str | None = None) -> Any:
    from tuner.plan import Candidate

    metrics = trial.user_attrs.get("metrics", {})
    return Candidate(
        trial=trial.number,
        label=trial.user_attrs.get("label", "?"),
        params=dict(trial.params),
        feasible=trial_feasible(trial),
        objectives=dict(zip(names, trial.values, strict=True)),
        metrics={k: metrics.get(k) for k in _SHOWN if k in metrics},
        risk=trial.user_attrs.get("risk", "none"),
        why_not=why_not,
    )


def _why_not(trial: Any, best: Any, slos: list, maximize: bool, objective: str) -> str:
    if trial.user_attrs.get("status") not in (None, "ok"):
        return f"{trial.user_attrs['status']}: {trial.user_attrs.get('reason', '')}".strip()
    violations = _violations(trial, slos)
    if violations:
        return "; ".join(violations)
    (a0, a1), (b0, b1) = trial.values, best.values
    what = "goodput per GPU" if objective == "goodput" else "cost per M tokens"
    if not _near(a0, b0):
        change = abs(a0 - b0) / abs(b0) * 100 if b0 else 100.0
        text = f"{change:.1f}% {'less' if maximize else 'higher'} {what} than the plan"
        mine, plans = trial.user_attrs["point"], best.user_attrs["point"]
        gpus, best_gpus = (p["replicas"] * p["tp"] * p["pp"] for p in (mine, plans))
        if gpus != best_gpus:
            text += f" ({gpus} GPUs where the plan uses {best_gpus})"
        return text
    if a1 > b1 * 1.001:
        return (
            f"{what} within {100 * TIE:g}% of the plan, but higher p99 TPOT "
            f"({a1 * 1e3:.1f} ms vs {b1 * 1e3:.1f} ms)"
        )
    risk = trial.user_attrs.get("risk", "none")
    if RISK_ORDER.index(risk) > RISK_ORDER.index(best.user_attrs.get("risk", "none")):
        return f"same performance with riskier quantization ({risk})"
    if trial.user_attrs["point"]["chunked_prefill"] != best.user_attrs["point"]["chunked_prefill"]:
        return "ties the plan, which keeps chunked prefill on (the engines' default)"
    return "ties the plan; the plan came first"


RISK_ORDER = ["none", "low", "medium", "high"]
# Objective values this close count as equal: the simulation's throughput over a finite run
# moves by about that much with the request mix, so the next criteria decide.
TIE = 0.01


def _layout(trial: Any) -> tuple:
    p = trial.user_attrs["point"]
    keys = ("hardware", "replicas", "tp", "pp", "ep", "weights", "kv", "spec_method")
    return tuple(p[k] for k in keys)


def _near(value: float, best: float) -> bool:
    return abs(value - best) <= TIE * abs(best)


def assemble_plan(
    *,
    study: Any,
    search: Any,
    provenance: dict[str, Any],
    engine: str,
    model_id: str | None = None,
) -> tuple[Any, Any]:
    """Choose the best feasible trial that also launches under ``engine`` and build its plan.

    Order: objective 1, then p99 TPOT, then lower quantization risk. Returns the plan and the
    chosen ``Evaluation`` (with the simulator's result). ``NoFeasiblePlanError`` names the
    closest candidate when nothing meets every constraint."""
    from optuna.trial import TrialState

    from simulator.errors import ConfigError, NoFeasiblePlanError
    from simulator.predict import predict
    from tuner.choices import KV_SCHEMES, WEIGHT_SCHEMES
    from tuner.plan import (
        DeploymentPlan,
        Provenance,
        QuantizationInfo,
        SloCheck,
        SpeculativeInfo,
        WorkloadInfo,
        hf_model_id,
        memory_plan,
        render_engines,
    )
    from tuner.space import Point

    spec, space, slos = search.spec, search.space, search.slos
    names, maximize = search.metric_names, search.directions[0] == "maximize"
    trials = [
        t
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if "point" in t.user_attrs
    ]

    feasible_values = [t.values[0] for t in trials if trial_feasible(t)]
    top = (max if maximize else min)(feasible_values, default=0.0)

    def rank(t: Any) -> tuple:
        # Within TIE of the best objective, lower p99 TPOT wins; then less quantization risk,
        # then chunked prefill on (the engines' default, which vLLM warns about turning off),
        # then the earlier trial.
        point, near = t.user_attrs["point"], _near(t.values[0], top)
        return (
            not near,
            0.0 if near else (-t.values[0] if maximize else t.values[0]),
            t.values[1],
            RISK_ORDER.index(t.user_attrs.get("risk", "none")),
            not point["chunked_prefill"],
            t.number,
        )

    feasible = sorted((t for t in trials if trial_feasible(t)), key=rank)
    if not feasible:
        raise NoFeasiblePlanError(_closest(trials, slos))
    launch_failures: dict[int, str] = {}
    model_id = model_id or hf_model_id(space.model)
    for best in feasible:
        point = Point(**best.user_attrs["point"])
        config = space.to_config(point)
        hardware = space.hardware_spec(point.hardware)
        traffic = search.traffic
        memory = predict(
            space.model,
            hardware,
            config,
            batch=point.max_num_seqs,
            prompt=max(int(traffic.mean_prompt), 1),
            context=int(traffic.mean_length),
        ).memory
        block = config.block_size
        needed = max(
            point.max_num_seqs * -(-traffic.mean_length // block) * block,
            -(-space.max_model_len // block) * block,
        )
        mem = memory_plan(
            memory=memory,
            hbm_bytes=hardware.hbm_bytes,
            gpu_memory_utilization=config.gpu_memory_utilization,
            kv_tokens_needed=float(needed),
        )
        try:
            engines = render_engines(
                config=config,
                model_id=model_id,
                memory=mem,
                chosen=engine,
                served_model_name=space.model.name,
            )
        except ConfigError as error:
            launch_failures[best.number] = f"cannot launch under {engine}: {error}"
            continue
        break
    else:
        raise NoFeasiblePlanError(
            "every configuration that meets the SLOs fails the "
            f"{engine} memory rule: {next(iter(launch_failures.values()))}"
        )
    evaluation = search.evaluator.evaluate(point)
    metrics = evaluation.metrics
    checks = []
    for slo in slos:
        got = metrics.get(slo.name)
        got = float("inf") if got is None else float(got)
        checks.append(
            SloCheck(
                name=slo.name,
                metric=slo.metric,
                percentile=slo.percentile,
                target_s=slo.target_s,
                predicted_s=got,
                met=got <= slo.target_s,
                margin=(slo.target_s - got) / slo.target_s,
            )
        )
    predicted = {
        k: v
        for k, v in evaluation.prediction.model_dump(mode="json").items()
        if k not in ("ops", "config", "model", "hardware")
        and not (isinstance(v, list) and len(v) > 64)
    }
    predicted["goodput_tokens_per_s_per_gpu"] = metrics.get("goodput_tokens_per_s_per_gpu")
    predicted["slo_attainment"] = metrics.get("slo_attainment")
    weights, kv = WEIGHT_SCHEMES[point.weights], KV_SCHEMES[point.kv]
    spec_cfg = config.speculative
    pareto = [_candidate(t, names) for t in study.best_trials if "point" in t.user_attrs]
    # Runners-up, best first, one per layout (replicas, parallelism, dtypes, speculation), so
    # the table contrasts real alternatives rather than batching variants of one.
    seen, alternatives = {_layout(best)}, list[Any]()
    for t in sorted(
        (t for t in trials if t.user_attrs.get("simulated")),
        key=lambda t: (-t.values[0] if maximize else t.values[0], t.values[1]),
    ):
        if _layout(t) not in seen and len(alternatives) < 10:
            seen.add(_layout(t))
            why = launch_failures.get(t.number) or _why_not(
                t, best, slos, maximize, spec["objective"]
            )
            alternatives.append(_candidate(t, names, why))
    workload = search.workload
    plan = DeploymentPlan(
        model=space.model.name,
        model_id=model_id,
        hardware=hardware.name,
        gpu_budget=space.gpus,
        num_gpus=point.num_gpus,
        replicas=point.replicas,
        gpus_per_replica=point.gpus_per_replica,
        config=config.model_dump(mode="json"),
        quantization=QuantizationInfo(
            weights=point.weights,
            weight_dtype=weights.weight_dtype,
            activation_dtype=weights.activation_dtype,
            kv_dtype=point.kv,
            risk=point.risk,
            weights_risk=weights.risk,
            kv_risk=kv.risk,
            description=f"{weights.description}; {kv.description}",
            allowed=[*space.weights, *(f"kv-{k}" for k in space.kv if k != "bf16")],
        ),
        speculative=None
        if spec_cfg is None
        else SpeculativeInfo(
            method=spec_cfg.method,
            draft_model=spec_cfg.draft_model,
            num_speculative_tokens=spec_cfg.num_speculative_tokens,
            acceptance_rate=spec_cfg.acceptance_rate,
        ),
        workload=WorkloadInfo(
            name=workload.name,
            rate_requests_per_s=workload.arrival.rate_per_s,
            num_requests=workload.num_requests,
            seed=workload.seed,
            mean_prompt_tokens=traffic.mean_prompt,
            mean_output_tokens=traffic.mean_output,
        ),
        objectives=dict(zip(names, search.directions, strict=True)),
        slos=checks,
        predicted=predicted,
        memory=mem,
        pareto=pareto,
        alternatives=alternatives,
        search={
            "space": space.describe(),
            "pruning": search.pruned.counts(),
            "spec": {k: v for k, v in spec.items()},
        },
        provenance=Provenance(**{**provenance, "trial": best.number}),
        engine=engine,
        engines=engines,
    )
    return plan, evaluation


def _closest(trials: list, slos: list) -> str:
    simulated = [t for t in trials if t.user_attrs.get("simulated")] or trials
    if not simulated:
        return "no trial finished"

    def worst(t: Any) -> float:
        return max([v for v in t.constraints.values()] or [0.0])

    near = min(simulated, key=worst)
    return (
        f"no configuration meets the SLOs in {len(trials)} trials; closest: "
        f"{near.user_attrs.get('label', '?')}: {'; '.join(_violations(near, slos))}"
    )
