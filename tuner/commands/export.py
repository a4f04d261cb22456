"""``tune export plan.json --engine vllm``: render one engine's config from a plan.

The plan's configuration and per-GPU memory plan go through the same renderer ``tune plan``
used (``tuner.engines.render``), so a plan written by an older run can be rendered for another
engine, or again after the renderers learn a newer release. Prints the config file and the
launch lines; ``--out DIR`` also writes ``<engine>.yaml`` and ``<engine>.sh`` there.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from tuner.engines import ENGINES


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "export",
        help="render an engine config (vLLM, SGLang, TensorRT-LLM) from plan.json",
        description="Render one engine's config file and launch lines from a plan.json.",
    )
    parser.add_argument("plan", help="path of a plan.json written by tune plan")
    parser.add_argument("--engine", required=True, choices=ENGINES)
    parser.add_argument(
        "--model-id", default=None, help="checkpoint id or path (default: the plan's model_id)"
    )
    parser.add_argument("--out", default=None, help="write <engine>.yaml and <engine>.sh here")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.data.specs import DeploymentConfig
    from tuner.plan import load_plan, render_engines, write_engine_files

    plan = load_plan(args.plan)
    config = DeploymentConfig(**plan.config)
    memory = plan.memory.model_copy(deep=True)
    sections = render_engines(
        config=config,
        model_id=args.model_id or plan.model_id,
        memory=memory,
        chosen=args.engine,
        served_model_name=plan.model,
    )
    section = sections[args.engine]
    for name, text in section["config_files"].items():
        print(f"# {name}\n{text}")
    print("# launch, one line per replica")
    print("\n".join(section["replicas"] or [section["launch"]]))
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        single = plan.model_copy(update={"engines": {args.engine: section}})
        for path in write_engine_files(out, single):
            print(f"wrote {path}", file=sys.stderr)
    return 0
