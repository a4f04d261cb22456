"""``tune export plan.json --engine vllm``: render one engine's config from a plan.

The plan's configuration and per-GPU memory plan go through the same renderer ``tune plan``
used (``tuner.engines.render``), so a plan written by an older run can be rendered for another
engine, or again after the renderers learn a newer release. Prints the config file and each
node's launch lines; ``--out DIR`` writes the config file and the node scripts there.
``--format k8s`` writes Kubernetes manifests instead (``tuner.handover.k8s``). A plan that does
not validate against the schema is refused in one line (exit 2).
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
    parser.add_argument(
        "--format",
        choices=["files", "k8s"],
        default="files",
        help="files: the config file and one launch script per node (default); k8s: "
        "Kubernetes manifests (a Deployment and Service per single-node replica, a "
        "LeaderWorkerSet per multi-node one)",
    )
    parser.add_argument("--out", default=None, help="write the files here (default: print)")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.data.hardware import load_hardware
    from tuner.engines.inputs import EngineRefusal
    from tuner.handover.scripts import write_engine_files
    from tuner.handover.sections import render_engines
    from tuner.plan import load_plan, model_of

    plan = load_plan(args.plan)
    if args.format == "k8s":
        from tuner.handover.k8s import manifests

        text = manifests(plan, args.engine)
        if args.out:
            from simulator.files import write_atomic

            out = Path(args.out)
            write_atomic(out / f"{args.engine}-k8s.yaml", text)
            print(f"wrote {out / f'{args.engine}-k8s.yaml'}", file=sys.stderr)
        else:
            print(text, end="")
        return 0
    sections = render_engines(
        config=plan.config,
        model=model_of(plan),
        hardware=load_hardware(plan.hardware),
        memory=plan.memory.model_copy(deep=True),
        chosen=args.engine,
        model_id=args.model_id,
        served_model_name=plan.model,
    )
    section = sections[args.engine]
    assert not isinstance(section, EngineRefusal)  # the chosen engine raises instead
    for name, text in section.config_files.items():
        print(f"# {name}\n{text}")
    for node in section.nodes:
        print(f"# {node.script}: node {node.node}, replica(s) {node.replicas}")
        print("\n".join(node.commands) or "# (started from another node)")
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        single = plan.model_copy(update={"engines": {args.engine: section}, "engine": args.engine})
        for path in write_engine_files(out, single):
            print(f"wrote {path}", file=sys.stderr)
    return 0
