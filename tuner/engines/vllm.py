"""vLLM (pinned to 0.33.0): a ``vllm serve`` config YAML plus the equivalent command line.

What each knob means in vLLM, and how the plan maps onto it:

* ``--tensor-parallel-size`` / ``--pipeline-parallel-size``: the replica's TP x PP grid.
  ``--prefill-context-parallel-size`` splits long prompts' attention (the plan's ``cp``).
* ``--enable-expert-parallel`` is a *switch*, not a size: when on, MoE experts are sharded over
  every rank of the instance (EP = DP x PCP x TP; DP is 1 here since replicas are separate
  servers), so vLLM can express ``ep == tp`` (without ``cp``) or ``ep == 1`` and nothing in
  between. Other plans are refused rather than silently rendered as something else.
* ``--gpu-memory-utilization``: share of *total* GPU memory for the whole instance; see
  ``budget.py``.
* ``--kv-cache-dtype``: ``auto`` stores KV in the model dtype (an explicit ``bfloat16`` must
  match the checkpoint, so ``auto`` is safer); ``fp8`` is e4m3.
* ``--quantization fp8`` on a bf16 checkpoint quantizes weights to FP8 at load time and computes
  W8A8 with dynamic activation scales. INT8 W8A8 and INT4/INT8 weight-only need pre-quantized
  checkpoints, which vLLM recognises from their ``config.json`` (no flag).
* ``--max-num-seqs`` / ``--max-num-batched-tokens``: the scheduler's running-request cap and
  per-step token budget. Chunked prefill is always written explicitly; it defaults on, and vLLM
  warns when it is turned off.
* ``--enforce-eager`` turns CUDA graphs off.
* ``--speculative-config``: a JSON mapping ``{"method", "model", "num_speculative_tokens"}``
  (n-gram adds ``prompt_lookup_max/min``). Methods: ``draft_model``, ``eagle3``, ``ngram``.

In the YAML (``vllm serve MODEL --config vllm.yaml``) keys are the long flag names, booleans are
``true``/``false`` (``false`` becomes ``--no-flag``) and the speculative config is a nested
mapping. Values on the command line win over the file, which is how replicas get their port.
"""

from __future__ import annotations

import json
from typing import Any

from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.errors import ConfigError
from tuner.engines.budget import memory_fraction
from tuner.engines.common import (
    draft_model_path,
    model_dtype,
    prequantized_note,
)
from tuner.engines.inputs import EngineInputs, EngineSection
from tuner.engines.section import config_file_section, replica_note

__all__ = ["render", "CONFIG_FILE"]

CONFIG_FILE = "vllm.yaml"
# n-gram drafting: match suffixes of 2..4 prompt tokens (vLLM's documented example sizes).
NGRAM_LOOKUP_MAX, NGRAM_LOOKUP_MIN = 4, 2
_METHOD = {"draft": "draft_model", "eagle": "eagle3", "ngram": "ngram"}


def render(inputs: EngineInputs) -> EngineSection:
    config = inputs.config
    notes: list[str] = []
    options = _options(inputs, notes)
    flags = _flags(options)
    serve = ["vllm", "serve", inputs.model_id]
    args = [*serve, *flags]
    note = replica_note(config)
    if note:
        notes.append(note)
    return config_file_section(
        "vllm",
        inputs,
        args=args,
        server=serve,
        config_file=CONFIG_FILE,
        options=options,
        notes=notes,
        memory_fraction=options["gpu-memory-utilization"],
    )


def _options(inputs: EngineInputs, notes: list[str]) -> dict[str, Any]:
    """Long flag name (no dashes) -> value, in the order a reader wants them."""
    config = inputs.config
    options: dict[str, Any] = {
        "tensor-parallel-size": config.tp,
        "pipeline-parallel-size": config.pp,
        # Replicas are separate servers (see tuner.engines); inside one, DP is 1.
        "data-parallel-size": 1,
        "enable-expert-parallel": _expert_parallel(config),
    }
    if config.cp > 1:
        options["prefill-context-parallel-size"] = config.cp
    options["dtype"] = model_dtype(config)
    quantization = _quantization(config)
    if quantization:
        options["quantization"] = quantization
    note = prequantized_note(config, engine="vllm")
    if note:
        notes.append(note)
    if config.weight_dtype == "fp8" and config.activation_dtype != "fp8":
        notes.append(
            "FP8 weights with bf16 activations: vLLM's fp8 method computes W8A8 with dynamic "
            "activation scales on GPUs with FP8 tensor cores (weight-only FP8 elsewhere)"
        )
    options["kv-cache-dtype"] = "fp8" if config.kv_dtype == "fp8" else "auto"
    options["block-size"] = config.block_size
    options["gpu-memory-utilization"] = memory_fraction("vllm", inputs)
    options["max-model-len"] = config.max_model_len
    options["max-num-seqs"] = config.max_num_seqs
    options["max-num-batched-tokens"] = config.max_num_batched_tokens
    options["enable-chunked-prefill"] = config.enable_chunked_prefill
    if not config.enable_chunked_prefill:
        notes.append("vLLM warns that disabling chunked prefill is not officially supported")
    if config.scheduling == "static":
        notes.append("vLLM always batches continuously; the plan's static batching is not kept")
    options["enforce-eager"] = not config.cuda_graphs
    if config.speculative is not None:
        options["speculative-config"] = _speculative(config.speculative)
    if inputs.served_model_name:
        options["served-model-name"] = inputs.served_model_name
    options["host"] = inputs.host
    options["port"] = inputs.port
    return options


def _expert_parallel(config: DeploymentConfig) -> bool:
    if config.ep == 1:
        return False
    if config.cp > 1:
        raise ConfigError(
            f"vLLM cannot express ep={config.ep} with cp={config.cp}: its expert-parallel group "
            "spans TP x prefill-context-parallel ranks; plan ep=1 or cp=1 for vLLM"
        )
    if config.ep == config.tp:
        return True
    raise ConfigError(
        f"vLLM cannot express ep={config.ep} < tp={config.tp}: --enable-expert-parallel is a "
        "switch that shards experts over all TP x DP ranks; plan ep=1 or ep=tp for vLLM"
    )


def _quantization(config: DeploymentConfig) -> str | None:
    """The --quantization value, or None when the checkpoint itself says how it is quantized."""
    if config.weight_dtype == "fp8":
        # Online FP8 from a bf16 checkpoint; static activation scales come from the checkpoint.
        static = config.activation_dtype == "fp8" and config.fp8_scaling == "static"
        return None if static else "fp8"
    return None


def _speculative(spec: SpeculativeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {"method": _METHOD[spec.method]}
    if spec.method == "ngram":
        out["prompt_lookup_max"] = NGRAM_LOOKUP_MAX
        out["prompt_lookup_min"] = NGRAM_LOOKUP_MIN
    else:
        out["model"] = draft_model_path(spec)
    out["num_speculative_tokens"] = spec.num_speculative_tokens
    return out


def _flags(options: dict[str, Any]) -> list[str]:
    """The command-line form of the YAML: booleans as --x / --no-x, mappings as JSON."""
    argv: list[str] = []
    for key, value in options.items():
        if isinstance(value, bool):
            argv.append(f"--{key}" if value else f"--no-{key}")
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value, separators=(",", ":"))]
        else:
            argv += [f"--{key}", str(value)]
    return argv
