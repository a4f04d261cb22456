"""The launch scripts of a plan: one per engine and node (``vllm.sh`` on one node,
``vllm-node0.sh``, ``vllm-node1.sh``, ... on several).

A script names the variables it needs at its top, stops with the name of any that is unset,
then starts its node's processes: one replica in the foreground, several in the background
until all exit. Every line that holds text from the input is quoted (``tuner.safe_text``): a
study or model name with a newline, quotes or ``$(...)`` runs nothing but the engine.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from tuner.safe_text import shell_comment, shell_word

if TYPE_CHECKING:
    from tuner.engines.inputs import EngineSection, NodeLaunch
    from tuner.plan import DeploymentPlan

__all__ = ["write_engine_files", "node_script"]


def write_engine_files(directory: Path, plan: DeploymentPlan) -> list[Path]:
    """Each launchable engine's config files and node scripts, written into ``directory``."""
    from simulator.files import write_atomic
    from tuner.engines.inputs import EngineSection

    written = []
    for section in plan.engines.values():
        if not isinstance(section, EngineSection):
            continue
        for name, text in section.config_files.items():
            written.append(write_atomic(directory / name, text))
        for node in section.nodes:
            script = write_atomic(directory / node.script, node_script(plan, section, node))
            script.chmod(0o755)
            written.append(script)
    return written


def node_script(plan: DeploymentPlan, section: EngineSection, node: NodeLaunch) -> str:
    """The bash script that starts ``node``'s part of ``section``."""
    prov = plan.provenance
    lines = [
        "#!/usr/bin/env bash",
        shell_comment(
            f"{plan.model} on {plan.num_gpus} x {plan.hardware}: {plan.replicas} replica(s) of "
            f"tp={plan.config.tp} pp={plan.config.pp}; {section.engine} "
            f"{section.engine_version} ({section.image}); node {node.node} of "
            f"{plan.topology.nodes}, replica(s) {', '.join(map(str, node.replicas))}"
        ),
        shell_comment(
            f"written by rooftune {prov.rooftune_version} from plan.json "
            f"(study {prov.study_name}, trial {prov.trial}); weights: "
            f"{section.checkpoint.model_id} ({section.checkpoint.detail})"
        ),
    ]
    needed = [var for var in section.env if var.name in node.env]
    if needed:
        lines.append(shell_comment("set before running:"))
        lines += [shell_comment(f"  {var.name}: {var.description}") for var in needed]
    lines += [shell_comment(f"note: {note}") for note in section.notes]
    lines += ["set -euo pipefail", 'cd "$(dirname "$0")"']
    # Names are checked identifiers (EnvVar's pattern): safe inside the fixed message.
    lines += [f': "${{{v.name}:?set {v.name} (see the top of this script)}}"' for v in needed]
    if not node.commands:
        leader = plan.topology.replicas[node.replicas[0]].nodes[0].node
        message = (
            f"node {node.node} runs no process itself: node {leader}'s script starts its ranks"
        )
        lines.append(f"echo {shell_word(message)}")
    elif len(node.commands) == 1:
        lines.append(node.commands[0])
    else:
        lines += [f"{command} &" for command in node.commands] + ["wait"]
    return "\n".join(lines) + "\n"
