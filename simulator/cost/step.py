"""The step model: time of one engine iteration for N configurations at once.

``StepModel.build(model, hardware, configs)`` counts the operators once (``ops.py``) and sizes the
memory (``memory.py``); then ``prefill``, ``decode`` or any mixed ``step`` is one matrix product
and a roofline (``roofline.py``). Invalid configurations (TP that does not divide the heads...)
come back with ``time = inf`` and a reason code; nothing raises inside the model.

Pipeline parallelism: op rows sum over all layers, so ``latency_s`` is the time for a token to
cross every stage (what a request waits for). ``stage_s`` is the slowest stage, which sets the
throughput once ``pp`` micro-batches keep every stage busy.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec
from .configs import ConfigArrays
from .memory import MemoryArrays, kv_tokens_needed, memory_per_gpu
from .ops import OpTable, build_op_table
from .roofline import OpTimes, evaluate
from .shapes import decode_features, prefill_features

__all__ = ["StepModel", "StepTimes"]


@dataclass(frozen=True)
class StepTimes:
    """One step per configuration (or per shape): arrays ``[N]`` plus the per-op detail."""

    latency_s: np.ndarray  # through every pipeline stage
    stage_s: np.ndarray  # slowest stage (pp micro-batches in flight)
    ops: OpTimes


@dataclass(frozen=True)
class StepModel:
    model: ModelSpec
    hardware: HardwareSpec
    configs: ConfigArrays
    table: OpTable
    memory: MemoryArrays
    invalid_code: np.ndarray  # [N], 0 where valid

    @classmethod
    def build(
        cls,
        model: ModelSpec,
        hardware: HardwareSpec,
        configs: ConfigArrays | Sequence[DeploymentConfig] | DeploymentConfig,
    ) -> StepModel:
        if isinstance(configs, DeploymentConfig):
            configs = [configs]
        if not isinstance(configs, ConfigArrays):
            configs = ConfigArrays.from_configs(list(configs))
        invalid = configs.invalid_code(model, hardware)
        with np.errstate(divide="ignore", invalid="ignore"):
            table = build_op_table(model, hardware, configs)
            memory = memory_per_gpu(model, hardware, configs)
        return cls(
            model=model,
            hardware=hardware,
            configs=configs,
            table=table,
            memory=memory,
            invalid_code=invalid,
        )

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def valid(self) -> np.ndarray:
        return self.invalid_code == 0

    def _moe(self) -> dict[str, int]:
        return dict(
            experts=self.model.num_local_experts, experts_per_token=self.model.num_experts_per_tok
        )

    def step(self, features: np.ndarray) -> StepTimes:
        """Evaluate steps given as a feature matrix (see ``shapes.py``)."""
        with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
            ops = evaluate(
                self.table, self.hardware, features, cuda_graphs=self.configs.cuda_graphs
            )
        total = ops.total_s
        pp = self.configs.pp
        send = ops.time_s[..., self.table.names.index("pp_send")]
        stage = (total - send) / pp + np.where(pp > 1, send / np.maximum(pp - 1, 1), 0.0)
        valid = self.valid  # [N]; broadcasts over S shapes when N == 1
        return StepTimes(
            latency_s=np.where(valid, total, np.inf),
            stage_s=np.where(valid, stage, np.inf),
            ops=ops,
        )

    def prefill(self, batch, prompt, *, cached=0.0) -> StepTimes:
        """``batch`` prompts of ``prompt`` tokens (on top of ``cached`` tokens) in one step."""
        return self.step(prefill_features(batch, prompt, cached=cached, **self._moe()))

    def decode(self, batch, context, *, query_tokens: int = 1) -> StepTimes:
        """One decode step of ``batch`` sequences with ``context`` cached tokens each."""
        return self.step(decode_features(batch, context, query_tokens=query_tokens, **self._moe()))

    def fits(self, batch, tokens_per_sequence) -> np.ndarray:
        """Valid, one ``max_model_len`` sequence fits (engine start-up rule), and ``batch``
        sequences of ``tokens_per_sequence`` fit the KV cache at once."""
        need = kv_tokens_needed(
            batch,
            tokens_per_sequence,
            block_size=self.configs.block_size,
            max_model_len=self.configs.max_model_len,
        )
        kv_tokens = self.memory.kv_tokens
        return self.valid & (kv_tokens >= need) & (kv_tokens > 0)
