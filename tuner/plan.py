"""The deployment plan: what ``tune plan`` decides, as versioned JSON with a published schema.

A ``DeploymentPlan`` is the contract between rooftune and whoever deploys: a serving script, a
Kubernetes generator, a person. It says *what to run* (model, GPU type and count, replicas and
the per-replica configuration, the quantization and its quality risk, speculative decoding and
the acceptance rate assumed), *what to expect* (predicted latency percentiles against each SLO,
throughput, cost, the per-GPU memory plan), *why this one* (the Pareto set and the runners-up,
each with the reason it lost) and *where it came from* (rooftune version, hardware profile and
calibration, study and trial) and *how to run it*: the layout of the replicas on the nodes
(``topology``), the router in front of them, and per engine its checkpoint, image, config file,
one launch script per node with the environment it needs, the port and the health and metrics
endpoints (``engines``). Every section is typed: ``tune schema plan`` publishes enums, ranges and
required fields, and ``load_plan`` validates strictly, so a tampered plan is refused in one
line rather than half understood.

``schema_version`` changes whenever a field changes meaning or disappears; ``load_plan`` refuses
any other version with one line, rather than misreading it. ``tune schema plan`` prints
``plan_json_schema()``.

Writing a plan and what comes with it: ``tuner.study_files``. Each engine's section is rendered
by ``tuner.handover.sections``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simulator.data.models import preset_name
from simulator.data.specs import (
    ComputeDtype,
    DeploymentConfig,
    KvDtype,
    ModelSpec,
    WeightDtype,
)
from simulator.errors import ConfigError, one_line
from simulator.results import Prediction
from tuner.engines import EngineName
from tuner.engines.inputs import EngineRefusal, EngineSection
from tuner.handover.topology import NodeSlice, ReplicaLayout, Topology
from tuner.search.choices import Risk

__all__ = [
    "SCHEMA_VERSION",
    "DeploymentPlan",
    "Provenance",
    "SloCheck",
    "TopologyInfo",
    "RouterInfo",
    "MemoryPlan",
    "CapacityInfo",
    "Candidate",
    "QuantizationInfo",
    "SpeculativeInfo",
    "WorkloadInfo",
    "plan_json_schema",
    "load_plan",
    "hf_model_id",
    "model_of",
]

SCHEMA_VERSION = "2"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SloCheck(_Strict):
    """One SLO: its target, the prediction and, when the GPU is calibrated, the band the
    calibration's residuals put around it (``metric`` is ttft, tpot, itl or e2e)."""

    name: str = Field(description="as given on the command line, e.g. ttft_p99")
    metric: Literal["ttft", "tpot", "itl", "e2e"]
    percentile: float = Field(gt=0, le=100)
    target_s: float = Field(gt=0)
    predicted_s: float = Field(ge=0)
    met: bool
    margin: float = Field(description="(target - predicted) / target; negative when missed")
    band_s: tuple[float, float] | None = Field(
        default=None,
        description="where the measured value would fall if the calibrated step times err as "
        "they did on the calibration's measured steps (10th to 90th percentile); null when "
        "the GPU has no calibration",
    )
    band_source: str | None = None


class MemoryPlan(_Strict):
    """Per GPU, on the fullest GPU of a replica. The KV cache is what the budget leaves; a
    speculative drafter's weights and KV come out of it."""

    hbm_bytes: float = Field(gt=0, description="the profile's memory")
    device_memory_bytes: float = Field(
        gt=0, description="the total the driver reports: what the engines' fractions multiply"
    )
    budget_bytes: float = Field(gt=0, description="device_memory_bytes x gpu_memory_utilization")
    gpu_memory_utilization: float = Field(gt=0, le=1)
    weights_bytes: float = Field(ge=0, description="the target model's weights")
    drafter_weights_bytes: float = Field(default=0.0, ge=0)
    activation_bytes: float = Field(ge=0)
    reserved_bytes: float = Field(ge=0)
    kv_cache_bytes: float = Field(gt=0, description="the budget left after weights and the rest")
    kv_bytes_per_token: float = Field(gt=0, description="the target's and the drafter's")
    kv_tokens: float = Field(ge=0)
    kv_tokens_needed: float = Field(
        ge=0,
        description="max(max_num_seqs x mean request length, max_model_len), in whole blocks",
    )
    headroom_bytes: float = Field(
        description="device_memory_bytes minus everything the engine allocates"
    )
    engine_fractions: dict[EngineName, float] = Field(
        default_factory=dict, description="each engine's memory knob under its own budget rule"
    )


class QuantizationInfo(_Strict):
    weights: str
    weight_dtype: WeightDtype
    activation_dtype: ComputeDtype
    kv_dtype: KvDtype
    risk: Risk
    weights_risk: Risk
    kv_risk: Risk
    description: str
    allowed: list[str] = Field(description="what --allow-quant permitted")


