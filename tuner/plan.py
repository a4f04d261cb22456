"""The deployment plan: what ``tune plan`` decides, as versioned JSON with a published schema.

A ``DeploymentPlan`` is the contract between rooftune and whoever deploys: a serving script, a
Kubernetes generator, a person. It says *what to run* (model, GPU type and count, replicas and
the per-replica configuration, the quantization and its quality risk, speculative decoding and
the acceptance rate assumed), *what to expect* (predicted latency percentiles against each SLO,
throughput, cost, the per-GPU memory plan), *why this one* (the Pareto set and the runners-up,
each with the reason it lost) and *where it came from* (rooftune version, hardware profile and
calibration, study and trial). The ``engines`` section holds each engine's rendering, so a
serving system reads its launch line straight from the plan.

``schema_version`` changes whenever a field changes meaning or disappears; ``load_plan`` refuses
any other version with one line, rather than misreading it. ``tune schema plan`` prints
``plan_json_schema()``.

Writing: ``write_study_dir`` puts everything a plan produces (``plan.json``, each engine's config
file and launch script, the report and its plots) in a staging folder first, then renames each
file into place with ``plan.json`` last, so a reader (or a crash) never meets half a plan.
``render_engines`` renders every engine and refuses a plan the chosen engine could not launch
under its own memory rule.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from simulator.errors import ConfigError, one_line
from tuner.safe_text import shell_comment
from tuner.search.choices import Risk

__all__ = [
    "SCHEMA_VERSION",
    "DeploymentPlan",
    "Provenance",
    "SloCheck",
    "MemoryPlan",
    "CapacityInfo",
    "Candidate",
    "QuantizationInfo",
    "SpeculativeInfo",
    "WorkloadInfo",
    "plan_json_schema",
    "load_plan",
    "write_json_atomic",
    "write_engine_files",
    "write_study_dir",
    "memory_plan",
    "render_engines",
    "hf_model_id",
]

SCHEMA_VERSION = "1"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SloCheck(_Strict):
    """One SLO: its target and the prediction (``metric`` is ttft, tpot, itl or e2e)."""

    name: str = Field(description="as given on the command line, e.g. ttft_p99")
    metric: str
    percentile: float
    target_s: float
    predicted_s: float
    met: bool
    margin: float = Field(description="(target - predicted) / target; negative when missed")


class MemoryPlan(_Strict):
    """Per GPU, on the fullest GPU of a replica. The KV cache is what the budget leaves."""

    hbm_bytes: float
    budget_bytes: float = Field(description="hbm_bytes x gpu_memory_utilization")
    gpu_memory_utilization: float
    weights_bytes: float
    activation_bytes: float
    reserved_bytes: float
    kv_cache_bytes: float
    kv_bytes_per_token: float
    kv_tokens: float
    kv_tokens_needed: float = Field(
        description="max(max_num_seqs x mean request length, max_model_len), in whole blocks"
    )
    headroom_bytes: float = Field(description="hbm_bytes minus everything the engine allocates")
    engine_fractions: dict[str, float] = Field(
        default_factory=dict, description="each engine's memory knob under its own budget rule"
    )


class QuantizationInfo(_Strict):
    weights: str
    weight_dtype: str
    activation_dtype: str
    kv_dtype: str
    risk: Risk
    weights_risk: str
    kv_risk: str
    description: str
    allowed: list[str] = Field(description="what --allow-quant permitted")


class SpeculativeInfo(_Strict):
    method: str
    draft_model: str | None = None
    num_speculative_tokens: int
    acceptance_rate: float
    acceptance_source: str = "assumed for conversational traffic; measure it on yours"


class WorkloadInfo(_Strict):
    name: str
    rate_requests_per_s: float | None = Field(description="null means offline (all at once)")
    num_requests: int
    seed: int
    mean_prompt_tokens: float
    mean_output_tokens: float


class CapacityInfo(_Strict):
    """What the deployment serves: the capacity of one replica against the offered rate."""

    replica_rate_per_s: float | None = Field(
        description="highest request rate one replica serves within every SLO (2 % rate grid)"
    )
    replicas: int
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
    risk: str = "none"
    why_not: str | None = None


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
    trials: int
    evaluations: int = Field(description="request-level simulations run by this process")
    shared: int = Field(default=0, description="answered by an equivalent candidate's run")
    resumed: int = Field(default=0, description="simulations read back from the study")
    wall_s: float


class DeploymentPlan(_Strict):
    """One deployment of one model on one GPU type, chosen by ``tune plan``."""

    schema_version: Literal["1"] = "1"  # SCHEMA_VERSION
    model: str
    model_id: str
    hardware: str
    gpu_budget: int
    num_gpus: int
    replicas: int
    gpus_per_replica: int
    config: dict[str, Any] = Field(description="per-replica simulator DeploymentConfig")
    quantization: QuantizationInfo
    speculative: SpeculativeInfo | None = None
    workload: WorkloadInfo
    objectives: dict[str, str] = Field(description="objective name -> maximize | minimize")
    slos: list[SloCheck]
    predicted: dict[str, Any] = Field(description="Prediction fields at the workload")
    capacity: CapacityInfo | None = None
    memory: MemoryPlan
    pareto: list[Candidate]
    alternatives: list[Candidate] = Field(default_factory=list)
    search: dict[str, Any] = Field(default_factory=dict)
    provenance: Provenance
    engine: str = "vllm"
    engines: dict[str, dict[str, Any]] = Field(default_factory=dict)
    validation: dict[str, Any] | None = Field(
        default=None, description="measured metrics and errors once `tune validate` ran"
    )


def plan_json_schema() -> dict[str, Any]:
    schema = DeploymentPlan.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["$id"] = f"https://rooftune.dev/schemas/deployment-plan-{SCHEMA_VERSION}.json"
    return schema


def load_plan(path: str | Path) -> DeploymentPlan:
    """Read a plan; any other schema version or a malformed file is one ``ConfigError`` line."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such plan file") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ConfigError(f"{path}: not a readable JSON plan ({error})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a plan is a JSON object")
    version = data.get("schema_version")
    if version != SCHEMA_VERSION:
        raise ConfigError(
            f"{path}: plan schema_version {version!r} is not supported "
            f"(this rooftune reads {SCHEMA_VERSION!r}); re-run tune plan"
        )
    try:
        return DeploymentPlan.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path}: invalid plan: {one_line(error)}") from None


