"""What every renderer takes (``EngineInputs``) and returns (``EngineSection``, or an
``EngineRefusal`` saying why the engine cannot serve the plan).

``EngineSection`` is the plan's contract with whoever deploys: the checkpoint the engine loads,
the container image, the config file, the equivalent command line, one launch script per node
with the environment it needs, the port and the health and metrics endpoints. Its schema is
part of ``tune schema plan``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from simulator.data.specs import DeploymentConfig
from simulator.errors import ConfigError
from tuner.engines import EngineName
from tuner.handover.checkpoints import Checkpoint
from tuner.handover.topology import Topology, lay_out

__all__ = [
    "EngineInputs",
    "CheckpointInfo",
    "EnvVar",
    "NodeLaunch",
    "EngineSection",
    "EngineRefusal",
]


@dataclass(frozen=True, kw_only=True)
class EngineInputs:
    """What a renderer needs: one replica's config, the checkpoints, the layout on the nodes,
    and per-GPU memory in bytes.

    ``hbm_bytes`` is each GPU's memory as the driver reports it (the total every engine's
    memory fraction multiplies); ``kv_cache_bytes`` is the KV cache the plan wants on each GPU;
    ``reserved_bytes`` the runtime reserve (CUDA context, NCCL, CUDA-graph workspaces) the cost
    model counted. ``checkpoints`` holds what each engine loads (``handover.checkpoints``);
    without one the engine loads ``model_id`` as given. ``text_only``: the checkpoint is
    multimodal and only its language model is served.
    """

    config: DeploymentConfig
    model_id: str  # Hugging Face id or local path: what the plan calls the model
    hbm_bytes: float
    weights_bytes: float
    activation_bytes: float
    reserved_bytes: float
    kv_cache_bytes: float
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000
    checkpoints: Mapping[str, Checkpoint] = field(default_factory=dict)
    topology: Topology | None = None
    gpus_per_node: int = 8
    text_only: bool = False

    def __post_init__(self) -> None:
        if not self.model_id.strip():
            raise ConfigError("model_id is empty: give a Hugging Face id or a local path")
        if not (math.isfinite(self.hbm_bytes) and self.hbm_bytes > 0):
            raise ConfigError(f"hbm_bytes must be a positive number, got {self.hbm_bytes}")
        for name in ("weights_bytes", "activation_bytes", "reserved_bytes", "kv_cache_bytes"):
            value = getattr(self, name)
            if not (math.isfinite(value) and value >= 0):
                raise ConfigError(f"{name} must be a non-negative number, got {value}")
        if not 0 < self.port < 65536:
            raise ConfigError(f"port must be in 1..65535, got {self.port}")

    def checkpoint(self, engine: str) -> Checkpoint:
        """What ``engine`` loads: its resolved checkpoint, else ``model_id`` as given."""
        known = self.checkpoints.get(engine)
        if known is not None:
            return known
        return Checkpoint(
            model_id=self.model_id,
            scheme=self.config.weight_dtype,
            format="as given",
            detail="loaded as given",
        )

    @property
    def layout(self) -> Topology:
        """Where the replicas run (the plan's topology, else ``dp`` replicas from GPU 0)."""
        if self.topology is not None:
            return self.topology
        return lay_out(
            replicas=self.config.dp,
            gpus_per_replica=self.config.gpus_per_replica,
            gpus_per_node=self.gpus_per_node,
            base_port=self.port,
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckpointInfo(_Strict):
    """The weights an engine loads (see ``tuner.handover.checkpoints``)."""

    model_id: str = Field(min_length=1, description="Hugging Face id or directory")
    scheme: str = Field(description="the plan's weight scheme it holds: bf16, fp8, int8, int4")
    format: str = Field(description="safetensors, compressed-tensors, modelopt, awq, ...")
    detail: str
    source: str | None = Field(default=None, description="its model card")
    make: str | None = Field(
        default=None, description="when no public checkpoint is known: the command that makes it"
    )

    @classmethod
    def of(cls, checkpoint: Checkpoint) -> CheckpointInfo:
        return cls(
            model_id=checkpoint.model_id,
            scheme=checkpoint.scheme,
            format=checkpoint.format,
            detail=checkpoint.detail,
            source=checkpoint.source,
            make=checkpoint.make,
        )


class EnvVar(_Strict):
    """An environment variable a launch script reads; ``value`` None: the operator sets it."""

    name: str = Field(pattern=r"^[A-Z_][A-Z0-9_]*$")
    description: str
    required: bool = True
    secret: bool = False
    value: str | None = None


class NodeLaunch(_Strict):
    """What runs on one node: its script, the replicas (or parts of them) it starts, the
    variables the script needs, and its command lines (one per process; empty when another
    node's launcher starts this node's ranks)."""

    node: int = Field(ge=0)
    script: str = Field(pattern=r"^[a-z0-9][a-z0-9.-]*\.sh$")
    replicas: list[int] = Field(min_length=1)
    env: list[str] = Field(default_factory=list)
    commands: list[str] = Field(default_factory=list)


class EngineSection(_Strict):
    """One engine's rendering of a plan.

    ``command`` / ``args`` is replica 0's server as one self-contained command line;
    ``launch`` starts the same server from the config file. ``nodes`` has one launch script
    per node: each replica on its GPUs and port, with the multi-node rendezvous flags where a
    replica spans nodes.
    """

    engine: EngineName
    engine_version: str
    image: str = Field(description="container image of the pinned release")
    checkpoint: CheckpointInfo
    command: str
    args: list[str] = Field(min_length=2)
    config_files: dict[str, str] = Field(min_length=1)
    launch: str
    nodes: list[NodeLaunch] = Field(min_length=1)
    port: int = Field(ge=1, le=65535, description="replica 0's port; replica r listens on +r")
    health_path: str = Field(pattern=r"^/")
    metrics_path: str = Field(pattern=r"^/")
    env: list[EnvVar] = Field(default_factory=list)
    notes: list[str] = Field(default_factory=list)
    memory_fraction: float = Field(gt=0, le=1)


class EngineRefusal(_Strict):
    """An engine that cannot serve the plan as decided, and why."""

    engine: EngineName
    error: str = Field(min_length=1)
