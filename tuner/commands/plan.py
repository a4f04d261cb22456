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

DEFAULT_TRIALS = 100
DEFAULT_REQUESTS = 500


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="search deployments; write plan.json, engine configs and a report",
        description="Search parallelism, quantization, batching and speculative decoding for "
        "a model on a GPU budget under traffic and SLOs; write the best plan, its vLLM / SGLang "
        "/ TensorRT-LLM configs and a report into a study directory.",
    )
    common.add_model_hardware_args(parser)
    parser.add_argument("--gpus", type=int, required=True, help="GPU budget (the most to use)")
    common.add_workload_args(parser)
    parser.set_defaults(workload="chat", requests=None)
    search = parser.add_argument_group("search")
    search.add_argument(
        "--allow-quant",
        default="bf16,fp8",
        help="quantization allowed: bf16, fp8 (W8A8 + FP8 KV, low risk), int8 "
        "(W8A8, medium), int4 (weight-only, high), kv-fp8, all "
        "(default bf16,fp8)",
    )
    search.add_argument(
        "--no-speculative", action="store_true", help="do not search speculative decoding"
    )
    search.add_argument(
        "--objective",
        default="goodput",
        choices=["goodput", "cost"],
        help="goodput per GPU (default) or cost per million tokens, each against p99 TPOT",
    )
    search.add_argument(
        "--trials",
        type=int,
        default=DEFAULT_TRIALS,
        help=f"complete trials in the study (default {DEFAULT_TRIALS})",
    )
    search.add_argument("--timeout", type=float, default=None, help="stop searching after S s")
    search.add_argument("--sampler", default="tpe", choices=["tpe", "nsga2", "random"])
    search.add_argument(
        "--exhaustive",
        action="store_true",
        help="try every point (BruteForceSampler): checks the search on small "
        "spaces (see --small-space)",
    )
    search.add_argument(
        "--small-space", action="store_true", help="a few choices per knob: an enumerable space"
    )
    search.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="default: the longest request of the workload, rounded up",
    )
    out = parser.add_argument_group("output and storage")
    out.add_argument(
        "--out", default=None, help="study directory (default studies/MODEL-NxGPU-WORKLOAD)"
    )
    out.add_argument("--study", default=None, help="study name (default: the directory name)")
    out.add_argument(
        "--storage",
        default=None,
        help="postgresql://... to share the study with `tune worker`s "
        "(default: a journal file in the study directory)",
    )
    out.add_argument("--heartbeat", type=int, default=10, help="heartbeat seconds (RDB storage)")
    out.add_argument(
        "--engine",
        default="vllm",
        choices=["vllm", "sglang", "trtllm"],
        help="the engine whose memory rule the plan must satisfy (default vllm)",
    )
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
        "model": args.model,
        "hardware": [h.strip() for h in args.hardware.split(",") if h.strip()],
        "gpus": args.gpus,
        "workload": args.workload,
        "rate": args.rate,
        "requests": args.requests or DEFAULT_REQUESTS,
        "seed": args.seed,
        "slos": list(args.slo),
        "allow_quant": args.allow_quant,
        "speculative": not args.no_speculative,
        "small": args.small_space,
        "objective": args.objective,
        "max_model_len": args.max_model_len,
        "calibration": not args.no_calibration,
        "trials": args.trials,
        "sampler": args.sampler,
        "engine": args.engine,
        "model_id": args.model_id,
        "exhaustive": args.exhaustive,
    }


def default_out(spec: dict[str, Any], search: Any) -> Path:
    short = "+".join(name.split("-")[0] for name in search.space.hardware_names)
    workload = str(spec["workload"]).split(":")[0]
    workload = Path(workload).stem if "/" in workload else workload
    return Path("studies") / f"{search.space.model.name}-{spec['gpus']}x{short}-{workload}"


