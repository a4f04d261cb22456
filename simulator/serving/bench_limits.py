"""The batch limits TensorRT-LLM's benchmark tool picks for itself.

``trtllm-bench throughput`` sets ``max_batch_size`` and ``max_num_tokens`` from the dataset
when it is not given them (``tensorrt_llm/bench/build/tuning.py``, ``calc_engine_setting`` and
``finetune_setting``; ``bench/build/utils.py`` reads the device memory from NVML in GiB). A
prediction compared with a number that tool produced must run under the same limits:

1. The KV cache of the whole replica: every GPU's memory as the driver reports it, less the
   weights (all parameters at 1 byte for FP8, else 2), times the KV fraction (0.90, the
   command's ``--kv_cache_free_gpu_mem_fraction`` default).
2. How many requests of ``isl + osl`` tokens it holds, at ``2 x layers x max(tp, kv_heads) x
   head_dim x KV bytes`` per token.
3. ``max_batch_size``: that count capped at 4,096, over the pipeline stages, rounded up
   optimistically: to 32s with a floor of 64 below 256, to 128s below 1,024, else to 256s.
4. ``max_num_tokens``: the batch times ``1 + isl / osl``, capped at 32,768, rounded up to 256s
   with a floor of 2,048 below 4,096, to 512s below 8,192, else to 1,024s.
"""

from __future__ import annotations

import math

from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec
from ..units import GiB

__all__ = ["trtllm_bench_limits", "KV_FRACTION"]

KV_FRACTION = 0.90  # trtllm-bench's --kv_cache_free_gpu_mem_fraction default


def trtllm_bench_limits(
    model: ModelSpec, hardware: HardwareSpec, config: DeploymentConfig, *, isl: int, osl: int
) -> tuple[int, int]:
    """(max_batch_size, max_num_tokens) as trtllm-bench picks them for this replica and these
    mean input / output lengths (see the module docstring)."""
    from ..data.models import parameter_counts

    weight_bytes = 1.0 if config.weight_dtype == "fp8" else 2.0
    kv_bytes = 1.0 if config.kv_dtype == "fp8" else 2.0
    kv_heads = max(config.tp, model.num_key_value_heads)
    per_token = 2 * model.num_hidden_layers * kv_heads * model.head_dim * kv_bytes / GiB
    gpus = config.tp * config.pp
    weights = parameter_counts(model).total * weight_bytes / GiB
    available = hardware.memory_reported_bytes / GiB * gpus - weights
    requests = available * KV_FRACTION / (per_token * (isl + osl))
    if requests < 1:
        return 0, 0  # the tool refuses: the caller reports that nothing fits
    batch = min(requests, 4096) / config.pp
    tokens = min(batch * (1 + isl / osl), 32768)
    if batch < 256:
        max_batch = max(64, 32 * math.ceil(batch / 32))
    elif batch < 1024:
        max_batch = 128 * math.ceil(batch / 128)
    else:
        max_batch = 256 * math.ceil(batch / 256)
    if tokens < 4096:
        max_tokens = max(2048, 256 * math.ceil(tokens / 256))
    elif tokens < 8192:
        max_tokens = 512 * math.ceil(tokens / 512)
    else:
        max_tokens = 1024 * math.ceil(tokens / 1024)
    return int(max_batch), int(max_tokens)
