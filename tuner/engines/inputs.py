"""What every renderer takes (``EngineInputs``) and returns (``EngineSection``)."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from simulator.data.specs import DeploymentConfig
from simulator.errors import ConfigError

__all__ = ["EngineInputs", "EngineSection"]


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
