"""Where every replica runs: nodes, local GPU ids and ranks.

A plan says ``replicas`` x (``tp`` x ``pp`` x ``cp``) GPUs of a type whose profile has
``gpus_per_node`` per machine. The layout follows two rules:

* a replica that fits in a node never straddles two: replicas are packed onto nodes whole, in
  order, so a node holds ``gpus_per_node // size`` of them (its GPUs ``0..size-1`` for the
  first, ``size..2*size-1`` for the next, ...);
* a replica larger than a node spans whole nodes it shares with no other replica, the same
  number of GPUs on each (every engine's multi-node launch starts the same number of ranks per
  node). Ranks count tensor-parallel first, so with ``tp <= gpus_per_node`` the tensor-parallel
  groups stay inside a node and only pipeline stages cross the network.

Nodes are numbered from 0: the spanning replicas first, then the packed ones. Each replica gets
its own port (``base_port + replica``) so replicas sharing a node never collide.
"""

from __future__ import annotations

from dataclasses import dataclass

from simulator.errors import ConfigError

__all__ = ["NodeSlice", "ReplicaLayout", "Topology", "lay_out"]


@dataclass(frozen=True)
class NodeSlice:
    """The part of one replica on one node: the node, its local GPU ids, the replica's ranks."""

    node: int
    gpus: tuple[int, ...]
    ranks: tuple[int, ...]


@dataclass(frozen=True)
class ReplicaLayout:
    """One replica: its slices in rank order (``slices[0]`` holds rank 0, the leader)."""

    replica: int
    port: int
    slices: tuple[NodeSlice, ...]

    @property
    def nodes(self) -> tuple[int, ...]:
        return tuple(s.node for s in self.slices)

    @property
    def spans_nodes(self) -> bool:
        return len(self.slices) > 1


@dataclass(frozen=True)
class Topology:
    """Every replica's layout over ``nodes`` machines of ``gpus_per_node`` GPUs."""

    nodes: int
    gpus_per_node: int
    gpus_per_replica: int
    replicas: tuple[ReplicaLayout, ...]

    def on_node(self, node: int) -> list[tuple[ReplicaLayout, NodeSlice]]:
        """The replicas (and their slices) that run on ``node``."""
        return [(r, s) for r in self.replicas for s in r.slices if s.node == node]

    @property
    def nodes_per_replica(self) -> int:
        return len(self.replicas[0].slices) if self.replicas else 0


def lay_out(
    *, replicas: int, gpus_per_replica: int, gpus_per_node: int, base_port: int = 8000
) -> Topology:
    """The layout of ``replicas`` replicas of ``gpus_per_replica`` GPUs (see module doc)."""
    if replicas < 1 or gpus_per_replica < 1 or gpus_per_node < 1:
        raise ConfigError(
            f"cannot lay out {replicas} replica(s) of {gpus_per_replica} GPU(s) on nodes of "
            f"{gpus_per_node}: every count must be at least 1"
        )
    size, node_size = gpus_per_replica, gpus_per_node
    layouts: list[ReplicaLayout] = []
    if size > node_size:
        spans = -(-size // node_size)
        if size % spans:
            raise ConfigError(
                f"a replica of {size} GPUs cannot be spread evenly over {spans} nodes of "
                f"{node_size} GPUs (engines start the same number of ranks on every node)"
            )
        local = size // spans
        for replica in range(replicas):
            slices = tuple(
                NodeSlice(
                    node=replica * spans + i,
                    gpus=tuple(range(local)),
                    ranks=tuple(range(i * local, (i + 1) * local)),
                )
                for i in range(spans)
            )
            layouts.append(ReplicaLayout(replica, base_port + replica, slices))
        nodes = replicas * spans
    else:
        per_node = node_size // size
        for replica in range(replicas):
            node, slot = divmod(replica, per_node)
            gpus = tuple(range(slot * size, (slot + 1) * size))
            layouts.append(
                ReplicaLayout(
                    replica, base_port + replica, (NodeSlice(node, gpus, tuple(range(size))),)
                )
            )
        nodes = -(-replicas // per_node)
    return Topology(
        nodes=nodes, gpus_per_node=node_size, gpus_per_replica=size, replicas=tuple(layouts)
    )
