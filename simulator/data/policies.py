"""The serving engines' admission policies the scheduler knows, by name (one home, imported
cheaply by the command line; the rules themselves are in ``simulator/serving/admission.py``):
vLLM v1; SGLang's new-token-ratio reservation; TensorRT-LLM's two capacity-scheduler policies.
And the share of GPU memory a deployment takes unless told otherwise."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["Admission", "ADMISSIONS", "DEFAULT_GPU_MEMORY_UTILIZATION"]

Admission = Literal["vllm", "sglang", "trtllm-no-evict", "trtllm-max-utilization"]
ADMISSIONS: tuple[str, ...] = get_args(Admission)

# vLLM's default --gpu-memory-utilization; every engine's own fraction is derived from the KV
# cache this leaves (tuner/engines/budget.py).
DEFAULT_GPU_MEMORY_UTILIZATION = 0.90