class SpeculativeInfo(_Strict):
    method: Literal["draft", "eagle", "ngram"]
    draft_model: str | None = None
    num_speculative_tokens: int = Field(ge=1)
    acceptance_rate: float = Field(gt=0, lt=1)
    acceptance_source: str = "assumed for conversational traffic; measure it on yours"


class WorkloadInfo(_Strict):
    name: str
    rate_requests_per_s: float | None = Field(
        default=None, gt=0, description="null means offline (all at once)"
    )
    num_requests: int = Field(ge=1)
    seed: int
    mean_prompt_tokens: float = Field(gt=0)
    mean_output_tokens: float = Field(gt=0)


class CapacityInfo(_Strict):
    """What the deployment serves: the capacity of one replica against the offered rate."""

    replica_rate_per_s: float | None = Field(
        description="highest request rate one replica serves within every SLO (2 % rate grid)"
    )
    replicas: int = Field(ge=1)
    deployment_rate_per_s: float | None = Field(description="replicas x replica_rate_per_s")
    bound_rate_per_s: float = Field(
        description="the step model's upper bound on one replica's capacity"
    )
    bound_limit: str = Field(description="what sets that bound (slo, max_num_seqs, ...)")
    offered_rate_per_s: float | None = Field(description="the traffic's rate; null: none")
    headroom: float | None = Field(description="deployment_rate / offered_rate - 1")
    next_replica_at_rate_per_s: float | None = Field(
        description="the offered rate beyond which one more replica is needed"
    )


class Candidate(_Strict):
    """A trial of the study: its configuration, its objectives, and why it was not chosen."""

    trial: int
    label: str
    params: dict[str, Any]
    feasible: bool
    objectives: dict[str, float]
    metrics: dict[str, float | None] = Field(default_factory=dict)
    risk: Risk = "none"
    why_not: str | None = None


class NodeSliceInfo(_Strict):
    """A replica's part on one node: local GPU ids and the replica's ranks there."""

    node: int = Field(ge=0)
    gpus: list[int] = Field(min_length=1)
    ranks: list[int] = Field(min_length=1)


class ReplicaInfo(_Strict):
    replica: int = Field(ge=0)
    port: int = Field(ge=1, le=65535)
    nodes: list[NodeSliceInfo] = Field(min_length=1, description="rank order: leader first")


class TopologyInfo(_Strict):
    """Where every replica runs (``tuner.handover.topology``)."""

    nodes: int = Field(ge=1)
    gpus_per_node: int = Field(ge=1)
    gpus_per_replica: int = Field(ge=1)
    nodes_per_replica: int = Field(ge=1)
    replicas: list[ReplicaInfo] = Field(min_length=1)

    @classmethod
    def of(cls, topology: Topology) -> TopologyInfo:
        return cls(
            nodes=topology.nodes,
            gpus_per_node=topology.gpus_per_node,
            gpus_per_replica=topology.gpus_per_replica,
            nodes_per_replica=topology.nodes_per_replica,
            replicas=[
                ReplicaInfo(
                    replica=r.replica,
                    port=r.port,
                    nodes=[
                        NodeSliceInfo(node=s.node, gpus=list(s.gpus), ranks=list(s.ranks))
                        for s in r.slices
                    ],
                )
                for r in topology.replicas
            ],
        )

    def topology(self) -> Topology:
        return Topology(
            nodes=self.nodes,
            gpus_per_node=self.gpus_per_node,
            gpus_per_replica=self.gpus_per_replica,
            replicas=tuple(
                ReplicaLayout(
                    r.replica,
                    r.port,
                    tuple(NodeSlice(s.node, tuple(s.gpus), tuple(s.ranks)) for s in r.nodes),
                )
                for r in self.replicas
            ),
        )


class RouterInfo(_Strict):
    """How requests reach the replicas: the policy the simulation assumed, and each replica's
    endpoint (the HTTP server runs on its first node)."""

    policy: Literal["least_outstanding", "round_robin"]
    endpoints: list[str] = Field(min_length=1, description="NODE<n>_ADDR:port, one per replica")
    description: str


class Provenance(_Strict):
    rooftune_version: str
    created_utc: str
    command: str
    hardware_profile: dict[str, Any]
    calibration: dict[str, Any]
    study_name: str
    storage: str
    sampler: str
    seed: int
    trial: int
    trials: int = Field(ge=0)
    evaluations: int = Field(ge=0, description="request-level simulations run by this process")
    shared: int = Field(default=0, ge=0, description="answered by an equivalent candidate's run")
    stopped_early: int = Field(
        default=0, ge=0, description="simulations stopped at a certain SLO miss"
    )
    resumed: int = Field(default=0, ge=0, description="simulations read back from the study")
    retried: int = Field(
        default=0, ge=0, description="trials an earlier, interrupted run left unfinished"
    )
    wall_s: float = Field(ge=0)


