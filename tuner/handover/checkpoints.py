"""Which checkpoint each engine loads for a plan, and how to make one nobody has published.

A quantized plan is only what it says if the engine loads weights that are already quantized:
handed the bf16 checkpoint, TensorRT-LLM loads bf16, an INT8 plan serves bf16, and online FP8
holds the bf16 weights first. So every engine section names its checkpoint:

1. ``--model-id`` (or a local model's directory) is loaded as given;
2. a preset's bf16 plan loads its Instruct model (serving answers requests, which is what the
   Instruct models are tuned for; pass ``--model-id`` for a base model);
3. a preset's quantized plan loads the first checkpoint of ``checkpoints.yaml`` with the plan's
   scheme whose format the engine reads (each cited to its model card);
4. otherwise the plan names the checkpoint to make, where to put it, and the tool's command:
   llm-compressor for vLLM and SGLang (compressed-tensors), NVIDIA Model Optimizer for
   TensorRT-LLM (its PyTorch backend reads Model Optimizer checkpoints).

Speculative drafters come from the same table: EAGLE-3 heads trained on exactly the target's
Instruct model, and a small draft model with the same tokenizer.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from simulator.errors import ConfigError

__all__ = ["Checkpoint", "resolve", "eagle_head", "draft_model", "table"]

TABLE = Path(__file__).with_name("checkpoints.yaml")
# What the engines read, per format (the table's ``engines`` say so per checkpoint; a checkpoint
# made by the tool below is in the format its engine reads).
_TOOL = {
    "vllm": "llm-compressor",
    "sglang": "llm-compressor",
    "trtllm": "modelopt",
}
# llm-compressor recipes (docs.vllm.ai/projects/llm-compressor, examples/quantization_*):
# FP8 needs no calibration data; INT8 W8A8 (SmoothQuant + GPTQ) and INT4 W4A16 (GPTQ, groups
# of 128) calibrate on 512 chat samples.
_LLM_COMPRESSOR = {
    "fp8": "QuantizationModifier(targets='Linear', scheme='FP8_DYNAMIC', ignore=['lm_head'])",
    "int8": "[SmoothQuantModifier(smoothing_strength=0.8), "
    "GPTQModifier(targets='Linear', scheme='W8A8', ignore=['lm_head'])]",
    "int4": "GPTQModifier(targets='Linear', scheme='W4A16', ignore=['lm_head'])",
}
# Model Optimizer's examples/llm_ptq/hf_ptq.py formats (TensorRT-LLM docs,
# features/quantization.md). Its Llama 3 matrix has no INT8 SmoothQuant for the PyTorch backend.
_MODELOPT = {"fp8": "fp8", "int4": "int4_awq"}


@dataclass(frozen=True)
class Checkpoint:
    """What one engine loads: ``model_id`` (a Hugging Face id or a directory), the plan's weight
    ``scheme`` it holds, its ``format``, the model card (``source``), and when nobody publishes
    it, ``make``: the command that writes it to ``model_id``."""

    model_id: str
    scheme: str
    format: str
    detail: str
    source: str | None = None
    make: str | None = None

    @property
    def prequantized(self) -> bool:
        return self.scheme != "bf16"


@functools.cache
def table() -> dict[str, Any]:
    """``checkpoints.yaml``: preset name -> its checkpoints."""
    data = yaml.safe_load(TABLE.read_text(encoding="utf-8"))
    assert isinstance(data, dict), TABLE
    return data


def resolve(
    *,
    preset: str | None,
    weights: str,
    engine: str,
    model_id: str | None = None,
    hub_id: str | None = None,
) -> Checkpoint:
    """The checkpoint ``engine`` loads for a plan of ``preset`` with ``weights`` (a weight
    scheme: bf16, fp8, int8, int4). ``model_id``: what the user gave (``--model-id`` or a local
    directory), loaded as is. ``hub_id``: the model's Hugging Face id when it is no preset of
    the table. ``ConfigError`` when the engine cannot serve that scheme at all."""
    if model_id:
        return Checkpoint(
            model_id=model_id,
            scheme=weights,
            format="as given",
            detail="given with --model-id"
            if weights == "bf16"
            else f"given with --model-id: it must already hold {weights} weights",
        )
    entry = table().get(preset or "", {})
    instruct = entry.get("instruct") or hub_id
    if not instruct:
        raise ConfigError(f"no checkpoint is known for {preset!r}: pass --model-id")
    if weights in ("bf16", "fp16"):
        return Checkpoint(
            model_id=instruct,
            scheme=weights,
            format="safetensors",
            detail=f"{weights} weights as published",
            source=f"https://huggingface.co/{instruct}",
        )
    for known in entry.get("quantized") or ():
        if known["scheme"] == weights and engine in known["engines"]:
            return Checkpoint(
                model_id=known["id"],
                scheme=weights,
                format=known["format"],
                detail=known["detail"],
                source=known["source"],
            )
    return _to_make(instruct, weights, engine)


def _to_make(instruct: str, weights: str, engine: str) -> Checkpoint:
    """No public checkpoint: the one to make from ``instruct``, and the command."""
    target = f"./{instruct.rsplit('/', 1)[-1]}-{weights.upper()}"
    if _TOOL[engine] == "modelopt":
        if weights not in _MODELOPT:
            raise ConfigError(
                f"TensorRT-LLM reads no {weights.upper()} checkpoint of this model (Model "
                "Optimizer makes none for Llama 3); plan fp8 or int4 weights for it"
            )
        command = (
            "python TensorRT-Model-Optimizer/examples/llm_ptq/hf_ptq.py "
            f"--pyt_ckpt_path {instruct} --qformat {_MODELOPT[weights]} "
            f"--kv_cache_qformat none --export_path {target}"
        )
        return Checkpoint(
            model_id=target,
            scheme=weights,
            format="modelopt",
            detail=f"to make with NVIDIA Model Optimizer ({_MODELOPT[weights]})",
            make=command,
        )
    calibration = (
        ""
        if weights == "fp8"
        else ", dataset='ultrachat_200k', num_calibration_samples=512, max_seq_length=2048"
    )
    command = (
        'python -c "from llmcompressor import oneshot; '
        "from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier; "
        "from llmcompressor.modifiers.smoothquant import SmoothQuantModifier; "
        f"oneshot(model={instruct!r}, recipe={_LLM_COMPRESSOR[weights]}{calibration}, "
        f'output_dir={target!r})"'
    )
    return Checkpoint(
        model_id=target,
        scheme=weights,
        format="compressed-tensors",
        detail="to make with llm-compressor",
        make=command,
    )


def eagle_head(preset: str) -> str | None:
    """An EAGLE-3 head trained on ``preset``'s Instruct model, if one is published."""
    heads = table().get(preset, {}).get("eagle3") or []
    return heads[0]["id"] if heads else None


def draft_model(preset: str) -> str | None:
    """A small draft model with ``preset``'s tokenizer, if the table names one."""
    draft = table().get(preset, {}).get("draft")
    return str(draft) if draft else None
