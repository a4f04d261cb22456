"""TensorRT-LLM 1.x (PyTorch backend): ``trtllm-serve`` flags plus its options YAML.

``trtllm-serve MODEL --config trtllm.yaml`` builds ``TorchLlmArgs`` from a few click flags and
then merges the YAML over them (1.x names the option ``--config``; ``--extra_llm_api_options``
is the older spelling of the same option). Everything the plan decides is written to the YAML,
and the command line repeats the knobs that have flags with the same values, so precedence
between the two never matters. Flags are snake_case.

What each knob means here, and how the plan maps onto it:

* ``tensor_parallel_size`` / ``pipeline_parallel_size`` / ``context_parallel_size``
  (``--tp_size`` / ``--pp_size`` / ``--cp_size``).
* ``moe_expert_parallel_size`` (``--ep_size``) with ``moe_tensor_parallel_size``: experts are
  spread over ``ep`` ranks and each is split ``tp / ep`` ways, the plan's layout, written out so
  the engine does not pick its own split.
* ``kv_cache_config.free_gpu_memory_fraction`` (``--kv_cache_free_gpu_memory_fraction``): share
  of the memory still *free* after weights and runtime buffers, used only for the KV cache; see
  ``budget.py``. The YAML repeats it inside ``kv_cache_config`` because older 1.x releases
  replace the whole ``kv_cache_config`` with the YAML's mapping.
* ``kv_cache_config.dtype``: ``auto`` or ``fp8``; ``kv_cache_config.tokens_per_block`` is the
  KV page size.
* ``max_batch_size`` / ``max_num_tokens`` / ``max_seq_len``: running requests, tokens per step,
  longest sequence. ``enable_chunked_prefill`` is a plain switch (``--enable_chunked_prefill``
  is a flag with no ``--no-`` form, so it appears on the command line only when on).
* ``cuda_graph_config``: ``null`` disables CUDA graphs; otherwise graphs are captured up to the
  plan's batch size with padding, so every decode step of the plan runs inside a graph.
* ``speculative_config``: ``{decoding_type, max_draft_len, speculative_model}`` with
  ``decoding_type`` ``Draft_Target``, ``Eagle3`` or ``NGram`` (n-gram adds
  ``max_matching_ngram_size``).
* Quantization has no flag: TensorRT-LLM reads it from a Model Optimizer checkpoint
  (``tuner.handover.checkpoints`` names it, or the command that makes it).
* A replica larger than a node runs in one MPI world started from its first node:
  ``mpirun -H HOSTS -np N trtllm-llmapi-launch trtllm-serve ...`` (the documented multi-node
  launcher); the other nodes run nothing themselves.
* ``/health`` answers health checks and ``/metrics`` reports iteration statistics.
"""

from __future__ import annotations

from typing import Any

from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from tuner.engines.budget import memory_fraction
from tuner.engines.common import checkpoint_notes, draft_model_path, model_dtype
from tuner.engines.inputs import EngineInputs, EngineSection, EnvVar
from tuner.engines.section import Spanning, config_file_section, replica_note
from tuner.handover.topology import ReplicaLayout
from tuner.safe_text import EnvRef

__all__ = ["render", "CONFIG_FILE"]

CONFIG_FILE = "trtllm.yaml"
# trtllm-serve has no text-only switch for a multimodal checkpoint: the vision tower is loaded
# and counted (replicated on every GPU, the conservative assumption).
LOADS_VISION_TOWER = True
# n-gram drafting: match suffixes of up to 4 tokens (same window as the vLLM rendering).
NGRAM_MATCH_SIZE = 4
_DECODING_TYPE = {"draft": "Draft_Target", "eagle": "Eagle3", "ngram": "NGram"}


def render(inputs: EngineInputs) -> EngineSection:
    config = inputs.config
    checkpoint = inputs.checkpoint("trtllm")
    notes = checkpoint_notes(checkpoint)
    options = _options(inputs, notes)
    head = ["trtllm-serve", checkpoint.model_id, "--backend", "pytorch", "--host", inputs.host]
    port = str(inputs.layout.replicas[0].port)
    args = [*head, "--port", port, *_flags(config, options), "--config", CONFIG_FILE]
    note = replica_note(config, why="TensorRT-LLM has no data-parallel flag; ")
    if note:
        notes.append(note)
    if inputs.served_model_name:
        notes.append(
            "trtllm-serve has no served-model-name option in this release: clients use the "
            "model path as the model name"
        )
    return config_file_section(
        "trtllm",
        inputs,
        args=args,
        with_file=[*head, "--config", CONFIG_FILE],
        config_file=CONFIG_FILE,
        options=options,
        notes=notes,
        memory_fraction=options["kv_cache_config"]["free_gpu_memory_fraction"],
        spanning=SPANNING,
    )


