"""``tune report STUDY_DIR``: regenerate report.html, report.md and the plots of a study.

Reads ``STUDY_DIR/plan.json`` (refusing other schema versions), rebuilds the search it records,
and reopens the study (the journal in the directory, or ``--storage URL`` for a study on
PostgreSQL, whose password a plan never stores). Without a reachable study the report is drawn
from the plan alone: no optimization history, no Pareto scatter.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "report",
        help="regenerate a study directory's report",
        description="Regenerate report.html / report.md / plots "
        "from STUDY_DIR/plan.json and its study.",
    )
    parser.add_argument("study_dir", help="a directory written by tune plan")
    parser.add_argument(
        "--storage", default=None, help="storage URL when the study is not the directory's journal"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:

    from simulator.errors import ConfigError, RooftuneError
    from tuner.plan import load_plan
    from tuner.report import build_report
    from tuner.search import study as studies
    from tuner.search.run import build_search
    from tuner.study_files import write_study_dir

    studies.quiet_optuna()
    directory = Path(args.study_dir)
    if not directory.is_dir():
        raise ConfigError(f"{directory}: not a study directory")
    plan = load_plan(directory / "plan.json")
    search = build_search(plan.search["spec"])
    study = None
    journal = directory / studies.JOURNAL_NAME
    try:
        if args.storage:
            storage = studies.open_storage(args.storage)
        elif journal.exists():
            storage = studies.open_storage(str(journal))
        else:
            storage = None
        if storage is not None:
            study = studies.load_study(storage=storage, name=plan.provenance.study_name)
    except RooftuneError as error:
        if args.storage:  # asked for by name: a dead database is an error, nothing rewritten
            raise
        print(f"tune report: warning: {error}; drawing from plan.json alone", file=sys.stderr)
    if study is None:
        print("tune report: no study found; history and Pareto scatter left out", file=sys.stderr)
    figures, html_text, md_text = build_report(plan=plan, study=study, search=search)
    files = write_study_dir(
        out_dir=directory, plan=plan, figures=figures, html_text=html_text, md_text=md_text
    )
    names = sorted(str(f.relative_to(directory)) for f in files)
    print(f"tune report: wrote {', '.join(names)} in {directory}")
    return 0
