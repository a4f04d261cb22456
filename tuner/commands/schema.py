"""``tune schema plan``: print the JSON Schema of a published format.

``plan`` is the deployment plan (``plan.json``, ``tuner.plan.DeploymentPlan``); ``prediction`` is
what ``tune predict --json`` prints (``simulator.results.Prediction``). Consumers validate
against these; ``schema_version`` inside a plan says which schema it follows.
"""

from __future__ import annotations

import argparse

from . import common

SCHEMAS = ("plan", "prediction")


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "schema",
        help="print the JSON Schema of plan.json",
        description="Print a JSON Schema (draft 2020-12).",
    )
    parser.add_argument(
        "name", nargs="?", default="plan", choices=SCHEMAS, help="plan (default) or prediction"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.name == "plan":
        from tuner.plan import plan_json_schema

        common.print_json(plan_json_schema())
    else:
        from simulator.results import Prediction

        common.print_json(Prediction.model_json_schema())
    return 0
