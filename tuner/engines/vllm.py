"""vLLM (pinned to 0.33.0): a ``vllm serve`` config YAML plus the equivalent command line.

What each knob means in vLLM, and how the plan maps onto it:

* ``--tensor-parallel-size`` / ``--pipeline-parallel-size``: the replica's TP x PP grid.
  ``--prefill-context-parallel-size`` splits long prompts' attention (the plan's ``cp``).
* ``--enable-expert-parallel`` is a *switch*, not a size: when on, MoE experts are sharded over
  every rank of the instance (EP = DP x PCP x TP; DP is 1 here since replicas are separate
  servers), so vLLM can express ``ep == tp`` (without ``cp``) or ``ep == 1`` and nothing in
  between. Other plans are refused rather than silently rendered as something else.
* ``--gpu-memory-utilization``: share of the *total* GPU memory the driver reports, for the
  whole instance (``vllm/v1/worker/utils.py:request_memory``); see ``budget.py``.
* ``--kv-cache-dtype``: ``auto`` stores KV in the model dtype; ``fp8`` is e4m3.
* Quantization comes from the checkpoint (``tuner.handover.checkpoints``): vLLM detects
  compressed-tensors, Model Optimizer, FBGEMM FP8, AWQ and GPTQ from its config, so no
  ``--quantization`` flag is written (0.33.0 rewrites ``--quantization fp8`` on a bf16
  checkpoint to online ``fp8_per_tensor``, which first loads the bf16 weights).
* ``--max-num-seqs`` / ``--max-num-batched-tokens``: the scheduler's running-request cap and
  per-step token budget; chunked prefill is always written explicitly.
* ``--enforce-eager`` turns CUDA graphs off.
* ``--speculative-config``: ``{"method", "model", "num_speculative_tokens"}`` with ``method``
  ``draft_model`` (a plain draft model needs it spelled out), ``eagle3`` or ``ngram``; the
  drafter runs at the target's TP (``SpeculativeConfig._verify_and_get_draft_tp``).
* ``--language-model-only``: a multimodal checkpoint (Llama 4) served for text; its vision
  encoder is neither allocated nor loaded (``SupportsMultiModal._mark_tower_model``).
* A replica larger than a node: ``--nnodes N --node-rank r --master-addr A --master-port P``
  on every node, ``--headless`` on all but the first (0.33.0 picks the multiprocessing
  backend for ``nnodes > 1``; ``ParallelConfig.__post_init__``).

The YAML (``vllm serve MODEL --config vllm.yaml``) uses the long flag names. ``vllm serve``
expands it with the top-level parser, which knows no ``--no-`` twins, so ``key: false`` would be
dropped silently (``FlexibleArgumentParser.load_config_file``): a switch that is off is written
``no-<key>: true``. Values on the command line win over the file, which is how each replica
gets its port and each node its rank.
"""

from __future__ import annotations

import json
from typing import Any

from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.errors import ConfigError
from tuner.engines.budget import memory_fraction
from tuner.engines.common import checkpoint_notes, draft_model_path, model_dtype
from tuner.engines.inputs import EngineInputs, EngineSection, EnvVar
from tuner.engines.section import (
    Spanning,
    SpanPosition,
    config_file_section,
    node_address,
    replica_note,
)
from tuner.handover.topology import ReplicaLayout
from tuner.safe_text import EnvRef

__all__ = ["render", "CONFIG_FILE"]

CONFIG_FILE = "vllm.yaml"
# Served text-only (``--language-model-only``), a multimodal checkpoint's vision tower is not
# loaded.
LOADS_VISION_TOWER = False
# n-gram drafting: match suffixes of 2..4 prompt tokens (vLLM's documented example sizes).
NGRAM_LOOKUP_MAX, NGRAM_LOOKUP_MIN = 4, 2
_METHOD = {"draft": "draft_model", "eagle": "eagle3", "ngram": "ngram"}


def render(inputs: EngineInputs) -> EngineSection:
    config = inputs.config
    checkpoint = inputs.checkpoint("vllm")
    notes = checkpoint_notes(checkpoint)
    options = _options(inputs, notes)
    serve = ["vllm", "serve", checkpoint.model_id]
    args = [*serve, *_flags(options), "--port", str(inputs.layout.replicas[0].port)]
    note = replica_note(config)
    if note:
        notes.append(note)
    return config_file_section(
        "vllm",
        inputs,
        args=args,
        with_file=[*serve, "--config", CONFIG_FILE],
        config_file=CONFIG_FILE,
        options=options,
        notes=notes,
        memory_fraction=options["gpu-memory-utilization"],
        spanning=SPANNING,
    )


# The port the first node listens on for the other nodes' workers (0.33.0's default, written
# out so a later default cannot move it).
MASTER_PORT = 29501


def _span_flags(position: SpanPosition) -> list[str | EnvRef]:
    flags: list[str | EnvRef] = ["--nnodes", str(position.nodes), "--node-rank", position.rank]
    flags += ["--master-addr", position.leader_address, "--master-port", str(MASTER_PORT)]
    return flags if position.is_leader else [*flags, "--headless"]


def _span_env(replica: ReplicaLayout) -> list[EnvVar]:
    leader = replica.nodes[0]
    return [
        EnvVar(
            name=node_address(leader).name,
            description=f"the address of node {leader}, replica {replica.replica}'s first node, "
            f"as its other nodes reach it (they connect to port {MASTER_PORT})",
        )
    ]


SPANNING = Spanning(flags=_span_flags, env=_span_env)


def _options(inputs: EngineInputs, notes: list[str]) -> dict[str, Any]:
    """Long flag name (no dashes) -> value, in the order a reader wants them; a switch that
    is off becomes ``no-<name>: True`` (see the module docstring)."""
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
    if inputs.text_only:
        options["language-model-only"] = True
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
    return {
        (f"no-{key}" if value is False else key): (True if value is False else value)
        for key, value in options.items()
    }


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
    """The command-line form of the YAML: switches as --x (``no-x: true`` as --no-x),
    mappings as JSON."""
    argv: list[str] = []
    for key, value in options.items():
        if value is True:
            argv.append(f"--{key}")
        elif isinstance(value, dict):
            argv += [f"--{key}", json.dumps(value, separators=(",", ":"))]
        else:
            argv += [f"--{key}", str(value)]
    return argv
