"""Kubernetes manifests for a plan (``tune export --format k8s``).

Each replica is one server, as the plan's simulation assumed:

* a replica that fits on a node is a ``Deployment`` of one pod with the replica's GPUs
  (``nvidia.com/gpu``) and a ``Service`` in front of it;
* a replica that spans nodes is a ``LeaderWorkerSet`` (kubernetes-sigs/lws, API
  ``leaderworkerset.x-k8s.io/v1``) of one group of ``nodes_per_replica`` pods, one per node: the
  leader serves HTTP, the workers join it through the rendezvous flags with the addresses LWS
  injects (``LWS_LEADER_ADDRESS``, ``LWS_WORKER_INDEX``), and a ``Service`` selects the
  leader. TensorRT-LLM starts multi-node replicas through MPI over ssh, which LWS does not
  provide; those plans are refused here (use the node scripts).

Every pod runs the engine's command line with every flag (no config file to mount), reads its
Hugging Face token from the Secret ``hf-token`` (key ``token``) when the checkpoint is gated,
gets a memory-backed ``/dev/shm`` for NCCL, and is ready when the engine's health endpoint
answers. The router in front of the replica Services is the operator's (the plan's ``router``
says which policy the predictions assumed).
"""

from __future__ import annotations

import re
from typing import Any

import yaml

from simulator.errors import ConfigError
from tuner.engines.inputs import EngineSection
from tuner.engines.section import Spanning, SpanPosition

__all__ = ["manifests", "documents", "resource_name"]

LWS_API = "leaderworkerset.x-k8s.io/v1"
SHM_BYTES = "16Gi"
HF_SECRET = {"name": "hf-token", "key": "token"}
# How long the engine may load weights and capture graphs before the probes count.
STARTUP_FAILURES, PROBE_PERIOD_S = 120, 10


def resource_name(*parts: str) -> str:
    """A DNS-1123 label from free text: lower case, ``[a-z0-9-]``, at most 63 characters."""
    text = re.sub(r"[^a-z0-9-]+", "-", "-".join(parts).lower()).strip("-")
    return re.sub(r"-{2,}", "-", text)[:63].rstrip("-") or "rooftune"


def manifests(plan: Any, engine: str) -> str:
    """The manifests of ``plan`` for ``engine``, as one multi-document YAML."""
    return yaml.safe_dump_all(documents(plan, engine), sort_keys=False)


def documents(plan: Any, engine: str) -> list[dict[str, Any]]:
    """The manifests as mappings: per replica a Deployment or LeaderWorkerSet, and a Service."""
    section = plan.engines.get(engine)
    if not isinstance(section, EngineSection):
        reason = getattr(section, "error", "it was not rendered")
        raise ConfigError(f"the plan has no {engine} launch to export: {reason}")
    base = resource_name(plan.model, engine)
    out: list[dict[str, Any]] = []
    for replica in plan.topology.replicas:
        name = resource_name(base, f"r{replica.replica}")
        labels = {
            "app.kubernetes.io/name": resource_name(engine),
            "app.kubernetes.io/instance": name,
            "app.kubernetes.io/managed-by": "rooftune",
        }
        if len(replica.nodes) == 1:
            out.append(_deployment(name, labels, section, plan.gpus_per_replica))
            out.append(_service(name, {"app.kubernetes.io/instance": name}, labels, section))
        else:
            out.append(_leader_worker_set(name, labels, section, plan, len(replica.nodes)))
            selector = {"leaderworkerset.sigs.k8s.io/name": name, "role": "leader"}
            out.append(_service(name, selector, labels, section))
    return out


def _argv(section: EngineSection) -> list[str]:
    """The engine's full command line, listening on the section's port (each pod has its own
    address, so every replica uses the same port)."""
    argv = list(section.args)
    for i, word in enumerate(argv[:-1]):
        if word == "--port":
            argv[i + 1] = str(section.port)
    return argv


