"""``tune plan``: search the deployment space, then write a study directory.

    tune plan --model llama-3.1-70b --hardware h100-sxm --gpus 16 --workload chat \\
              --slo ttft_p99=2s --slo tpot_p99=50ms

Steps: validate every input (nothing is written before that), prune the space with the step
model, run the Optuna study (resuming it when the directory already holds one), choose the plan,
then write ``plan.json``, the engine configs and the report into the study directory through a
staging folder, ``plan.json`` last, so an interrupted run never leaves half a plan.
Exit codes: 0 plan written, 1 runtime failure, 2 bad input, 3 nothing meets the SLOs, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from . import common

DEFAULT_TRIALS = 150


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan", help="search deployments; write plan.json, engine configs and a report",
        description="Search parallelism, quantization, batching and speculative decoding for "
        "a model on a GPU budget under traffic and SLOs; write the best plan, its vLLM / SGLang "
        "/ TensorRT-LLM configs and a report into a study directory.")
    common.add_model_hardware_args(parser)
    parser.add_argument("--gpus", type=int, required=True, help="GPU budget (the most to use)")
    common.add_workload_args(parser)
    parser.set_defaults(workload="chat", requests=None)
    search = parser.add_argument_group("search")
    search.add_argument("--allow-quant", default="bf16,fp8",
                        help="quantization allowed: bf16, fp8 (W8A8 + FP8 KV, low risk), int8 "
                             "(W8A8, medium), int4 (weight-only, high), kv-fp8, all "
                             "(default bf16,fp8)")
    search.add_argument("--no-speculative", action="store_true",
                        help="do not search speculative decoding")
    search.add_argument("--objective", default="goodput", choices=["goodput", "cost"],
                        help="goodput per GPU (default) or cost per million tokens, "
                             "each against p99 TPOT")
    search.add_argument("--trials", type=int, default=DEFAULT_TRIALS,
                        help=f"complete trials in the study (default {DEFAULT_TRIALS})")
    search.add_argument("--timeout", type=float, default=None, help="stop searching after S s")
    search.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random"])
    search.add_argument("--exhaustive", action="store_true",
                        help="try every point (BruteForceSampler): checks the search on small "
                             "spaces (see --small-space)")
    search.add_argument("--small-space", action="store_true",
                        help="a few choices per knob: an enumerable space")
    search.add_argument("--max-model-len", type=int, default=None,
                        help="default: the longest request of the workload, rounded up")
    out = parser.add_argument_group("output and storage")
    out.add_argument("--out", default=None,
                     help="study directory (default studies/MODEL-NxGPU-WORKLOAD)")
    out.add_argument("--study", default=None, help="study name (default: the directory name)")
    out.add_argument("--storage", default=None,
                     help="postgresql://... to share the study with `tune worker`s "
                          "(default: a journal file in the study directory)")
    out.add_argument("--heartbeat", type=int, default=10, help="heartbeat seconds (RDB storage)")
    out.add_argument("--engine", default="vllm", choices=["vllm", "sglang", "trtllm"],
                     help="the engine whose memory rule the plan must satisfy (default vllm)")
    out.add_argument("--model-id", default=None, help="checkpoint id or path the engines load")
    out.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from simulator.errors import ConfigError

    if args.gpus < 1:
        raise ConfigError(f"--gpus must be at least 1 (got {args.gpus})")
    if args.trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {args.trials})")
    return {
        "model": args.model, "hardware": [h.strip() for h in args.hardware.split(",") if h.strip()],
        "gpus": args.gpus, "workload": args.workload, "rate": args.rate,
        "requests": args.requests or 1000, "seed": args.seed, "slos": list(args.slo),
        "allow_quant": args.allow_quant, "speculative": not args.no_speculative,
        "small": args.small_space, "objective": args.objective,
        "max_model_len": args.max_model_len, "calibration": not args.no_calibration,
        "trials": args.trials, "sampler": args.sampler, "engine": args.engine,
        "model_id": args.model_id, "exhaustive": args.exhaustive,
    }


def default_out(spec: dict[str, Any], search: Any) -> Path:
    short = "+".join(name.split("-")[0] for name in search.space.hardware_names)
    workload = str(spec["workload"]).split(":")[0]
    workload = Path(workload).stem if "/" in workload else workload
    return Path("studies") / f"{search.space.model.name}-{spec['gpus']}x{short}-{workload}"


def run(args: argparse.Namespace) -> int:
    from simulator.errors import NoFeasiblePlanError
    from tuner import study as studies
    from tuner.objective import build_search, make_objective
    from tuner.prune import hopeless_reason

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    spec = spec_from_args(args)
    search = build_search(spec)  # every bad name or value fails here, before any file exists
    counts = search.pruned.counts()
    if counts["ok"] == 0:
        raise NoFeasiblePlanError(hopeless_reason(search.pruned, search.slos))
    storage = studies.open_storage(args.storage, heartbeat_s=args.heartbeat) \
        if args.storage else None
    out_dir = Path(args.out) if args.out else default_out(spec, search)
    if out_dir.exists() and not out_dir.is_dir():
        from simulator.errors import ConfigError

        raise ConfigError(f"--out {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = studies.open_storage(None, study_dir=out_dir)
    name = args.study or out_dir.resolve().name
    sampler = studies.make_sampler(args.sampler, seed=args.seed, exhaustive=args.exhaustive)
    study = studies.create_study(storage=storage, name=name, directions=search.directions,
                                 metric_names=search.metric_names, sampler=sampler, spec=spec)
    if not args.storage:
        studies.recover_stale_trials(study)
    if not study.get_trials(deepcopy=False):
        studies.seed_baselines(study, search, limit=max(2, min(10, args.trials // 8)))
    budget = search.space.size() if args.exhaustive else args.trials
    objective = make_objective(search.evaluator, budget=budget)
    progress = _progress(budget, quiet=args.quiet or args.json)
    try:
        if args.exhaustive:
            study.optimize(objective, timeout=args.timeout, catch=(), gc_after_trial=False,
                           callbacks=[lambda s, t: progress(1 + t.number)])
        else:
            studies.run_trials(study, objective, budget=budget, timeout_s=args.timeout,
                               on_progress=progress)
    except KeyboardInterrupt:
        progress(None)
        print(f"tune plan: stopped; finished trials are kept in {out_dir} - run the same "
              "command to resume", file=sys.stderr)
        raise
    progress(None)
    plan, files = finish(study=study, search=search, out_dir=out_dir, storage_url=args.storage,
                         name=name, started=started, engine=args.engine,
                         model_id=args.model_id, report=not args.no_report)
    if args.json:
        common.print_json(plan.model_dump(mode="json"))
    else:
        print(summary(plan, search, out_dir, files))
    return 0


def finish(*, study: Any, search: Any, out_dir: Path, storage_url: str | None, name: str,
           started: float, engine: str, model_id: str | None, report: bool) -> tuple[Any, list]:
    """Choose the plan, draw the report, write the study directory (plan.json last)."""
    from datetime import datetime, timezone

    from tuner.cli import _version
    from tuner.report import build_report, write_study_dir
    from tuner.study import redact

    hardware = search.space.hardware[0]
    efficiency = hardware.efficiency
    provenance = {
        "rooftune_version": _version(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "tune " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("tune") else
        "tune plan " + " ".join(_flags(search.spec)),
        "hardware_profile": {h.name: {"display_name": h.display_name, "sources": h.sources,
                                      "price_per_hour": h.price_per_hour}
                             for h in search.space.hardware},
        "calibration": {"source": efficiency.source, "provenance": dict(efficiency.provenance)},
        "study_name": name, "storage": redact(storage_url) if storage_url else
        str(out_dir / "study.journal"),
        "sampler": "bruteforce" if search.spec.get("exhaustive") else search.spec["sampler"],
        "seed": int(search.spec["seed"]), "trial": -1,
        "trials": len(study.get_trials(deepcopy=False)),
        "evaluations": search.evaluator.evaluations, "wall_s": 0.0,
    }
    plan, _ = assemble_plan(study=study, search=search, provenance=provenance, engine=engine,
                            model_id=model_id)
    figures = html_text = md_text = None
    if report:
        figures, html_text, md_text = build_report(plan=plan, study=study, search=search)
    plan.provenance.wall_s = round(time.perf_counter() - started, 2)
    files = write_study_dir(out_dir=out_dir, plan=plan, figures=figures, html_text=html_text,
                            md_text=md_text)
    return plan, files


def _flags(spec: dict[str, Any]) -> list[str]:
    flags = [f"--model {spec['model']}", f"--hardware {','.join(spec['hardware'])}",
             f"--gpus {spec['gpus']}", f"--workload {spec['workload']}"]
    flags += [f"--slo {s}" for s in spec["slos"]]
    return flags


def summary(plan: Any, search: Any, out_dir: Path, files: list) -> str:
    """The one screen printed at the end: the plan, its predictions, where the files are."""
    from tuner.report import _summary_rows
    from tuner.textfmt import key_values

    pruned = search.pruned.counts()
    prov = plan.provenance
    head = (f"tune plan: {plan.model} on up to {plan.gpu_budget} x {plan.hardware}, "
            f"{plan.workload.name} traffic; searched {prov.trials} trials "
            f"({prov.evaluations} simulated; {pruned['ok']} of {len(search.pruned)} replica "
            f"configurations survived pruning) in {prov.wall_s:.1f} s")
    rows = list(_summary_rows(plan))
    for s in plan.slos:
        rows.append((s.name, f"{s.predicted_s * 1e3:,.1f} ms predicted vs "
                             f"{s.target_s * 1e3:,.0f} ms target ({'met' if s.met else 'MISSED'})"))
    m = plan.memory
    rows.append(("memory per GPU", f"weights {m.weights_bytes / 1e9:.1f} GB, KV cache "
                                   f"{m.kv_cache_bytes / 1e9:.1f} GB ({m.kv_tokens:,.0f} tokens),"
                                   f" budget {m.budget_bytes / 1e9:.1f} GB"))
    names = sorted({str(f.relative_to(out_dir)) for f in files if f.parent == out_dir})
    return "\n".join([head, key_values(rows, title="best plan:"),
                      f"files in {out_dir}/: {', '.join(names)}",
                      f"regenerate the report: tune report {out_dir}"])


def _progress(total: int, *, quiet: bool):
    """A callback that moves a progress bar to n complete trials (None closes it)."""
    from tqdm import tqdm

    bar = tqdm(total=total, desc="trials", unit="trial", file=sys.stderr, leave=False,
               disable=True if quiet else None, dynamic_ncols=True)

    def update(n: int | None) -> None:
        if n is None:
            bar.close()
            return
        bar.update(max(0, min(n, total) - bar.n))

    return update



# --- from a finished study to a plan ---------------------------------------------------------

_SHOWN = ("ttft_p99_s", "tpot_p99_s", "e2e_p99_s", "goodput_tokens_per_s_per_gpu",
          "output_tokens_per_s_per_gpu", "output_tokens_per_s_per_user", "slo_attainment",
          "goodput_cost_per_million_tokens", "num_gpus")


def trial_feasible(trial: Any) -> bool:
    return trial.user_attrs.get("status") == "ok" and all(
        v <= 0 for v in trial.constraints.values())


def _violations(trial: Any, slos: list) -> list[str]:
    out = []
    metrics = trial.user_attrs.get("metrics", {})
    for key, value in trial.constraints.items():
        if value <= 0:
            continue
        if key == "fit":
            out.append(trial.user_attrs.get("reason") or "does not fit in memory")
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
    return Candidate(trial=trial.number, label=trial.user_attrs.get("label", "?"),
                     params=dict(trial.params), feasible=trial_feasible(trial),
                     objectives=dict(zip(names, trial.values, strict=True)),
                     metrics={k: metrics.get(k) for k in _SHOWN if k in metrics},
                     risk=trial.user_attrs.get("risk", "none"), why_not=why_not)


def _why_not(trial: Any, best: Any, slos: list, maximize: bool, objective: str) -> str:
    if trial.user_attrs.get("status") not in (None, "ok"):
        return f"{trial.user_attrs['status']}: {trial.user_attrs.get('reason', '')}".strip()
    violations = _violations(trial, slos)
    if violations:
        return "; ".join(violations)
    (a0, a1), (b0, b1) = trial.values, best.values
    if (b0 - a0 if maximize else a0 - b0) > 1e-3 * abs(b0):
        change = abs(a0 - b0) / abs(b0) * 100 if b0 else 100.0
        what = "less goodput per GPU" if objective == "goodput" else "higher cost per M tokens"
        return f"{change:.1f}% {what} than the plan"
    if a1 > b1 * 1.001:
        return f"higher p99 TPOT ({a1 * 1e3:.1f} ms vs {b1 * 1e3:.1f} ms) at equal throughput"
    risk = trial.user_attrs.get("risk", "none")
    if RISK_ORDER.index(risk) > RISK_ORDER.index(best.user_attrs.get("risk", "none")):
        return f"same performance with riskier quantization ({risk})"
    return "ties the plan; the plan came first"


RISK_ORDER = ["none", "low", "medium", "high"]


def assemble_plan(*, study: Any, search: Any, provenance: dict[str, Any], engine: str,
                  model_id: str | None = None) -> tuple[Any, Any]:
    """Choose the best feasible trial that also launches under ``engine`` and build its plan.

    Order: objective 1, then p99 TPOT, then lower quantization risk. Returns the plan and the
    chosen ``Evaluation`` (with the simulator's result). ``NoFeasiblePlanError`` names the
    closest candidate when nothing meets every constraint."""
    from optuna.trial import TrialState

    from simulator.errors import ConfigError, NoFeasiblePlanError
    from simulator.predict import predict
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
    from tuner.space import KV_SCHEMES, WEIGHT_SCHEMES, Point

    spec, space, slos = search.spec, search.space, search.slos
    names, maximize = search.metric_names, search.directions[0] == "maximize"
    trials = [t for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
              if "point" in t.user_attrs]

    def rank(t: Any) -> tuple:
        # Ties go to less quantization risk, then chunked prefill on (the engines' default,
        # which vLLM no longer lets one turn off safely), then the earlier trial.
        point = t.user_attrs["point"]
        return (-t.values[0] if maximize else t.values[0], t.values[1],
                RISK_ORDER.index(t.user_attrs.get("risk", "none")),
                not point["chunked_prefill"], t.number)

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
        memory = predict(space.model, hardware, config, batch=point.max_num_seqs,
                         prompt=max(int(traffic.mean_prompt), 1),
                         context=int(traffic.mean_length)).memory
        block = config.block_size
        needed = max(point.max_num_seqs * -(-traffic.mean_length // block) * block,
                     -(-space.max_model_len // block) * block)
        mem = memory_plan(memory=memory, hbm_bytes=hardware.hbm_bytes,
                          gpu_memory_utilization=config.gpu_memory_utilization,
                          kv_tokens_needed=float(needed))
        try:
            engines = render_engines(config=config, model_id=model_id, memory=mem, chosen=engine,
                                     served_model_name=space.model.name)
        except ConfigError as error:
            launch_failures[best.number] = f"cannot launch under {engine}: {error}"
            continue
        break
    else:
        raise NoFeasiblePlanError("every configuration that meets the SLOs fails the "
                                  f"{engine} memory rule: {next(iter(launch_failures.values()))}")
    evaluation = search.evaluator.evaluate(point)
    metrics = evaluation.metrics
    checks = []
    for slo in slos:
        got = metrics.get(slo.name)
        got = float("inf") if got is None else float(got)
        checks.append(SloCheck(name=slo.name, metric=slo.metric, percentile=slo.percentile,
                               target_s=slo.target_s, predicted_s=got, met=got <= slo.target_s,
                               margin=(slo.target_s - got) / slo.target_s))
    predicted = {k: v for k, v in evaluation.prediction.model_dump(mode="json").items()
                 if k not in ("ops", "config", "model", "hardware") and
                 not (isinstance(v, list) and len(v) > 64)}
    predicted["goodput_tokens_per_s_per_gpu"] = metrics.get("goodput_tokens_per_s_per_gpu")
    predicted["slo_attainment"] = metrics.get("slo_attainment")
    weights, kv = WEIGHT_SCHEMES[point.weights], KV_SCHEMES[point.kv]
    spec_cfg = config.speculative
    pareto = [_candidate(t, names) for t in study.best_trials if "point" in t.user_attrs]
    seen, alternatives = {best.user_attrs["label"]}, []
    for t in sorted((t for t in trials if t.user_attrs.get("simulated")),
                    key=lambda t: -t.values[0] if maximize else t.values[0]):
        label = t.user_attrs["label"]
        if label not in seen and len(alternatives) < 10:
            seen.add(label)
            why = launch_failures.get(t.number) or _why_not(t, best, slos, maximize,
                                                            spec["objective"])
            alternatives.append(_candidate(t, names, why))
    workload = search.workload
    plan = DeploymentPlan(
        model=space.model.name, model_id=model_id, hardware=hardware.name,
        gpu_budget=space.gpus, num_gpus=point.num_gpus, replicas=point.replicas,
        gpus_per_replica=point.gpus_per_replica, config=config.model_dump(mode="json"),
        quantization=QuantizationInfo(
            weights=point.weights, weight_dtype=weights.weight_dtype,
            activation_dtype=weights.activation_dtype, kv_dtype=point.kv, risk=point.risk,
            weights_risk=weights.risk, kv_risk=kv.risk,
            description=f"{weights.description}; {kv.description}",
            allowed=[*space.weights, *(f"kv-{k}" for k in space.kv if k != "bf16")]),
        speculative=None if spec_cfg is None else SpeculativeInfo(
            method=spec_cfg.method, draft_model=spec_cfg.draft_model,
            num_speculative_tokens=spec_cfg.num_speculative_tokens,
            acceptance_rate=spec_cfg.acceptance_rate),
        workload=WorkloadInfo(
            name=workload.name, rate_requests_per_s=workload.arrival.rate_per_s,
            num_requests=workload.num_requests, seed=workload.seed,
            mean_prompt_tokens=traffic.mean_prompt, mean_output_tokens=traffic.mean_output),
        objectives=dict(zip(names, search.directions, strict=True)), slos=checks,
        predicted=predicted, memory=mem, pareto=pareto, alternatives=alternatives,
        search={"space": space.describe(), "pruning": search.pruned.counts(),
                "spec": {k: v for k, v in spec.items()}},
        provenance=Provenance(**{**provenance, "trial": best.number}),
        engine=engine, engines=engines)
    return plan, evaluation


def _closest(trials: list, slos: list) -> str:
    simulated = [t for t in trials if t.user_attrs.get("simulated")] or trials
    if not simulated:
        return "no trial finished"

    def worst(t: Any) -> float:
        return max([v for v in t.constraints.values()] or [0.0])

    near = min(simulated, key=worst)
    return (f"no configuration meets the SLOs in {len(trials)} trials; closest: "
            f"{near.user_attrs.get('label', '?')}: {'; '.join(_violations(near, slos))}")
