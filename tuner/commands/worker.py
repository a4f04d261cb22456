"""``tune worker``: join a study on shared storage and run its trials until the budget is done.

    tune worker --study llama70b-chat --storage postgresql://user@db-host/rooftune

The study's search (model, GPUs, workload, SLOs, space, trial budget) is stored with it by
``tune plan``, so a worker needs only the study's name and the storage URL; any number of them,
on any machines, share the budget. Each sends a heartbeat while its trial runs; if a worker dies,
its trial is failed and queued again by the next worker to start a trial.
"""

from __future__ import annotations

import argparse
import os
import sys


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="join a study on shared storage and run its trials",
        description="Join a study created by `tune plan --storage URL --study NAME` and run "
        "trials until the study's budget of complete trials is reached.",
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", required=True, help="postgresql://... (or a .journal file)")
    parser.add_argument(
        "--trials", type=int, default=None, help="run at most this many trials in this worker"
    )
    parser.add_argument(
        "--wait",
        type=float,
        default=60.0,
        help="seconds to wait for the study to appear (default 60)",
    )
    parser.add_argument("--heartbeat", type=int, default=10, help="heartbeat seconds (default 10)")
    parser.add_argument(
        "--grace",
        type=int,
        default=None,
        help="seconds without a heartbeat before a trial counts as dead (default 3 x heartbeat)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        default=None,
        help="sampler seed (default: the study's seed plus this process id)",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import optuna

    from simulator.errors import ConfigError
    from tuner import study as studies
    from tuner.objective import make_objective
    from tuner.search import build_search

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {args.trials})")
    storage = studies.open_storage(args.storage, heartbeat_s=args.heartbeat, grace_s=args.grace)
    # The sampler is attached after the spec is read; distinct seeds keep workers apart.
    probe = studies.load_study(storage=storage, name=args.study, sampler=None, wait_s=args.wait)
    spec = probe.user_attrs[studies.SPEC_ATTR]
    seed = args.seed if args.seed is not None else (int(spec["seed"]) + os.getpid()) % 2**31
    if spec.get("exhaustive"):
        seed = int(spec["seed"])  # exhaustive sampling wants the same seed everywhere
    sampler = studies.make_sampler(
        spec["sampler"], seed=seed, exhaustive=bool(spec.get("exhaustive"))
    )
    study = studies.load_study(storage=storage, name=args.study, sampler=sampler)
    search = build_search(spec)
    budget = int(spec["trials"])
    ran = studies.run_trials(
        study,
        make_objective(search.evaluator, budget=budget),
        budget=budget,
        max_own_trials=args.trials,
    )
    counts = studies.count_states(study)
    print(
        f"tune worker {studies.worker_id()}: ran {ran} trial(s) "
        f"({search.evaluator.evaluations} simulated); study {args.study!r} has "
        f"{counts['COMPLETE']} of {budget} complete",
        file=sys.stderr,
    )
    return 0
