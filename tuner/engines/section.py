"""Assemble an ``EngineSection``: the one shape every engine's launch files take.

Each engine renders its options into a config file plus the server command that reads it; the
full command line, the launch line, the per-node scripts and the file itself are derived here
the same way for all three engines. What differs between engines is how a replica that spans
nodes starts (``Spanning``): vLLM and SGLang run one process per node with the rendezvous
flags, TensorRT-LLM one MPI launch on the replica's first node.

Addresses come from the environment: ``NODE<n>_ADDR`` is node ``n``'s address as the other
nodes reach it; a script stops, naming the variable, when one it needs is unset. Gated
checkpoints (``meta-llama/...``) need ``HF_TOKEN``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from simulator.data.specs import DeploymentConfig
from tuner.engines import ENGINE_IMAGES, ENGINE_VERSIONS, check_engine
from tuner.engines.common import dump_yaml, shell_line
from tuner.engines.inputs import (
    CheckpointInfo,
    EngineInputs,
    EngineSection,
    EnvVar,
    NodeLaunch,
)
from tuner.handover.topology import ReplicaLayout, Topology
from tuner.safe_text import EnvRef

__all__ = [
    "Spanning",
    "SpanPosition",
    "config_file_section",
    "replica_note",
    "node_address",
    "with_suffix",
]

Word = str | EnvRef
# Hugging Face organisations whose checkpoints need an accepted licence and a token.
GATED_ORGS = ("meta-llama/",)


def node_address(node: int) -> EnvRef:
    """The address of ``node`` as the other nodes reach it (``NODE<n>_ADDR``)."""
    return EnvRef(f"NODE{node}_ADDR")


@dataclass(frozen=True)
class SpanPosition:
    """One process of a replica that spans ``nodes`` nodes: its node ``rank`` and the first
    node's address, each a literal or a reference the launcher expands (a script's
    ``NODE<n>_ADDR``, a Kubernetes ``$(LWS_LEADER_ADDRESS)``)."""

    nodes: int
    rank: Word
    leader_address: Word
    is_leader: bool


def with_suffix(word: Word, suffix: str) -> Word:
    """``word`` followed by literal ``suffix`` (``host:port``)."""
    if isinstance(word, EnvRef):
        return EnvRef(word.name, prefix=word.prefix, suffix=word.suffix + suffix)
    return f"{word}{suffix}"


@dataclass(frozen=True)
class Spanning:
    """How an engine starts a replica that spans nodes.

    ``flags(position)``: what one node's process adds to its command (node count, rank,
    rendezvous); ``launcher(replica, forwarded)``: a program that starts every node's ranks
    from the first node (MPI), passing the ``forwarded`` variables on, or None when each node
    runs its own process; ``env``: the variables those need, per replica."""

    flags: Callable[[SpanPosition], list[Word]]
    launcher: Callable[[ReplicaLayout, list[str]], list[Word]] | None = None
    env: Callable[[ReplicaLayout], list[EnvVar]] = field(default=lambda replica: [])


def replica_note(config: DeploymentConfig, *, why: str = "") -> str | None:
    """How to run ``dp`` replicas: independent servers behind a router."""
    if config.dp <= 1:
        return None
    return (
        f"dp={config.dp}: {why}each replica is its own server on {config.gpus_per_replica} "
        "GPU(s) and its own port (the node scripts start them), behind the plan's router"
    )


def config_file_section(
    engine: str,
    inputs: EngineInputs,
    *,
    args: list[str],
    with_file: list[str],
    config_file: str,
    options: dict[str, Any],
    notes: list[str],
    memory_fraction: float,
    spanning: Spanning,
    health_path: str = "/health",
    metrics_path: str = "/metrics",
) -> EngineSection:
    """``args`` is replica 0's full command line; ``with_file`` the same server reading the
    config file, without its port (each replica adds its own)."""
    name = check_engine(engine)
    layout = inputs.layout
    checkpoint = inputs.checkpoint(name)
    env = _env(layout, spanning, checkpoint.model_id)
    first = layout.replicas[0]
    return EngineSection(
        engine=name,
        engine_version=ENGINE_VERSIONS[name],
        image=ENGINE_IMAGES[name],
        checkpoint=CheckpointInfo.of(checkpoint),
        command=shell_line(args),
        args=args,
        config_files={config_file: dump_yaml(options)},
        launch=shell_line([*with_file, "--port", str(first.port)]),
        nodes=_node_launches(name, layout, with_file, spanning, env),
        port=first.port,
        health_path=health_path,
        metrics_path=metrics_path,
        env=env,
        notes=notes,
        memory_fraction=memory_fraction,
    )


def _env(layout: Topology, spanning: Spanning, model_id: str) -> list[EnvVar]:
    env: dict[str, EnvVar] = {}
    for replica in layout.replicas:
        if replica.spans_nodes:
            for var in spanning.env(replica):
                env.setdefault(var.name, var)
    if model_id.startswith(GATED_ORGS):
        env["HF_TOKEN"] = EnvVar(
            name="HF_TOKEN",
            description=f"a Hugging Face token whose account accepted {model_id}'s licence",
            secret=True,
        )
    return list(env.values())


def _node_launches(
    engine: str,
    layout: Topology,
    with_file: Sequence[str],
    spanning: Spanning,
    env: list[EnvVar],
) -> list[NodeLaunch]:
    launches = []
    for node in range(layout.nodes):
        commands: list[str] = []
        replicas: list[int] = []
        needs: set[str] = set()
        for replica, part in layout.on_node(node):
            replicas.append(replica.replica)
            index = replica.slices.index(part)
            words: list[Word] = [*with_file, "--port", str(replica.port)]
            if replica.spans_nodes:
                if spanning.launcher is not None:
                    if index:
                        continue  # the first node's launcher starts this node's ranks
                    forwarded = ["CUDA_VISIBLE_DEVICES"]
                    forwarded += [v.name for v in env if v.name == "HF_TOKEN"]
                    words = [*spanning.launcher(replica, forwarded), *words]
                words += spanning.flags(
                    SpanPosition(
                        nodes=len(replica.slices),
                        rank=str(index),
                        leader_address=node_address(replica.nodes[0]),
                        is_leader=index == 0,
                    )
                )
            devices = {"CUDA_VISIBLE_DEVICES": ",".join(str(g) for g in part.gpus)}
            commands.append(shell_line(words, env=devices))
            needs |= {w.name for w in words if isinstance(w, EnvRef)}
        names = [v.name for v in env if v.name in needs or (v.name == "HF_TOKEN" and commands)]
        script = f"{engine}.sh" if layout.nodes == 1 else f"{engine}-node{node}.sh"
        launches.append(
            NodeLaunch(node=node, script=script, replicas=replicas, env=names, commands=commands)
        )
    return launches
