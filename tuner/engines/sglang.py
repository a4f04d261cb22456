"""SGLang (pinned to 0.5.23): ``python -m sglang.launch_server`` arguments and a config YAML.

What each knob means in SGLang, and how the plan maps onto it:

* ``--tp-size`` / ``--pp-size`` / ``--ep-size``: sizes, not switches. ``ep-size`` spreads the
  experts over ``ep`` ranks of the TP group, exactly the plan's ``ep``. ``--dp-size`` is 1:
  replicas are separate servers (see ``tuner.engines``). SGLang's ``--attn-cp-size`` splits
  attention *inside* the TP group, so a plan whose ``cp`` adds GPUs cannot be expressed.
* ``--mem-fraction-static``: share of the memory *free when the server starts* for the static
  pools, weights + KV cache; activations and CUDA graphs use the rest
  (``KVCacheConfigurator._profile_available_bytes``). See ``budget.py``.
* ``--kv-cache-dtype``: ``auto`` (model dtype) or ``fp8_e4m3``. SGLang rejects the bare ``fp8``
  that vLLM and TensorRT-LLM accept.
* Quantization comes from the checkpoint (``tuner.handover.checkpoints``): SGLang detects
  compressed-tensors, Model Optimizer, FBGEMM FP8, AWQ and GPTQ from its config, so no
  ``--quantization`` flag is written (``--quantization fp8`` on a bf16 checkpoint loads every
  bf16 weight before quantizing: ``load_weights_and_postprocess``).
* ``--max-running-requests`` caps concurrent requests (vLLM's max-num-seqs).
  ``--max-prefill-tokens`` caps prefill tokens per step and ``--chunked-prefill-size`` the chunk
  (``-1`` = no chunking): together they play vLLM's ``--max-num-batched-tokens``.
* ``--context-length`` is the longest sequence (prompt + output).
* CUDA graphs off: ``--cuda-graph-backend-decode disabled`` and ``--cuda-graph-backend-prefill
  disabled`` (0.5.23 deprecates ``--disable-cuda-graph``).
* Speculative decoding: ``--speculative-algorithm`` ``STANDALONE`` (a separate draft model),
  ``EAGLE3`` or ``NGRAM``. A chain of ``g`` proposals is ``--speculative-num-steps g``,
  ``--speculative-eagle-topk 1`` and ``--speculative-num-draft-tokens g+1`` (the verified window
  counts the last accepted token); once the steps are set the whole triple must be.

* ``--enable-metrics`` serves Prometheus metrics at ``/metrics``.
* Llama 4 is served text-only by default: without ``--enable-multimodal`` the vision tower is
  neither built nor loaded (``Llama4ForConditionalGeneration.__init__``).
* A replica larger than a node: the same command on every node with ``--nnodes N --node-rank
  r --dist-init-addr HOST:PORT`` (the first node's address); only the first serves HTTP.

The YAML (``--config sglang.yaml``) uses the dashed flag names as keys, verbatim
(``ConfigArgumentMerger``); it holds no ``--no-`` style flag, which the loader rejects.
Command-line values win over it, which is how each replica gets its port and each node its
rank.
"""

from __future__ import annotations

from typing import Any

from simulator.data.specs import SpeculativeConfig
from simulator.errors import ConfigError
from tuner.engines.budget import memory_fraction
from tuner.engines.common import PROGRAMS, checkpoint_notes, draft_model_path, model_dtype
from tuner.engines.inputs import EngineInputs, EngineSection, EnvVar
from tuner.engines.section import (
    Spanning,
    SpanPosition,
    config_file_section,
    node_address,
    replica_note,
    with_suffix,
)
from tuner.handover.topology import ReplicaLayout
from tuner.safe_text import EnvRef

__all__ = ["render", "CONFIG_FILE", "LAUNCHER"]

CONFIG_FILE = "sglang.yaml"
# Llama 4's vision tower is built only with --enable-multimodal, which is never written.
LOADS_VISION_TOWER = False
LAUNCHER = PROGRAMS["sglang"]
_ALGORITHM = {"draft": "STANDALONE", "eagle": "EAGLE3", "ngram": "NGRAM"}