def write_json_atomic(path: Path, data: Any) -> None:
    """Write JSON next to ``path`` then rename over it: readers never see half a file."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(
        json.dumps(data, indent=2, sort_keys=False, allow_nan=False) + "\n", encoding="utf-8"
    )
    tmp.replace(path)


def hf_model_id(model: Any) -> str:
    """``meta-llama/Llama-3.1-70B`` from a preset's config.json URL (else the model's name)."""
    source = str(getattr(model, "source", "") or "")
    marker = "huggingface.co/"
    if marker in source:
        parts = source.split(marker, 1)[1].split("/")
        if len(parts) >= 2:
            return f"{parts[0]}/{parts[1]}"
    return source if source and Path(source).exists() else model.name


def memory_plan(
    *, memory: Any, hbm_bytes: float, gpu_memory_utilization: float, kv_tokens_needed: float
) -> MemoryPlan:
    """The per-GPU memory plan from the simulator's ``MemoryBreakdown``."""
    used = (
        memory.weights_bytes
        + memory.activation_bytes
        + memory.reserved_bytes
        + memory.kv_cache_bytes
    )
    return MemoryPlan(
        hbm_bytes=hbm_bytes,
        budget_bytes=memory.capacity_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        weights_bytes=memory.weights_bytes,
        activation_bytes=memory.activation_bytes,
        reserved_bytes=memory.reserved_bytes,
        kv_cache_bytes=memory.kv_cache_bytes,
        kv_bytes_per_token=memory.kv_bytes_per_token,
        kv_tokens=memory.kv_tokens_capacity,
        kv_tokens_needed=kv_tokens_needed,
        headroom_bytes=hbm_bytes - used,
    )


