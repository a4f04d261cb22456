"""The serving engines' admission policies the scheduler knows, by name (one home, imported
cheaply by the command line; the rules themselves are in ``simulator/serving/admission.py``):
vLLM v1; SGLang's new-token-ratio reservation; TensorRT-LLM's two capacity-scheduler policies."""

from __future__ import annotations

from typing import Literal, get_args

__all__ = ["Admission", "ADMISSIONS"]

Admission = Literal["vllm", "sglang", "trtllm-no-evict", "trtllm-max-utilization"]
ADMISSIONS: tuple[str, ...] = get_args(Admission)
