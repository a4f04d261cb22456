"""From the search's outcome to the plan: the deployment, what it serves, why the others lost.

The branch and bound (``tuner.search.cheapest``) names the deployment: the cheapest that serves the
traffic's rate (or, with no rate, the one with the most capacity on the budget), among those
that also launch under the chosen engine's own memory rule (``launch_check``: a plan that
cannot launch is never chosen). ``assemble_plan`` then

- simulates the whole deployment (every replica behind the router) at the traffic's rate for
  the predicted metrics, the SLO margins and the report's latency distributions;
- states the capacity: what one replica serves within the SLOs, what the deployment serves, the
  headroom over the offered rate, and the rate at which one more replica is needed;
- keeps the Pareto set of the deployments it simulated (cost against p99 TPOT) and up to ten
  runners-up, one per layout, each with the reason it lost (``tuner.runners_up``).
"""

from __future__ import annotations

from typing import Any

from tuner.runners_up import alternatives, pareto_front

__all__ = ["assemble_plan", "launch_check"]


def _memory_plan(search: Any, point: Any) -> Any:
    """The per-GPU memory plan of a replica configuration, as the plan states it: the target's
    memory, and a speculative drafter's beside it (``simulator.cost.memory.drafter_memory``)."""
    from simulator.cost.configs import ConfigArrays
    from simulator.cost.memory import drafter_memory, kv_tokens_needed
    from simulator.cost.predict import predict
    from simulator.data.models import get_model
    from tuner.plan_memory import memory_plan

    space, traffic = search.space, search.traffic
    config = space.to_config(point)
    hardware = space.hardware_spec(point.hardware)
    memory = predict(
        space.model,
        hardware,
        config,
        batch=point.max_num_seqs,
        prompt=max(int(traffic.mean_prompt), 1),
        context=int(traffic.mean_length),
    ).memory
    needed = kv_tokens_needed(
        point.max_num_seqs,
        traffic.mean_length,
        block_size=config.block_size,
        max_model_len=space.max_model_len,
    )
    spec = config.speculative
    drafter_weights, drafter_kv = 0.0, 0.0
    if spec is not None:
        weights, kv = drafter_memory(
            space.model,
            hardware,
            ConfigArrays.from_configs([config]),
            method=spec.method,
            draft_model=get_model(spec.draft_model) if spec.method == "draft" else None,
        )
        drafter_weights, drafter_kv = float(weights[0]), float(kv[0])
    return memory_plan(
        memory=memory,
        hardware=hardware,
        gpu_memory_utilization=config.gpu_memory_utilization,
        kv_tokens_needed=float(needed),
        drafter_weights_bytes=drafter_weights,
        drafter_kv_bytes_per_token=drafter_kv,
    )


def launch_check(search: Any, engine: str, model_id: str | None) -> Any:
    """``candidate -> None | reason``: whether ``engine`` launches it under its memory rule."""
    from simulator.errors import ConfigError
    from tuner.handover.sections import render_engines

    cache: dict[tuple, str | None] = {}

    def check(candidate: Any) -> str | None:
        key = candidate.point.replica_key
        if key not in cache:
            try:
                render_engines(
                    config=search.space.to_config(candidate.point),
                    model=search.space.model,
                    hardware=search.space.hardware_spec(candidate.point.hardware),
                    memory=_memory_plan(search, candidate.point),
                    chosen=engine,
                    model_id=model_id,
                    served_model_name=search.space.model.name,
                )
                cache[key] = None
            except ConfigError as error:
                cache[key] = f"cannot launch under {engine}: {error}"
        return cache[key]

    return check


