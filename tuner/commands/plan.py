"""``tune plan``: find the cheapest deployment for the traffic, then write a study directory.

    tune plan --model llama-3.1-70b --hardware h100-sxm --gpus 16 --workload chat \\
              --slo ttft_p99=2s --slo tpot_p99=50ms

Steps: validate every input (nothing is written before that), prune the space and bound every
candidate with the step model, run the branch and bound (``tuner.search.cheapest``; each simulation is
a trial of the study, which a re-run resumes), assemble the plan, then write ``plan.json``, the
engine configs and the report into the study directory through a staging folder, ``plan.json``
last, so an interrupted run never leaves half a plan.
Exit codes: 0 plan written, 1 runtime failure, 2 bad input, 3 nothing meets the SLOs, 130 Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from simulator.data.policies import DEFAULT_GPU_MEMORY_UTILIZATION
from tuner.engines import ENGINES
from tuner.safe_text import command_line

from . import common
from .plan_output import progress_reporter, summary
from .plan_spec import spec_from_args


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "plan",
        help="find the cheapest deployment for the traffic; write plan.json, configs, a report",
        description="Find the cheapest deployment (GPU type, parallelism, quantization, "
        "batching, speculative decoding, replicas) that serves the workload's rate within the "
        "SLOs on a GPU budget (with no rate: the one that serves the most); write the plan, its "
        "vLLM / SGLang / TensorRT-LLM configs and a report into a study directory.",
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
        "--speculative",
        default=None,
        metavar="METHOD[,METHOD...]",
        help="search only these speculative methods: draft, eagle, ngram (plain decoding too "
        "is then left out)",
    )
    for knob, what in (("tp", "tensor"), ("pp", "pipeline"), ("ep", "expert")):
        search.add_argument(
            f"--{knob}",
            default=None,
            metavar="N[,N...]",
            help=f"search only these {what}-parallel sizes (e.g. --{knob} 8)",
        )
    search.add_argument(
        "--objective",
        default="cost",
        choices=["cost", "gpus"],
        help="what a deployment costs: its GPUs at their list price per hour (default; GPU "
        "count where a profile has no price) or the GPU count",
    )
    search.add_argument(
        "--trials",
        type=int,
        default=None,
        help="stop after this many simulations (default: when the bounds prove the plan)",
    )
    search.add_argument("--timeout", type=float, default=None, help="stop searching after S s")
    search.add_argument(
        "--refine",
        type=int,
        default=0,
        metavar="N",
        help="then N Optuna trials over max_num_seqs, the token budget and the drafted tokens "
        "as continuous knobs, at the plan's cost, for more headroom (default 0: off)",
    )
    search.add_argument(
        "--exhaustive",
        action="store_true",
        help="simulate every candidate without bounds: the reference the search is checked "
        "against (slow; see --small-space)",
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
    search.add_argument(
        "--gpu-memory-utilization",
        type=common.finite_float,
        default=None,
        metavar="F",
        help="the share of each GPU's memory the deployment may take (default "
        f"{DEFAULT_GPU_MEMORY_UTILIZATION:.2f}); lower it where the GPU is shared",
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
        choices=ENGINES,
        help="the engine whose memory rule the plan must satisfy (default vllm)",
    )
    out.add_argument("--model-id", default=None, help="checkpoint id or path the engines load")
    out.add_argument("--no-report", action="store_true", help="skip report.html / report.md")
    out.add_argument("--quiet", action="store_true", help="no progress bar")
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def default_out(spec: dict[str, Any], search: Any) -> Path:
    short = "+".join(name.split("-")[0] for name in search.space.hardware_names)
    workload = str(spec["workload"]).split(":")[0]
    workload = Path(workload).stem if "/" in workload else workload
    return Path("studies") / f"{search.space.model.name}-{spec['gpus']}x{short}-{workload}"


def run(args: argparse.Namespace) -> int:

    from simulator.errors import NoFeasiblePlanError
    from tuner.choose import launch_check
    from tuner.search import study as studies
    from tuner.search.probe import Prober
    from tuner.search.prune import hopeless_reason
    from tuner.search.run import build_search, run_search
    from tuner.search.trials import DONE_ATTR, LocalRunner, SharedRunner, preload

    studies.quiet_optuna()
    started = time.perf_counter()
    spec = spec_from_args(args)
    search = build_search(spec)  # every bad name or value fails here, before any file exists
    if not search.table.candidates:
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
    study = studies.create_study(
        storage=storage,
        name=name,
        directions=search.directions,
        metric_names=search.metric_names,
        spec=spec,
    )
    if args.storage:
        study.set_user_attr(DONE_ATTR, False)  # workers stay until this search is done
        runner: Any = SharedRunner(search, search.table, study)
    else:
        runner = LocalRunner(search, study)
    prober = Prober(search.table, runner)
    resumed = preload(study, search.table, prober)
    # Trials an earlier run left unfinished (killed mid-simulation, or failed): run again.
    from optuna.trial import TrialState

    retried = len(study.get_trials(deepcopy=False, states=(TrialState.RUNNING, TrialState.FAIL)))
    model_id = args.model_id  # None: each engine loads its checkpoint (handover.checkpoints)
    progress = progress_reporter(search, quiet=args.quiet or args.json)
    check = launch_check(search, args.engine, model_id)
    try:
        outcome = run_search(
            search,
            prober,
            exhaustive=args.exhaustive,
            admissible=check,
            max_simulations=args.trials,
            deadline_s=args.timeout,
            on_progress=progress,
        )
    except KeyboardInterrupt:
        progress(None, None)
        print(
            f"tune plan: stopped; finished simulations are kept in {out_dir} - run the same "
            "command to resume",
            file=sys.stderr,
        )
        raise
    finally:
        progress(None, None)
        if args.storage:
            study.set_user_attr(DONE_ATTR, True)  # workers may leave
    front = 0
    if not args.exhaustive and outcome.best is not None:
        from tuner.search.front import explore_front

        front = explore_front(search, outcome, prober)  # what more GPUs would buy
    refinement = None
    if args.refine and outcome.best is not None:
        from tuner.search.refine import refine

        refinement = refine(search, outcome, trials=args.refine, storage=storage,
                            study_name=name, admissible=check)  # fmt: skip
        outcome.best = refinement.choice
    plan, files = finish(
        study=study,
        search=search,
        outcome=outcome,
        prober=prober,
        out_dir=out_dir,
        storage_url=args.storage,
        name=name,
        started=started,
        engine=args.engine,
        model_id=model_id,
        report=not args.no_report,
        resumed=resumed,
        retried=retried,
        refinement=refinement,
        front=front,
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
    outcome: Any,
    prober: Any,
    out_dir: Path,
    storage_url: str | None,
    name: str,
    started: float,
    engine: str,
    model_id: str | None,
    report: bool,
    resumed: int = 0,
    retried: int = 0,
    refinement: Any = None,
    front: int = 0,
) -> tuple[Any, list]:
    """Assemble the plan, draw the report, write the study directory (plan.json last)."""
    from datetime import datetime, timezone

    from tuner.choose import assemble_plan
    from tuner.cli import _version
    from tuner.report import build_report
    from tuner.search.study import redact
    from tuner.study_files import write_study_dir

    efficiency = search.space.hardware[0].efficiency
    provenance = {
        "rooftune_version": _version(),
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "command": command_line(["tune", *sys.argv[1:]])
        if sys.argv[0].endswith("tune")
        else command_line(["tune", "plan", *_flags(search.spec)]),
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
        "sampler": "exhaustive" if search.spec.get("exhaustive") else "branch and bound",
        "seed": int(search.spec["seed"]),
        "trial": -1,
        "trials": len(study.get_trials(deepcopy=False)),
        "evaluations": prober.simulations,
        "wall_s": 0.0,
    }
    plan, result = assemble_plan(
        search=search,
        outcome=outcome,
        study=study,
        provenance={
            **provenance,
            "shared": prober.shared,
            "stopped_early": prober.stopped_early,
            "resumed": resumed,
            "retried": retried,
        },  # fmt: skip
        engine=engine,
        model_id=model_id,
        prober=prober,
    )
    if refinement is not None:
        plan.search["refine"] = refinement.as_dict()
    plan.search["bound"]["front_simulations"] = front
    figures = html_text = md_text = None
    if report:
        figures, html_text, md_text = build_report(
            plan=plan, study=study, search=search, result=result
        )
    plan.provenance.wall_s = round(time.perf_counter() - started, 2)
    files = write_study_dir(
        out_dir=out_dir, plan=plan, figures=figures, html_text=html_text, md_text=md_text
    )
    return plan, files


def _flags(spec: dict[str, Any]) -> list[str]:
    flags = ["--model", spec["model"], "--hardware", ",".join(spec["hardware"])]
    flags += ["--gpus", str(spec["gpus"]), "--workload", spec["workload"]]
    for slo in spec["slos"]:
        flags += ["--slo", slo]
    return flags