def _hosts(replica: ReplicaLayout) -> EnvRef:
    return EnvRef(f"REPLICA{replica.replica}_HOSTS")


def _launcher(replica: ReplicaLayout, forwarded: list[str]) -> list[str | EnvRef]:
    """Open MPI's launcher: the replica's hosts, one rank per GPU, the variables every rank
    needs exported to the remote ones (``-x``)."""
    ranks = sum(len(part.gpus) for part in replica.slices)
    exports = [word for name in forwarded for word in ("-x", name)]
    return ["mpirun", "-H", _hosts(replica), "-np", str(ranks), *exports, "trtllm-llmapi-launch"]


def _span_env(replica: ReplicaLayout) -> list[EnvVar]:
    slots = len(replica.slices[0].gpus)
    nodes = ", ".join(str(n) for n in replica.nodes)
    example = ",".join(f"node{n}:{slots}" for n in replica.nodes)
    return [
        EnvVar(
            name=_hosts(replica).name,
            description=f"replica {replica.replica}'s nodes {nodes} for mpirun, as HOST:SLOTS "
            f"in order (e.g. {example}), reachable over ssh from node {replica.nodes[0]}",
        )
    ]


SPANNING = Spanning(flags=lambda position: [], launcher=_launcher, env=_span_env)


def _options(inputs: EngineInputs, notes: list[str]) -> dict[str, Any]:
    config = inputs.config
    if inputs.text_only:
        notes.append(
            "trtllm-serve loads the checkpoint's vision encoder too (about 1.8 GB per GPU, "
            "counted in the memory fraction); clients send text only"
        )
    if config.scheduling == "static":
        notes.append(
            "TensorRT-LLM always batches in flight; the plan's static batching is not kept"
        )
    options: dict[str, Any] = {
        "tensor_parallel_size": config.tp,
        "pipeline_parallel_size": config.pp,
        "context_parallel_size": config.cp,
        "moe_expert_parallel_size": config.ep,
        "moe_tensor_parallel_size": config.tp // config.ep,
        "dtype": model_dtype(config),
        "max_batch_size": config.max_num_seqs,
        "max_num_tokens": config.max_num_batched_tokens,
        "max_seq_len": config.max_model_len,
        "enable_chunked_prefill": config.enable_chunked_prefill,
        "kv_cache_config": {
            "free_gpu_memory_fraction": memory_fraction("trtllm", inputs),
            "dtype": "fp8" if config.kv_dtype == "fp8" else "auto",
            "tokens_per_block": config.block_size,
        },
        "cuda_graph_config": _cuda_graphs(config),
    }
    if config.speculative is not None:
        options["speculative_config"] = _speculative(config.speculative)
    return options


def _cuda_graphs(config: DeploymentConfig) -> dict[str, Any] | None:
    if not config.cuda_graphs:
        return None
    return {"enable_padding": True, "max_batch_size": config.max_num_seqs}


def _speculative(spec: SpeculativeConfig) -> dict[str, Any]:
    out: dict[str, Any] = {
        "decoding_type": _DECODING_TYPE[spec.method],
        "max_draft_len": spec.num_speculative_tokens,
    }
    if spec.method == "ngram":
        out["max_matching_ngram_size"] = NGRAM_MATCH_SIZE
    else:
        out["speculative_model"] = draft_model_path(spec)
    return out


def _flags(config: DeploymentConfig, options: dict[str, Any]) -> list[str]:
    """The click flags that exist for plan knobs, with the same values as the YAML."""
    values = {
        "--tp_size": config.tp,
        "--pp_size": config.pp,
        "--cp_size": config.cp,
        "--ep_size": config.ep,
        "--max_batch_size": config.max_num_seqs,
        "--max_num_tokens": config.max_num_batched_tokens,
        "--max_seq_len": config.max_model_len,
        "--kv_cache_free_gpu_memory_fraction": options["kv_cache_config"][
            "free_gpu_memory_fraction"
        ],
    }
    argv = [token for flag, value in values.items() for token in (flag, str(value))]
    if config.enable_chunked_prefill:
        argv.append("--enable_chunked_prefill")
    return argv
