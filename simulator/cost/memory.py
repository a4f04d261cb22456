"""Memory per GPU: weights, KV cache, activations and reserved workspace; what fits.

The budget is the engine's: ``capacity = HBM x gpu_memory_utilization`` (vLLM counts the whole
instance against it). Out of it come

- **weights** of the fullest pipeline stage: its layers (attention sharded by tp, KV heads
  replicated past tp > num_key_value_heads, dense MLP sharded by tp, experts spread over ep and
  split tp/ep ways), the router, the norms, and the vocab-parallel embedding / lm_head (kept in
  bf16: engines do not quantize them). Quantized weights carry their scales (int4: one bf16
  scale per group); INT8 W8A8 keeps its outlier channels again in bf16;
- **activations** at the token budget: the peak of one forward over ``max_num_batched_tokens``
  tokens (residual stream, QKV, the widest MLP intermediate), the fp32 logits and probabilities
  of up to ``max_num_seqs`` rows, and for naive attention the score matrix of a full chunk;
- **reserved**: CUDA context and allocator slack, CUDA-graph pools, NCCL buffers;
- what is left is the **KV cache**: ``kv_bytes_per_token = layers_per_stage x cache elements
  per token per GPU x kv_dtype_bytes / cp``; the family says what it caches (``2 x kv_heads x
  head_dim``, or one compressed latent for multi-head latent attention).

An engine refuses to start unless one ``max_model_len`` sequence fits the KV cache, so that is
the fit rule; ``max_batch_at_context`` says how many sequences of a given context fit at once.
All functions are vectorized over ``ConfigArrays``.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import numpy as np

from ..data.architecture import Layouts, architecture_of, copies_per_gpu, eagle3_head, per_gpu
from ..data.specs import HardwareSpec, ModelSpec
from .configs import ConfigArrays

__all__ = [
    "MemoryArrays",
    "memory_per_gpu",
    "drafter_memory",
    "eagle_layers_per_token",
    "kv_tokens_needed",
    "whole_blocks",
    "prefix_hits",
    "RESERVED_CONTEXT_BYTES",
    "RESERVED_GRAPH_BYTES",
    "RESERVED_NCCL_BYTES",
]

# Memory outside the tensors the model allocates. CUDA context plus caching-allocator slack
# (vLLM reports 0.5-1 GB of "non-torch memory" on H100-class GPUs); the CUDA-graph memory pool
# for the captured batch sizes; NCCL communicators plus custom all-reduce buffers per process.
RESERVED_CONTEXT_BYTES = 0.75e9
RESERVED_GRAPH_BYTES = 0.5e9
RESERVED_NCCL_BYTES = 0.4e9

_BF16 = 2.0
_LOGIT_BYTES = 4.0 * 2  # fp32 logits and fp32 probabilities


@dataclass(frozen=True)
class MemoryArrays:
    """Per-GPU memory for each configuration (arrays [N], bytes)."""

    weights_bytes: np.ndarray
    activation_bytes: np.ndarray
    reserved_bytes: np.ndarray
    capacity_bytes: np.ndarray
    kv_cache_bytes: np.ndarray  # capacity - weights - activations - reserved (may be < 0)
    kv_bytes_per_token: np.ndarray
    block_bytes: np.ndarray  # one paged-KV block of block_size tokens

    @property
    def kv_tokens(self) -> np.ndarray:
        """Tokens the KV cache holds, in whole blocks."""
        blocks = np.floor(np.maximum(self.kv_cache_bytes, 0.0) / self.block_bytes)
        return blocks * (self.block_bytes / self.kv_bytes_per_token)

    def max_batch_at_context(
        self, context: np.ndarray | float, block_size: np.ndarray | float
    ) -> np.ndarray:
        return np.floor(self.kv_tokens / np.maximum(whole_blocks(context, block_size), 1.0))

    def required_bytes(self, kv_tokens: np.ndarray | float) -> np.ndarray:
        """Total bytes per GPU for a KV cache of ``kv_tokens`` tokens."""
        return (
            self.weights_bytes
            + self.activation_bytes
            + self.reserved_bytes
            + np.asarray(kv_tokens, dtype=float) * self.kv_bytes_per_token
        )


def whole_blocks(tokens: np.ndarray | float, block_size: np.ndarray | float) -> np.ndarray:
    """KV tokens a sequence of ``tokens`` occupies: the paged cache hands out whole blocks."""
    return np.ceil(np.asarray(tokens, dtype=float) / block_size) * block_size


def prefix_hits(
    prompt: np.ndarray, prefix_sharing: float, block_size: np.ndarray | float
) -> np.ndarray:
    """Prompt tokens served from the prefix cache: the shared fraction in whole blocks, always
    leaving the last prompt token to compute (its logits start the output)."""
    prompt = np.asarray(prompt, dtype=float)
    shared = np.floor(prefix_sharing * prompt / block_size) * block_size
    return np.minimum(shared, np.floor((prompt - 1) / block_size) * block_size)


def kv_tokens_needed(
    batch: np.ndarray | float,
    tokens_per_sequence: np.ndarray | float,
    *,
    block_size: np.ndarray | float,
    max_model_len: np.ndarray | float,
) -> np.ndarray:
    """KV tokens a replica must hold: ``batch`` sequences of ``tokens_per_sequence`` at once,
    and never less than one ``max_model_len`` sequence (the engine's start-up rule)."""
    at_once = np.asarray(batch, dtype=float) * whole_blocks(tokens_per_sequence, block_size)
    return np.maximum(at_once, whole_blocks(max_model_len, block_size))


def weight_bytes_per_gpu(model: ModelSpec, configs: ConfigArrays) -> np.ndarray:
    """Weights on the fullest GPU of a replica (the stage holding the embedding or lm_head):
    each matrix of the model's description split by its shard rule (``architecture.py``)."""
    arch = architecture_of(model)
    tp, pp = configs.tp, configs.pp
    wb = configs.weight_bytes_per_element
    # INT8 W8A8 with outliers stores those input channels a second time in bf16 (the
    # attention and dense-MLP GEMMs; the expert kernels have no such side path).
    outlier = np.where(configs.compute_code == 3, configs.int8_outlier_fraction, 0.0) * _BF16
    precision = {"bf16": _BF16, "quantized": wb, "quantized+outliers": wb + outlier}
    # Elements per GPU summed per (layers, precision) group, once per (tp, ep) pair.
    layouts = Layouts.of(tp, configs.ep)
    groups: dict[tuple[str, str], tuple[Any, Any]] = {}
    for linear in arch.linears:
        if linear.layers == "once":
            continue  # the vocabulary matrices, below
        k, n = per_gpu(linear, layouts.tp, layouts.ep, arch.attention)
        copies = copies_per_gpu(linear, layouts.ep)
        kind = "bf16"
        if linear.quantized:
            kind = "quantized" if linear.layers == "moe" else "quantized+outliers"
        elements, bias = groups.get((linear.layers, kind), (0.0, 0.0))
        bias_elements = copies * n if linear.bias else 0.0
        groups[(linear.layers, kind)] = (elements + copies * k * n, bias + bias_elements)
    total = np.zeros(len(configs))
    for (layers, kind), (elements, bias) in groups.items():
        stage = np.ceil(arch.layer_count(layers) / pp)
        per_stage = layouts.spread(elements) * precision[kind] + layouts.spread(bias) * _BF16
        total = total + stage * per_stage
    norms = np.ceil(arch.layers / pp) * (arch.norms - model.hidden_size) / arch.layers
    norms = (norms + model.hidden_size) * _BF16
    vocab_shard = model.vocab_size / tp * model.hidden_size * _BF16
    # One pipeline stage: the first holds the embedding, the last the lm_head; with pp == 1 the
    # single stage holds both unless they are one tied matrix.
    both = np.where(model.tie_word_embeddings, 1.0, 2.0)
    vocab = np.where(pp > 1, 1.0, both) * vocab_shard
    return total + norms + vocab


def activation_bytes_per_gpu(model: ModelSpec, configs: ConfigArrays) -> np.ndarray:
    """Peak activations of one forward over the token budget (the engine's profiling run)."""
    tp = configs.tp
    tokens = np.ceil(configs.max_num_batched_tokens / configs.cp)
    hidden = model.hidden_size
    arch = architecture_of(model)
    layouts = Layouts.of(tp, configs.ep)
    qkv = layouts.spread(
        sum(
            per_gpu(m, layouts.tp, layouts.ep, arch.attention)[1]
            for m in arch.op_linears(arch.ops[0])
        )
    )
    widest = np.maximum(qkv, 3.0 * model.intermediate_size / tp)
    if model.is_moe:
        routed = 3.0 * model.num_experts_per_tok * model.moe_intermediate_size / tp
        widest = np.maximum(widest, routed + hidden * model.num_experts_per_tok)
    per_token = (3.0 * hidden + widest) * _BF16
    logit_rows = np.minimum(configs.max_num_seqs, tokens)
    logits = logit_rows * model.vocab_size / tp * _LOGIT_BYTES
    chunk = np.minimum(tokens, configs.max_model_len)
    scores = np.where(
        configs.naive_attention,
        model.num_attention_heads / tp * chunk * configs.max_model_len * _BF16,
        0.0,
    )
    return tokens * per_token + logits + scores


def drafter_memory(
    model: ModelSpec,
    hardware: HardwareSpec,
    configs: ConfigArrays,
    *,
    method: str,
    draft_model: ModelSpec | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """(weight bytes, KV bytes per token) per GPU that a speculative drafter adds beside the
    target, out of the same budget, for each configuration ``[N]``.

    Engines run the drafter at the target's tensor parallelism (vLLM 0.33.0:
    ``SpeculativeConfig._verify_and_get_draft_tp`` defaults the draft TP to the target's), so
    both shrink with ``tp``: a ``draft`` model is sized as that model at the same ``tp``; an
    ``eagle`` head (``architecture.eagle3_head``) holds its matrices in bf16 and one layer of
    KV; ``ngram`` lookup holds nothing.
    """
    none = np.zeros(len(configs))
    if method == "draft":
        if draft_model is None:
            raise ValueError("a draft-model drafter needs its model")
        draft = memory_per_gpu(draft_model, hardware, configs)
        return draft.weights_bytes, draft.kv_bytes_per_token
    if method != "eagle":
        return none, none
    arch = architecture_of(model)
    layouts = Layouts.of(configs.tp, configs.ep)
    elements = np.zeros(len(layouts.tp))
    for linear in eagle3_head(model):
        k, n = per_gpu(linear, layouts.tp, layouts.ep, arch.attention)
        elements = elements + k * n
    cache = arch.widths(layouts.tp, layouts.ep).cache  # one layer's cache elements per token
    kv = layouts.spread(cache) * configs.kv_bytes_per_element / configs.cp
    return layouts.spread(elements) * _BF16, kv


def eagle_layers_per_token(
    model: ModelSpec, hardware: HardwareSpec, configs: ConfigArrays
) -> np.ndarray:
    """What one token drafted by an EAGLE-3 head costs, in decoder layers of its target's
    decode step, per configuration ``[N]``: the head's matrices (``drafter_memory``: bf16)
    over what a decode step reads per target layer (the layers' weights at the configuration's
    precision and the lm_head's share; the embedding only has rows gathered). Bytes decide a
    memory-bound draft and FLOPs a compute-bound one, and the ratio is the same for both: a
    bf16 head beside an FP8 target streams twice the bytes a matrix and runs at half the FP8
    rate. At tp 1, for Llama-3.1-8B that is 1.81 layers in bf16 and 3.38 beside FP8 weights
    (the fc is replicated, so the ratio grows with tp)."""
    head, _ = drafter_memory(model, hardware, configs, method="eagle")
    # Every layer on one stage, whatever the pipeline: a ratio per layer, not per stage.
    one_stage = replace(configs, pp=np.ones_like(configs.pp))
    embedding = np.where(model.tie_word_embeddings, 0.0, model.vocab_size / configs.tp)
    read = weight_bytes_per_gpu(model, one_stage) - embedding * model.hidden_size * _BF16
    return head / (read / model.num_hidden_layers)


def memory_per_gpu(
    model: ModelSpec, hardware: HardwareSpec, configs: ConfigArrays
) -> MemoryArrays:
    weights = weight_bytes_per_gpu(model, configs)
    activations = activation_bytes_per_gpu(model, configs)
    multi_gpu = configs.tp * configs.pp * configs.cp > 1
    reserved = (
        RESERVED_CONTEXT_BYTES
        + np.where(configs.cuda_graphs, RESERVED_GRAPH_BYTES, 0.0)
        + np.where(multi_gpu, RESERVED_NCCL_BYTES, 0.0)
    )
    # The engines' memory fraction multiplies what the driver reports, not the datasheet's GB.
    capacity = hardware.memory_reported_bytes * configs.gpu_memory_utilization
    layouts = Layouts.of(configs.tp, configs.ep)
    cache = layouts.spread(architecture_of(model).widths(layouts.tp, layouts.ep).cache)
    stage_layers = np.ceil(model.num_hidden_layers / configs.pp)
    kv_per_token = stage_layers * cache * configs.kv_bytes_per_element / configs.cp
    return MemoryArrays(
        weights_bytes=weights,
        activation_bytes=activations,
        reserved_bytes=reserved,
        capacity_bytes=capacity,
        kv_cache_bytes=capacity - weights - activations - reserved,
        kv_bytes_per_token=kv_per_token,
        block_bytes=kv_per_token * configs.block_size,
    )