def run(args: argparse.Namespace) -> int:
    import optuna

    from simulator.errors import NoFeasiblePlanError
    from tuner import study as studies
    from tuner.objective import make_objective
    from tuner.prune import hopeless_reason
    from tuner.search import build_search, seed_baselines

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    started = time.perf_counter()
    spec = spec_from_args(args)
    search = build_search(spec)  # every bad name or value fails here, before any file exists
    counts = search.pruned.counts()
    if counts["ok"] == 0:
        raise NoFeasiblePlanError(hopeless_reason(search.pruned, search.slos))
    storage = (
        studies.open_storage(args.storage, heartbeat_s=args.heartbeat) if args.storage else None
    )
    out_dir = Path(args.out) if args.out else default_out(spec, search)
    if out_dir.exists() and not out_dir.is_dir():
        from simulator.errors import ConfigError

        raise ConfigError(f"--out {out_dir} exists and is not a directory")
    out_dir.mkdir(parents=True, exist_ok=True)
    if storage is None:
        storage = studies.open_storage(None, study_dir=out_dir)
    name = args.study or out_dir.resolve().name
    sampler = studies.make_sampler(args.sampler, seed=args.seed, exhaustive=args.exhaustive)
    study = studies.create_study(
        storage=storage,
        name=name,
        directions=search.directions,
        metric_names=search.metric_names,
        sampler=sampler,
        spec=spec,
    )
    if not args.storage:
        studies.recover_stale_trials(study)
    if not study.get_trials(deepcopy=False):
        seed_baselines(study, search, limit=max(2, min(10, args.trials // 8)))
    budget = search.space.size() if args.exhaustive else args.trials
    objective = make_objective(search.evaluator, budget=budget)
    progress = _progress(budget, quiet=args.quiet or args.json)
    try:
        if args.exhaustive:
            study.optimize(
                objective,
                timeout=args.timeout,
                catch=(),
                gc_after_trial=False,
                callbacks=[lambda s, t: progress(1 + t.number)],
            )
        else:
            studies.run_trials(
                study, objective, budget=budget, timeout_s=args.timeout, on_progress=progress
            )
    except KeyboardInterrupt:
        progress(None)
        print(
            f"tune plan: stopped; finished trials are kept in {out_dir} - run the same "
            "command to resume",
            file=sys.stderr,
        )
        raise
    progress(None)
    plan, files = finish(
        study=study,
        search=search,
        out_dir=out_dir,
        storage_url=args.storage,
        name=name,
        started=started,
        engine=args.engine,
        model_id=args.model_id,
        report=not args.no_report,
    )
    if args.json:
        common.print_json(plan.model_dump(mode="json"))
    else:
        print(summary(plan, search, out_dir, files))
    return 0


def finish(
    *,
    study: Any,
    search: Any,
    out_dir: Path,
    storage_url: str | None,
    name: str,
    started: float,
    engine: str,
    model_id: str | None,
    report: bool,
) -> tuple[Any, list]:
    """Choose the plan, draw the report, write the study directory (plan.json last)."""
    from datetime import datetime, timezone

    from tuner.choose import assemble_plan
    from tuner.cli import _version
    from tuner.plan import write_study_dir
    from tuner.report import build_report
    from tuner.study import redact

    hardware = search.space.hardware[0]
    efficiency = hardware.efficiency
    provenance = {
        "rooftune_version": _version(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": "tune " + " ".join(sys.argv[1:])
        if sys.argv[0].endswith("tune")
        else "tune plan " + " ".join(_flags(search.spec)),
        "hardware_profile": {
            h.name: {
                "display_name": h.display_name,
                "sources": h.sources,
                "price_per_hour": h.price_per_hour,
            }
            for h in search.space.hardware
        },
        "calibration": {"source": efficiency.source, "provenance": dict(efficiency.provenance)},
        "study_name": name,
        "storage": redact(storage_url) if storage_url else str(out_dir / "study.journal"),
        "sampler": "bruteforce" if search.spec.get("exhaustive") else search.spec["sampler"],
        "seed": int(search.spec["seed"]),
        "trial": -1,
        "trials": len(study.get_trials(deepcopy=False)),
        "evaluations": search.evaluator.evaluations,
        "wall_s": 0.0,
    }
    plan, _ = assemble_plan(
        study=study, search=search, provenance=provenance, engine=engine, model_id=model_id
    )
    figures = html_text = md_text = None
    if report:
        figures, html_text, md_text = build_report(plan=plan, study=study, search=search)
    plan.provenance.wall_s = round(time.perf_counter() - started, 2)
    files = write_study_dir(
        out_dir=out_dir, plan=plan, figures=figures, html_text=html_text, md_text=md_text
    )
    return plan, files


def _flags(spec: dict[str, Any]) -> list[str]:
    flags = [
        f"--model {spec['model']}",
        f"--hardware {','.join(spec['hardware'])}",
        f"--gpus {spec['gpus']}",
        f"--workload {spec['workload']}",
    ]
    flags += [f"--slo {s}" for s in spec["slos"]]
    return flags


def summary(plan: Any, search: Any, out_dir: Path, files: list) -> str:
    """The one screen printed at the end: the plan, its predictions, where the files are."""
    from tuner.report import _summary_rows
    from tuner.textfmt import key_values

    pruned = search.pruned.counts()
    prov = plan.provenance
    head = (
        f"tune plan: {plan.model} on up to {plan.gpu_budget} x {plan.hardware}, "
        f"{plan.workload.name} traffic; searched {prov.trials} trials "
        f"({prov.evaluations} simulated; {pruned['ok']} of {len(search.pruned)} replica "
        f"configurations survived pruning) in {prov.wall_s:.1f} s"
    )
    rows = list(_summary_rows(plan))
    for s in plan.slos:
        rows.append(
            (
                s.name,
                f"{s.predicted_s * 1e3:,.1f} ms predicted vs "
                f"{s.target_s * 1e3:,.0f} ms target ({'met' if s.met else 'MISSED'})",
            )
        )
    m = plan.memory
    rows.append(
        (
            "memory per GPU",
            f"weights {m.weights_bytes / 1e9:.1f} GB, KV cache "
            f"{m.kv_cache_bytes / 1e9:.1f} GB ({m.kv_tokens:,.0f} tokens),"
            f" budget {m.budget_bytes / 1e9:.1f} GB",
        )
    )
    names = sorted({str(f.relative_to(out_dir)) for f in files if f.parent == out_dir})
    return "\n".join(
        [
            head,
            key_values(rows, title="best plan:"),
            f"files in {out_dir}/: {', '.join(names)}",
            f"regenerate the report: tune report {out_dir}",
        ]
    )


def _progress(total: int, *, quiet: bool):
    """A callback that moves a progress bar to n complete trials (None closes it)."""
    from tqdm import tqdm

    bar = tqdm(
        total=total,
        desc="trials",
        unit="trial",
        file=sys.stderr,
        leave=False,
        disable=True if quiet else None,
        dynamic_ncols=True,
    )

    def update(n: int | None) -> None:
        if n is None:
            bar.close()
            return
        bar.update(max(0, min(n, total) - bar.n))

    return update


# --- from a finished study to a plan ---------------------------------------------------------
