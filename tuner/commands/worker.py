"""``tune worker``: join a study on shared storage and run the simulations its search queues.

    tune worker --study llama70b-chat --storage postgresql://user@db-host/rooftune

The study's search (model, GPUs, workload, SLOs, space) is stored with it by ``tune plan``, so a
worker needs only the study's name and the storage URL; any number of them, on any machines,
take the simulations the branch and bound queues next, until ``tune plan`` marks the search
done. Each sends a heartbeat while its trial runs; if a worker dies, its trial is failed and
queued again by the next process that looks.
"""

from __future__ import annotations

import argparse
import sys

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "worker",
        help="join a study on shared storage and run the simulations it queues",
        description="Join a study created by `tune plan --storage URL --study NAME` and run "
        "the simulations its search queues until the search is done.",
    )
    parser.add_argument("--study", required=True, help="study name")
    parser.add_argument("--storage", required=True, help="postgresql://... (or a .journal file)")
    parser.add_argument(
        "--trials", type=int, default=None, help="run at most this many trials in this worker"
    )
    parser.add_argument(
        "--wait",
        type=common.finite_float,
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
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    from simulator.errors import ConfigError
    from tuner.search import study as studies
    from tuner.search.run import build_search
    from tuner.search.trials import make_objective, serve_queue

    studies.quiet_optuna()
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {args.trials})")
    storage = studies.open_storage(args.storage, heartbeat_s=args.heartbeat, grace_s=args.grace)
    study = studies.load_study(storage=storage, name=args.study, wait_s=args.wait)
    search = build_search(study.user_attrs[studies.SPEC_ATTR])
    ran = serve_queue(study, make_objective(search, search.table), max_trials=args.trials)
    counts = studies.count_states(study)
    print(
        f"tune worker {studies.worker_id()}: ran {ran} simulation(s); study {args.study!r} "
        f"holds {counts['COMPLETE']} complete",
        file=sys.stderr,
    )
    return 0