def render(inputs: EngineInputs) -> EngineSection:
    config = inputs.config
    checkpoint = inputs.checkpoint("sglang")
    notes = checkpoint_notes(checkpoint)
    options = _options(inputs, notes)
    head = [*LAUNCHER, "--model-path", checkpoint.model_id]
    args = [*head, *_flags(options), "--port", str(inputs.layout.replicas[0].port)]
    note = replica_note(config)
    if note:
        notes.append(note)
    return config_file_section(
        "sglang",
        inputs,
        args=args,
        with_file=[*head, "--config", CONFIG_FILE],
        config_file=CONFIG_FILE,
        options=options,
        notes=notes,
        memory_fraction=options["mem-fraction-static"],
        spanning=SPANNING,
    )


# The port of the first node's rendezvous (torch.distributed's TCP store), fixed so every node
# names the same one.
DIST_INIT_PORT = 5000


def _span_flags(position: SpanPosition) -> list[str | EnvRef]:
    return [
        "--nnodes",
        str(position.nodes),
        "--node-rank",
        position.rank,
        "--dist-init-addr",
        with_suffix(position.leader_address, f":{DIST_INIT_PORT}"),
    ]


def _span_env(replica: ReplicaLayout) -> list[EnvVar]:
    leader = replica.nodes[0]
    return [
        EnvVar(
            name=node_address(leader).name,
            description=f"the address of node {leader}, replica {replica.replica}'s first node, "
            f"as its other nodes reach it (rendezvous on port {DIST_INIT_PORT})",
        )
    ]


SPANNING = Spanning(flags=_span_flags, env=_span_env)


def _options(inputs: EngineInputs, notes: list[str]) -> dict[str, Any]:
    config = inputs.config
    if config.cp > 1:
        raise ConfigError(
            f"SGLang cannot express cp={config.cp}: its --attn-cp-size splits attention inside "
            "the TP group instead of adding GPUs; plan cp=1 for SGLang"
        )
    options: dict[str, Any] = {
        "tp-size": config.tp,
        "pp-size": config.pp,
        "dp-size": 1,  # replicas are separate servers (see tuner.engines)
        "ep-size": config.ep,
        "dtype": model_dtype(config),
    }
    options["kv-cache-dtype"] = "fp8_e4m3" if config.kv_dtype == "fp8" else "auto"
    options["mem-fraction-static"] = memory_fraction("sglang", inputs)
    options["context-length"] = config.max_model_len
    options["max-running-requests"] = config.max_num_seqs
    options["max-prefill-tokens"] = config.max_num_batched_tokens
    options["chunked-prefill-size"] = (
        config.max_num_batched_tokens if config.enable_chunked_prefill else -1
    )
    if config.scheduling == "static":
        notes.append("SGLang always batches continuously; the plan's static batching is not kept")
    if not config.cuda_graphs:
        options["cuda-graph-backend-decode"] = "disabled"
        options["cuda-graph-backend-prefill"] = "disabled"
    if config.speculative is not None:
        options.update(_speculative(config.speculative))
    if inputs.served_model_name:
        options["served-model-name"] = inputs.served_model_name
    options["enable-metrics"] = True
    options["host"] = inputs.host
    return options


def _speculative(spec: SpeculativeConfig) -> dict[str, Any]:
    steps = spec.num_speculative_tokens
    out: dict[str, Any] = {"speculative-algorithm": _ALGORITHM[spec.method]}
    if spec.method == "ngram":
        # A chain, not a tree: one candidate per step, matching the plan's acceptance model.
        out["speculative-ngram-min-bfs-breadth"] = 1
        out["speculative-ngram-max-bfs-breadth"] = 1
        out["speculative-num-draft-tokens"] = steps + 1
        return out
    out["speculative-draft-model-path"] = draft_model_path(spec)
    out["speculative-num-steps"] = steps
    out["speculative-eagle-topk"] = 1
    out["speculative-num-draft-tokens"] = steps + 1
    return out


def _flags(options: dict[str, Any]) -> list[str]:
    argv: list[str] = []
    for key, value in options.items():
        if isinstance(value, bool):  # store_true flags: present or absent
            argv += [f"--{key}"] if value else []
        else:
            argv += [f"--{key}", str(value)]
    return argv