def _container(
    name: str, section: EngineSection, gpus: int, argv: list[str], *, serves: bool = True
) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": name,
        "image": section.image,
        "command": argv[:1],
        "args": argv[1:],
        "resources": {
            "limits": {"nvidia.com/gpu": str(gpus)},
            "requests": {"nvidia.com/gpu": str(gpus)},
        },
        "volumeMounts": [{"name": "dshm", "mountPath": "/dev/shm"}],
    }
    if any(var.name == "HF_TOKEN" for var in section.env):
        container["env"] = [{"name": "HF_TOKEN", "valueFrom": {"secretKeyRef": dict(HF_SECRET)}}]
    if serves:
        container["ports"] = [{"name": "http", "containerPort": section.port, "protocol": "TCP"}]
        probe = {"httpGet": {"path": section.health_path, "port": "http"}}
        container["startupProbe"] = {
            **probe,
            "periodSeconds": PROBE_PERIOD_S,
            "failureThreshold": STARTUP_FAILURES,
        }
        container["readinessProbe"] = {**probe, "periodSeconds": PROBE_PERIOD_S}
        container["livenessProbe"] = {**probe, "periodSeconds": PROBE_PERIOD_S}
    return container


def _pod_spec(container: dict[str, Any]) -> dict[str, Any]:
    return {
        "containers": [container],
        "volumes": [{"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": SHM_BYTES}}],
    }


def _deployment(
    name: str, labels: dict[str, str], section: EngineSection, gpus: int
) -> dict[str, Any]:
    container = _container(section.engine, section, gpus, _argv(section))
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app.kubernetes.io/instance": name}},
            # The GPUs cannot hold two copies: replace the pod, never run both.
            "strategy": {"type": "Recreate"},
            "template": {"metadata": {"labels": labels}, "spec": _pod_spec(container)},
        },
    }


def _service(
    name: str, selector: dict[str, str], labels: dict[str, str], section: EngineSection
) -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "type": "ClusterIP",
            "selector": selector,
            "ports": [
                {"name": "http", "port": section.port, "targetPort": "http", "protocol": "TCP"}
            ],
        },
    }


def _spanning(engine: str) -> Spanning:
    from importlib import import_module

    spanning: Spanning = import_module(f"tuner.engines.{engine}").SPANNING
    if spanning.launcher is not None:
        raise ConfigError(
            f"{engine} starts a multi-node replica through MPI over ssh, which a "
            "LeaderWorkerSet does not provide: deploy it with the node scripts"
        )
    return spanning


def _leader_worker_set(
    name: str, labels: dict[str, str], section: EngineSection, plan: Any, nodes: int
) -> dict[str, Any]:
    spanning = _spanning(section.engine)
    per_node = plan.gpus_per_replica // nodes

    def argv(is_leader: bool) -> list[str]:
        position = SpanPosition(
            nodes=nodes,
            rank="0" if is_leader else "$(LWS_WORKER_INDEX)",
            leader_address="$(LWS_LEADER_ADDRESS)",
            is_leader=is_leader,
        )
        return [*_argv(section), *[str(word) for word in spanning.flags(position)]]

    leader = _container(f"{section.engine}-leader", section, per_node, argv(True))
    worker = _container(f"{section.engine}-worker", section, per_node, argv(False), serves=False)
    return {
        "apiVersion": LWS_API,
        "kind": "LeaderWorkerSet",
        "metadata": {"name": name, "labels": labels},
        "spec": {
            "replicas": 1,
            "startupPolicy": "LeaderCreated",
            "leaderWorkerTemplate": {
                "size": nodes,
                "restartPolicy": "RecreateGroupOnPodRestart",
                "leaderTemplate": {
                    "metadata": {"labels": {**labels, "role": "leader"}},
                    "spec": _pod_spec(leader),
                },
                "workerTemplate": {
                    "metadata": {"labels": {**labels, "role": "worker"}},
                    "spec": _pod_spec(worker),
                },
            },
        },
    }