def _capacity_info(outcome: Any, choice: Any) -> dict[str, Any]:
    replica = choice.capacity
    info: dict[str, Any] = {
        "replica_rate_per_s": replica,
        "replicas": choice.replicas,
        "deployment_rate_per_s": None if replica is None else choice.replicas * replica,
        "bound_rate_per_s": choice.candidate.rate_bound,
        "bound_limit": choice.candidate.limit,
        "offered_rate_per_s": outcome.rate,
        "headroom": None,
        "next_replica_at_rate_per_s": None,
    }
    if replica is not None and outcome.rate:
        total = choice.replicas * replica
        info["headroom"] = total / outcome.rate - 1.0
        info["next_replica_at_rate_per_s"] = total
    return info


def assemble_plan(
    *,
    search: Any,
    outcome: Any,
    study: Any,
    provenance: dict[str, Any],
    engine: str,
    model_id: str | None = None,
    prober: Any = None,
) -> tuple[Any, Any]:
    """The plan of ``outcome.best`` and the simulation of the whole deployment behind it.
    ``NoFeasiblePlanError`` names the closest candidate when nothing was found."""
    from optuna.trial import TrialState

    from simulator.cost.bands import band_source
    from simulator.errors import NoFeasiblePlanError
    from simulator.serving.simulate import simulate
    from tuner.handover.sections import render_engines
    from tuner.handover.topology import lay_out
    from tuner.plan import (
        DeploymentPlan,
        Provenance,
        QuantizationInfo,
        RouterInfo,
        SloCheck,
        SpeculativeInfo,
        TopologyInfo,
        WorkloadInfo,
        hf_model_id,
    )
    from tuner.search.choices import KV_SCHEMES, WEIGHT_SCHEMES
    from tuner.search.trials import KIND_ATTR

    if outcome.best is None:
        raise NoFeasiblePlanError(_closest(search, outcome))
    choice, space, slos = outcome.best, search.space, search.slos
    point = choice.candidate.deployment(choice.replicas)
    config = space.to_config(point)
    hardware = space.hardware_spec(point.hardware)
    memory = _memory_plan(search, point)
    engines = render_engines(config=config, model=space.model, hardware=hardware, memory=memory,
                             chosen=engine, model_id=model_id,
                             served_model_name=space.model.name)  # fmt: skip
    layout = lay_out(
        replicas=config.dp,
        gpus_per_replica=config.gpus_per_replica,
        gpus_per_node=hardware.gpus_per_node,
    )
    workload = search.workload
    if outcome.rate is None:  # serve the budget's capacity: the deployment at that rate
        from simulator.serving.capacity import at_rate

        workload = at_rate(workload, choice.total_capacity)
    result = simulate(space.model, hardware, config, workload, seed=search.seed, slos=slos)
    prediction = result.prediction
    checks = []
    for check in result.slo_checks:
        got = float(check.value_s)
        band = prediction.bands.get(check.slo.name)
        source = band_source(hardware, check.slo.metric) if band else None
        checks.append(SloCheck(
            name=check.slo.name, metric=check.slo.metric, percentile=check.slo.percentile,
            target_s=check.slo.target_s, predicted_s=got, met=got <= check.slo.target_s,
            margin=(check.slo.target_s - got) / check.slo.target_s, band_s=band,
            band_source=source,
        ))  # fmt: skip
    names = search.metric_names
    complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)) if study else []
    trials = [t for t in complete if t.user_attrs.get(KIND_ATTR) == "deployment"]
    # The trial that shows the deployment serving: its own run at the traffic's rate or a
    # capacity probe of it, else (an answer shared within a schedule group) the run of the
    # configuration that differs only in batching knobs.
    meeting = [t for t in [*trials, *complete] if t.user_attrs.get("meets")]
    chosen_trial = next(
        (t for t in meeting if t.user_attrs.get("label") == point.label()), None
    ) or next(
        (t for t in meeting
         if _schedule_label(t.user_attrs.get("label", "")) == _schedule_label(point.label())),
        None,
    )  # fmt: skip
    weights, kv = WEIGHT_SCHEMES[point.weights], KV_SCHEMES[point.kv]
    spec_cfg = config.speculative
    plan = DeploymentPlan(
        model=space.model.name,
        model_id=model_id or hf_model_id(space.model),
        hardware=hardware.name,
        gpu_budget=space.gpus,
        num_gpus=point.num_gpus,
        replicas=point.replicas,
        gpus_per_replica=point.gpus_per_replica,
        config=config,
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
            name=search.workload.name,
            rate_requests_per_s=outcome.rate,
            num_requests=search.workload.num_requests,
            seed=search.workload.seed,
            mean_prompt_tokens=search.traffic.mean_prompt,
            mean_output_tokens=search.traffic.mean_output,
        ),
        objectives=dict(zip(names, search.directions, strict=True)),
        slos=checks,
        predicted=prediction.model_copy(update={"ops": []}),
        cost_per_hour=choice.cost if search.priced else None,
        capacity=_capacity_info(outcome, choice),
        memory=memory,
        topology=TopologyInfo.of(layout),
        router=RouterInfo(
            policy="least_outstanding",
            endpoints=[f"NODE{r.nodes[0]}_ADDR:{r.port}" for r in layout.replicas],
            description="send each request to the replica with the fewest requests in flight "
            "(what the simulation assumed); any HTTP load balancer with a least-outstanding-"
            "requests policy over these endpoints does it",
        ),
        pareto=pareto_front(trials, names, search.directions[0] == "maximize"),
        alternatives=alternatives(search, outcome, prober),
        search={
            "space": space.describe(),
            "pruning": search.pruned.counts(),
            "spec": dict(search.spec),
            "bound": _search_stats(search, outcome, provenance),
        },
        provenance=Provenance(
            **{
                **provenance,
                "trial": chosen_trial.number if chosen_trial else -1,
            }
        ),  # fmt: skip
        engine=engine,
        engines=engines,
    )
    return plan, result