class DeploymentPlan(_Strict):
    """One deployment of one model on one GPU type, chosen by ``tune plan``."""

    schema_version: Literal["2"] = "2"  # SCHEMA_VERSION
    model: str
    model_id: str = Field(min_length=1, description="Hugging Face id or directory of the model")
    hardware: str
    gpu_budget: int = Field(ge=1)
    num_gpus: int = Field(ge=1)
    replicas: int = Field(ge=1)
    gpus_per_replica: int = Field(ge=1)
    config: DeploymentConfig = Field(description="per-replica configuration (dp = replicas)")
    quantization: QuantizationInfo
    speculative: SpeculativeInfo | None = None
    workload: WorkloadInfo
    objectives: dict[str, Literal["maximize", "minimize"]]
    slos: list[SloCheck]
    predicted: Prediction = Field(description="the serving simulation of the whole deployment")
    cost_per_hour: float | None = Field(
        default=None, ge=0, description="GPUs x list price; null when the GPU has no price"
    )
    capacity: CapacityInfo | None = None
    memory: MemoryPlan
    topology: TopologyInfo
    router: RouterInfo
    pareto: list[Candidate]
    alternatives: list[Candidate] = Field(default_factory=list)
    search: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance
    engine: EngineName = Field(description="the engine the plan was checked against")
    engines: dict[EngineName, EngineSection | EngineRefusal] = Field(min_length=1)
    validation: dict[str, Any] | None = Field(
        default=None, description="measured metrics and errors once `tune validate` ran"
    )

    @model_validator(mode="after")
    def _consistent(self) -> DeploymentPlan:
        if self.num_gpus != self.replicas * self.gpus_per_replica:
            raise ValueError("num_gpus must equal replicas x gpus_per_replica")
        if self.num_gpus > self.gpu_budget:
            raise ValueError("num_gpus exceeds gpu_budget")
        if (
            self.config.dp != self.replicas
            or self.config.gpus_per_replica != self.gpus_per_replica
        ):
            raise ValueError("config disagrees with replicas / gpus_per_replica")
        if len(self.topology.replicas) != self.replicas:
            raise ValueError("topology lays out a different number of replicas")
        searched = (self.search.get("spec") or {}).get("model")
        preset = preset_name(searched) if isinstance(searched, str) else None
        if preset is not None and preset != self.model:
            # the report and validation rebuild the model from the search: both must agree
            # (a config.json path is checked when it is read, not here)
            raise ValueError(f"model {self.model!r} is not the searched {searched!r}")
        if not isinstance(self.engines.get(self.engine), EngineSection):
            raise ValueError(
                f"engines has no launchable section for the plan's engine {self.engine}"
            )
        return self


def plan_json_schema() -> dict[str, Any]:
    schema = DeploymentPlan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://rooftune.dev/schemas/deployment-plan-{SCHEMA_VERSION}.json"
    return schema


def load_plan(path: str | Path) -> DeploymentPlan:
    """Read a plan, strictly: any other schema version, a wrong type, an unknown value or a
    missing section is one ``ConfigError`` line (exit 2), never a plan half understood."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
        data = json.loads(text)
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON plan ({one_line(error)})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plan is a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: plan schema_version {version!r} is not supported "
            f"(this rooftune reads {SCHEMA_VERSION!r}); re-run tune plan"
        )
    try:
        return DeploymentPlan.model_validate_json(text, strict=True)
    except ValidationError as error:
        raise ConfigError(f"{path}: invalid plan: {one_line(error)}") from None


def hf_model_id(model: Any) -> str:
    """What the plan calls the model: a preset's Hugging Face id (from its config.json URL),
    a local model's directory (engines load the folder, not the config.json), else its name."""
    source = str(getattr(model, "source", "") or "")
    marker = "huggingface.co/"
    if marker in source:
        parts = source.split(marker, 1)[1].split("/")
        if len(parts) >= 2:
            return f"{parts[0]}/{parts[1]}"
    if source and Path(source).exists():
        path = Path(source)
        return str(path.parent if path.is_file() else path)
    return model.name


def model_of(plan: DeploymentPlan) -> ModelSpec:
    """The model a plan was made for: its preset, else its local directory."""
    from simulator.data.models import get_model
    from simulator.errors import UnknownModelError

    try:
        return get_model(plan.model)
    except UnknownModelError:
        return get_model(plan.model_id)
