"""Engine configs: a deployment plan turned into ready-to-run vLLM, SGLang and TensorRT-LLM.

``render(engine, inputs)`` takes one replica's ``DeploymentConfig`` plus the plan's per-GPU
memory numbers and returns an ``EngineSection``: a config file, the line that launches it, the
equivalent command line without the file, one launch line per replica, and notes (such as the
pre-quantized checkpoint a plan needs). The three engines are pinned to releases
(``ENGINE_VERSIONS``), and every flag and config key a renderer writes exists in that release's
argument definitions, extracted from its released source by ``extract_flags``.

Choices that hold for all three engines:

* **Memory.** Each engine's fraction is recomputed from the plan's bytes under that engine's own
  rule (``budget.py``): vLLM's counts total memory, SGLang's counts weights + KV, TensorRT-LLM's
  counts what is free after weights and buffers. One number is never copied across engines.
* **Data parallelism.** ``dp`` replicas are rendered as ``dp`` independent servers, each on its
  own GPUs and port (``EngineSection.replicas``), behind the router the plan assumes. The
  engines' own DP modes mean something else: vLLM's ``--data-parallel-size`` couples MoE layers
  across ranks (experts shard over DP x TP and idle ranks run dummy batches), SGLang's mixes with
  attention-DP, and TensorRT-LLM has none. Independent servers are what the simulator modeled.
* **Explicit values.** Defaults drift between releases (vLLM's memory fraction went from 0.90 to
  0.92, ``max_num_seqs`` from 256 to a GPU-dependent 1024), so every value the plan decided is
  written out, booleans included.
* **Shell safety.** Every value in every line is ``shlex``-quoted: a model path with spaces or
  quotes round-trips through ``shlex.split``.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.errors import ConfigError
from simulator.specs import DeploymentConfig
from tuner.engines.budget import kv_cache_bytes_given, memory_fraction, total_bytes_used
from tuner.engines.common import ENGINE_VERSIONS

__all__ = [
    "ENGINES",
    "ENGINE_VERSIONS",
    "EngineInputs",
    "EngineSection",
    "render",
    "memory_fraction",
    "kv_cache_bytes_given",
    "total_bytes_used",
]

ENGINES = ("vllm", "sglang", "trtllm")


@dataclass(frozen=True, kw_only=True)
class EngineInputs:
    """What a renderer needs: one replica's config, the model, and per-GPU memory in bytes.

    ``kv_cache_bytes`` is the KV cache the plan wants on each GPU; ``reserved_bytes`` is the
    runtime reserve (CUDA context, NCCL, CUDA-graph workspaces) the cost model counted.
    """

    config: DeploymentConfig
    model_id: str  # Hugging Face id or local path, passed to the engine as is
    hbm_bytes: float
    weights_bytes: float
    activation_bytes: float
    reserved_bytes: float
    kv_cache_bytes: float
    served_model_name: str | None = None
    host: str = "0.0.0.0"
    port: int = 8000

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

    @classmethod
    def from_memory(
        cls,
        *,
        config: DeploymentConfig,
        model_id: str,
        memory: Mapping[str, float],
        hbm_bytes: float | None = None,
        served_model_name: str | None = None,
        host: str = "0.0.0.0",
        port: int = 8000,
    ) -> EngineInputs:
        """Build from a Prediction's ``memory`` block (``weights_bytes``, ``kv_cache_bytes``,
        ``activation_bytes``, ``reserved_bytes``, ``capacity_bytes``)."""
        try:
            return cls(
                config=config,
                model_id=model_id,
                hbm_bytes=float(hbm_bytes if hbm_bytes is not None else memory["capacity_bytes"]),
                weights_bytes=float(memory["weights_bytes"]),
                activation_bytes=float(memory["activation_bytes"]),
                reserved_bytes=float(memory["reserved_bytes"]),
                kv_cache_bytes=float(memory["kv_cache_bytes"]),
                served_model_name=served_model_name,
                host=host,
                port=port,
            )
        except KeyError as missing:
            raise ConfigError(f"the plan's memory block lacks {missing.args[0]!r}") from None


@dataclass(frozen=True, kw_only=True)
class EngineSection:
    """One engine's rendering of a plan.

    ``launch`` starts replica 0 from the config file; ``command`` is the same server as one
    self-contained command line (``args`` is its argv); ``replicas`` has one launch line per
    data-parallel replica with its GPUs and port.
    """

    engine: str
    engine_version: str
    command: str
    args: list[str]
    config_files: dict[str, str]
    launch: str
    replicas: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    memory_fraction: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, for the ``engines`` section of a plan."""
        return asdict(self)


def render(engine: str, inputs: EngineInputs) -> EngineSection:
    """Render ``inputs`` for ``engine`` (one of ``ENGINES``); ``ConfigError`` if it cannot."""
    if engine == "vllm":
        from tuner.engines import vllm as module
    elif engine == "sglang":
        from tuner.engines import sglang as module  # type: ignore[no-redef]
    elif engine == "trtllm":
        from tuner.engines import trtllm as module  # type: ignore[no-redef]
    else:
        raise ConfigError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
    return module.render(inputs)