def _schedule_label(label: str) -> str:
    """A deployment's label without its batching knobs (what a schedule group shares)."""
    import re

    return re.sub(r" seqs=\d+| chunk=\d+| no-chunk", "", label)


def _search_stats(search: Any, outcome: Any, provenance: dict[str, Any]) -> dict[str, Any]:
    table = search.table
    return {
        "question": "cheapest for the rate" if outcome.mode == "rate" else "most capacity",
        "unit": table.unit,
        "candidates": len(table),
        "ruled_out_before_search": dict(table.ruled_out),
        "simulated_candidates": len(outcome.visited),
        "ruled_out_by_bound": outcome.ruled_out_by_bound,
        "simulations": provenance.get("evaluations", 0),
        "shared_simulations": provenance.get("shared", 0),
        "stopped_early": provenance.get("stopped_early", 0),
        "tie_probes": outcome.tie_probes,
        "proven": outcome.proven,
        "stopped": outcome.stopped,
        "bound_s": round(search.bound_s, 3),
    }


def _closest(search: Any, outcome: Any) -> str:
    """Why nothing was found, naming the candidate that came closest."""
    where = f"{search.space.gpus} x {'/'.join(search.space.hardware_names)}"
    if outcome.inadmissible:
        reason = next(iter(outcome.inadmissible.values()))
        return f"every configuration that serves the traffic on {where} fails to launch: {reason}"
    if not search.table.candidates:
        return f"no configuration on {where} can meet the SLOs, even alone"
    if outcome.stopped:
        return f"no deployment found before the search {outcome.stopped.removeprefix('stopped ')}"
    best = max(search.table.candidates, key=lambda c: c.rate_bound * (search.space.gpus // c.gpus))
    reps = search.space.gpus // best.gpus
    if outcome.rate is None:
        return f"no configuration on {where} meets the SLOs at any rate"
    return (
        f"no configuration serves {outcome.rate:g} req/s within the SLOs on {where}; "
        f"the most any could by its bound is {reps * best.rate_bound:.2f} req/s "
        f"({best.deployment(reps).label()})"
    )