def render_engines(
    *,
    config: Any,
    model_id: str,
    memory: MemoryPlan,
    chosen: str,
    served_model_name: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Every engine's section. The chosen engine must render *and* hold the plan under its own
    budget rule (KV cache at least what the plan needs, total within HBM), else ConfigError:
    a plan that cannot launch is never written. Other engines that cannot render get a note."""
    from tuner.engines import ENGINES, EngineInputs, kv_cache_bytes_given, render, total_bytes_used

    inputs = EngineInputs(
        config=config,
        model_id=model_id,
        hbm_bytes=memory.hbm_bytes,
        weights_bytes=memory.weights_bytes,
        activation_bytes=memory.activation_bytes,
        reserved_bytes=memory.reserved_bytes,
        kv_cache_bytes=memory.kv_cache_bytes,
        served_model_name=served_model_name,
    )
    sections: dict[str, dict[str, Any]] = {}
    needed = memory.kv_tokens_needed * memory.kv_bytes_per_token
    for engine in ENGINES:
        try:
            section = render(engine, inputs)
        except ConfigError as error:
            if engine == chosen:
                raise
            sections[engine] = {"engine": engine, "error": str(error)}
            continue
        fraction = section.memory_fraction
        kv = kv_cache_bytes_given(engine, inputs, fraction)
        total = total_bytes_used(engine, inputs, fraction)
        if engine == chosen and (kv < needed or total > memory.hbm_bytes):
            raise ConfigError(
                f"{engine} would give the KV cache {kv / 1e9:.1f} GB (needs "
                f"{needed / 1e9:.1f} GB) using {total / 1e9:.1f} GB in all"
            )
        memory.engine_fractions[engine] = fraction
        sections[engine] = section.to_dict()
    return sections


def write_engine_files(directory: Path, plan: DeploymentPlan) -> list[Path]:
    """Each rendered engine's config files and a launch script for every replica."""
    written = []
    for engine, section in plan.engines.items():
        if "error" in section:
            continue
        for name, text in section.get("config_files", {}).items():
            (directory / name).write_text(text, encoding="utf-8")
            written.append(directory / name)
        lines = [
            "#!/usr/bin/env bash",
            shell_comment(
                f"{plan.model} on {plan.num_gpus} x {plan.hardware}: {plan.replicas} "
                f"replica(s) of tp={plan.config['tp']} pp={plan.config['pp']}; "
                f"{engine} {section.get('engine_version', '')}"
            ),
            shell_comment(
                f"written by rooftune {plan.provenance.rooftune_version} from plan.json "
                f"(study {plan.provenance.study_name}, trial {plan.provenance.trial})"
            ),
        ]
        lines += [shell_comment(f"note: {note}") for note in section.get("notes", [])]
        lines += ["set -euo pipefail", 'cd "$(dirname "$0")"']
        replicas = section.get("replicas") or [section["launch"]]
        if len(replicas) == 1:
            lines.append(replicas[0])
        else:
            lines += [f"{line} &" for line in replicas] + ["wait"]
        script = directory / f"{engine}.sh"
        script.write_text("\n".join(lines) + "\n", encoding="utf-8")
        script.chmod(0o755)
        written.append(script)
    return written


def write_study_dir(
    *,
    out_dir: Path,
    plan: DeploymentPlan,
    figures: dict[str, bytes] | None,
    html_text: str | None,
    md_text: str | None,
) -> list[Path]:
    """Write every output through a staging folder; ``plan.json`` is renamed in last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=out_dir))
    try:
        files = write_engine_files(staging, plan)
        if figures:
            (staging / "plots").mkdir()
            for name, png in figures.items():
                (staging / "plots" / f"{name}.png").write_bytes(png)
                files.append(staging / "plots" / f"{name}.png")
        for name, text in (("report.html", html_text), ("report.md", md_text)):
            if text is not None:
                (staging / name).write_text(text, encoding="utf-8")
                files.append(staging / name)
        write_json_atomic(staging / "plan.json", plan.model_dump(mode="json"))
        final = []
        for path in [*files, staging / "plan.json"]:
            target = out_dir / path.relative_to(staging)
            target.parent.mkdir(parents=True, exist_ok=True)
            os.replace(path, target)
            final.append(target)
        return final
    finally:
        shutil.rmtree(staging, ignore_errors=True)
