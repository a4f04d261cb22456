"""A decoder family as data: its matrices, how parallelism splits each, its attention and KV.

Every count the cost model makes of a model follows from one ``Architecture``:

- parameter counts (``models.parameter_counts``), summed over the matrices;
- weight bytes per GPU (``memory.py``), each matrix split by its shard rule;
- the GEMM rows of the op table (``ops.py``), one per ``op`` the matrices run in;
- which tensor- and expert-parallel degrees are valid (``configs.py``);
- the per-GPU widths that attention, the KV cache and the collectives read (``widths``);
- the executor's byte and FLOP accounting (``executor/engine.step_cost``).

A family is a function from a ``ModelSpec`` to its ``Architecture`` (``FAMILIES``, keyed by the
Hugging Face ``model_type``); a new family is a new description, not edits across the cost
model.

**Shards** say how a matrix of ``inputs x outputs`` (K x N) splits over ``tp`` GPUs and ``ep``
expert groups:

- ``column``: N / tp per GPU (query heads, MLP gate and up);
- ``row``: K / tp per GPU (the attention output, MLP down);
- ``kv_column``: N / tp per GPU, but never less than one KV head: heads replicate when tp
  exceeds them (key and value projections);
- ``replicated``: the whole matrix on every GPU (the MoE router, MLA's compressed projections);
- ``vocab``: N / tp per GPU, kept in bf16 (the lm_head; the embedding, a gather);
- ``experts``: ``copies`` routed experts, E / ep of them per GPU each split tp / ep ways, so
  E x K x N / tp per GPU.

**Layers**: ``all`` (every layer), ``dense`` (layers with a dense MLP), ``moe`` (layers with a
mixture of experts) or ``once`` (outside the stack).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from .specs import ModelSpec

__all__ = [
    "Linear",
    "Attention",
    "Architecture",
    "Widths",
    "Layouts",
    "architecture_of",
    "per_gpu",
    "copies_per_gpu",
    "FAMILIES",
    "EAGLE3_DRAFT_VOCAB",
    "eagle3_head",
    "SHARDS",
]

SHARDS = ("column", "row", "kv_column", "replicated", "vocab", "experts")
LAYERS = ("all", "dense", "moe", "once")
BLOCKS = ("attention", "mlp", "router", "experts", "shared", "embedding", "lm_head")
_BF16 = 2.0


@dataclass(frozen=True)
class Linear:
    """One weight matrix (``inputs`` x ``outputs`` elements), where it sits and how it splits.

    ``op`` names the op-table GEMM it runs in (q, k and v run as one ``qkv_proj``); an empty
    ``op`` is not a GEMM (the embedding is a gather). ``quantized=False`` keeps it in bf16
    (engines do not quantize the router, embedding or lm_head). ``bias`` adds ``outputs``."""

    name: str
    op: str
    inputs: int
    outputs: int
    shard: str
    layers: str
    block: str  # attention | mlp | router | experts | shared | embedding | lm_head
    quantized: bool = True
    copies: int = 1
    bias: bool = False

    def __post_init__(self) -> None:
        assert self.shard in SHARDS and self.layers in LAYERS, (self.shard, self.layers)
        assert self.block in BLOCKS, self.block

    @property
    def parameters(self) -> int:
        """Elements of one copy set in one layer, biases included."""
        return self.copies * (self.inputs * self.outputs + (self.outputs if self.bias else 0))


@dataclass(frozen=True)
class Attention:
    """What attention computes and keeps, per layer.

    Grouped-query attention: ``heads`` query heads of ``qk_dim`` (= ``v_dim`` = head_dim),
    ``kv_heads`` key/value heads, all cached. Multi-head latent attention (DeepSeek-V3): the
    cache holds one compressed latent of ``latent_dim`` elements per token (``kv_heads = 0``:
    not split over tp, every GPU keeps it whole); a prefill runs per-head keys of ``qk_dim``
    and values of ``v_dim``, a decode attends in the latent space (weights absorbed), so its
    query-key product is ``latent_dim`` long and its values ``latent_dim - rope_dim``."""

    heads: int
    kv_heads: int
    qk_dim: int
    v_dim: int
    rope_dim: int  # per head and token, the dimensions RoPE rotates
    latent_dim: int = 0
    norms_per_layer: int = 0  # RMSNorm weights inside attention (QK-norm, MLA's latent norms)

    @property
    def latent(self) -> bool:
        return self.kv_heads == 0


@dataclass(frozen=True)
class Architecture:
    """A model's matrices, attention and layer counts (see the module docstring)."""

    model: ModelSpec
    linears: tuple[Linear, ...]
    attention: Attention
    norms_per_layer: int  # RMSNorm weights around attention and the MLP, per layer
    dense_layers: int
    moe_layers: int
    ops: tuple[str, ...] = field(default=())  # GEMM ops in execution order

    @property
    def layers(self) -> int:
        return self.model.num_hidden_layers

    def layer_count(self, where: str) -> int:
        return {"all": self.layers, "dense": self.dense_layers, "moe": self.moe_layers,
                "once": 1}[where]  # fmt: skip

    def op_linears(self, op: str) -> list[Linear]:
        return [m for m in self.linears if m.op == op]

    def widths(self, tp, ep=1) -> Widths:
        return Widths.of(self, np.asarray(tp, dtype=float), np.asarray(ep, dtype=float))

    def parameters(self, block: str) -> int:
        """Elements of ``block``'s matrices in one layer that has it (``embedding`` and
        ``lm_head``: the whole matrix; a tied lm_head has none of its own)."""
        if block == "lm_head" and self.model.tie_word_embeddings:
            return 0
        return sum(m.parameters for m in self.linears if m.block == block)

    @property
    def norms(self) -> int:
        """Every RMSNorm weight: around attention and the MLP, inside attention, the final."""
        per_layer = self.norms_per_layer + self.attention.norms_per_layer
        return self.layers * per_layer + self.model.hidden_size

    def invalid_code(self, tp: np.ndarray, ep: np.ndarray) -> np.ndarray:
        """0 where tp / ep can split every matrix (``configs.INVALID_REASONS`` otherwise)."""
        a, code = self.attention, np.zeros(np.shape(tp), dtype=int)

        def flag(condition: np.ndarray, value: int) -> None:
            code[(code == 0) & condition] = value

        flag(a.heads % tp != 0, 1)
        if not a.latent:
            flag((a.kv_heads % tp != 0) & (tp % a.kv_heads != 0), 2)
        for m in self.linears:
            if m.shard in ("column", "row") and m.block in ("mlp", "shared"):
                width = m.outputs if m.shard == "column" else m.inputs
                flag(width % tp != 0, 3)
        if self.moe_layers:
            experts = self.model.num_local_experts
            flag((experts % ep != 0) | (ep > tp) | (tp % ep != 0), 4)
        else:
            flag(ep > 1, 7)
        return code


@dataclass(frozen=True)
class Widths:
    """Per-GPU sizes of one configuration or many (arrays broadcast over them)."""

    heads: np.ndarray  # query heads per GPU
    kv_heads: np.ndarray  # KV heads per GPU (replicated past tp > kv heads); 0 for a latent
    q_width: np.ndarray  # query elements per token per GPU (heads x qk_dim)
    attention_io: np.ndarray  # query + output elements per token per GPU
    decode_io: np.ndarray  # the same for a decode (latent attention: in the latent space)
    cache: np.ndarray  # KV-cache elements per token per layer per GPU
    rope: np.ndarray  # elements RoPE rotates per token per GPU
    normed: np.ndarray  # elements normalized inside attention per token per GPU (QK-norm)
    prefill_pair_flops: np.ndarray  # per query-key pair and layer, causal prefill
    decode_pair_flops: np.ndarray  # per query-key pair and layer, decode
    ffn: np.ndarray  # dense MLP width per GPU
    expert_ffn: np.ndarray  # one routed expert's width per GPU (split tp / ep ways)

    @classmethod
    def of(cls, arch: Architecture, tp: np.ndarray, ep: np.ndarray) -> Widths:
        a, model = arch.attention, arch.model
        heads = a.heads / tp
        if a.latent:
            kv_heads = np.zeros_like(tp)
            cache = np.full(np.shape(tp), float(a.latent_dim))
            rope = heads * a.rope_dim + a.rope_dim
            decode_qk, decode_v = a.latent_dim, a.latent_dim - a.rope_dim
        else:
            kv_heads = np.maximum(a.kv_heads / tp, 1.0)
            cache = 2.0 * kv_heads * a.qk_dim
            rope = (heads + kv_heads) * a.rope_dim
            decode_qk, decode_v = a.qk_dim, a.v_dim
        normed = np.zeros_like(tp)
        if a.norms_per_layer:  # QK-norm: every query and key head; MLA: the two latents
            normed = (heads + kv_heads) * a.qk_dim if not a.latent else normed + a.norms_per_layer
        return cls(
            heads=heads,
            kv_heads=kv_heads,
            q_width=heads * a.qk_dim,
            attention_io=heads * (a.qk_dim + a.v_dim),
            decode_io=heads * (decode_qk + decode_v),
            cache=cache,
            rope=rope,
            normed=normed,
            prefill_pair_flops=2.0 * heads * (a.qk_dim + a.v_dim),
            decode_pair_flops=2.0 * heads * (decode_qk + decode_v),
            ffn=model.intermediate_size / tp,
            expert_ffn=model.moe_intermediate_size * ep / tp,
        )


@dataclass(frozen=True)
class Layouts:
    """The distinct (tp, ep) pairs among many configurations.

    Every per-GPU size of a matrix or a width depends on the pair alone, and a grid of 10^5
    configurations has a handful of pairs: work a size out once per pair (``tp``, ``ep``: arrays
    ``[L]``), then ``spread`` it to the configurations (``index``: ``[N]``, each one's pair).
    """

    tp: np.ndarray
    ep: np.ndarray
    index: np.ndarray

    @classmethod
    def of(cls, tp, ep) -> Layouts:
        tp_n = np.asarray(tp).astype(np.int64)
        ep_n = np.broadcast_to(np.asarray(ep).astype(np.int64), tp_n.shape)
        span = int(ep_n.max(initial=1)) + 1
        key = tp_n * span + ep_n
        # Small integer keys: a presence table finds the distinct ones in O(N), no sort.
        present = np.zeros(int(key.max(initial=0)) + 1, dtype=bool)
        present[key] = True
        distinct = np.flatnonzero(present)
        slot = np.zeros(present.size, dtype=np.int64)
        slot[distinct] = np.arange(distinct.size)
        return cls(
            tp=(distinct // span).astype(float),
            ep=(distinct % span).astype(float),
            index=slot[key],
        )

    def spread(self, values) -> np.ndarray:
        """Per-pair ``values`` ``[L]`` (or a scalar) as per-configuration values ``[N]``."""
        values = np.asarray(values, dtype=float)
        return values[self.index] if values.ndim else np.full(self.index.shape, float(values))


def copies_per_gpu(linear: Linear, ep) -> np.ndarray | int:
    """Copies of ``linear`` one GPU holds: routed experts spread over the ep groups."""
    return linear.copies / np.asarray(ep, dtype=float) if linear.shard == "experts" else 1


def per_gpu(linear: Linear, tp, ep, attention: Attention) -> tuple[np.ndarray, np.ndarray]:
    """(K, N) of ``linear`` on one GPU; for routed experts, of one expert's share."""
    tp = np.asarray(tp, dtype=float)
    k, n = float(linear.inputs), float(linear.outputs)
    ones = np.ones_like(tp)
    if linear.shard in ("column", "vocab"):
        return k * ones, n / tp
    if linear.shard == "row":
        return k / tp, n * ones
    if linear.shard == "kv_column":
        kv_heads = attention.kv_heads
        return k * ones, n * np.maximum(kv_heads / tp, 1.0) / kv_heads
    if linear.shard == "experts":
        share = np.asarray(ep, dtype=float) / tp  # each expert split tp / ep ways
        if linear.op.endswith("down"):
            return k * share, n * ones
        return k * ones, n * share
    return k * ones, n * ones  # replicated


# --- the families ----------------------------------------------------------------------------


def _gqa(model: ModelSpec, *, bias: bool = False, qk_norm: bool = False) -> tuple[list, Attention]:
    """Grouped-query attention: q, k, v (fused), o; optional q/k/v biases and QK-norm."""
    h, d = model.hidden_size, model.head_dim
    q, kv = model.num_attention_heads * d, model.num_key_value_heads * d
    linears = [
        Linear("q_proj", "qkv_proj", h, q, "column", "all", "attention", bias=bias),
        Linear("k_proj", "qkv_proj", h, kv, "kv_column", "all", "attention", bias=bias),
        Linear("v_proj", "qkv_proj", h, kv, "kv_column", "all", "attention", bias=bias),
        Linear("o_proj", "o_proj", q, h, "row", "all", "attention"),
    ]
    attention = Attention(
        heads=model.num_attention_heads,
        kv_heads=model.num_key_value_heads,
        qk_dim=d,
        v_dim=d,
        rope_dim=d,
        norms_per_layer=2 * d if qk_norm else 0,
    )
    return linears, attention


def _swiglu(model: ModelSpec, width: int, where: str, prefix: str = "") -> list[Linear]:
    """A SwiGLU MLP: gate and up (fused), down."""
    h = model.hidden_size
    return [
        Linear(f"{prefix}gate_proj", f"{prefix}gate_up_proj", h, width, "column", where, "mlp"),
        Linear(f"{prefix}up_proj", f"{prefix}gate_up_proj", h, width, "column", where, "mlp"),
        Linear(f"{prefix}down_proj", f"{prefix}down_proj", width, h, "row", where, "mlp"),
    ]


def _moe(model: ModelSpec) -> list[Linear]:
    """A router, ``num_local_experts`` routed SwiGLU experts, and the shared experts (run as one
    fused GEMM of gate, up and down)."""
    h, e, width = model.hidden_size, model.num_local_experts, model.moe_intermediate_size
    linears = [
        Linear("router", "router", h, e, "replicated", "moe", "router", quantized=False),
        Linear(
            "experts.gate_proj", "experts_gate_up", h, width, "experts", "moe", "experts", copies=e
        ),
        Linear(
            "experts.up_proj", "experts_gate_up", h, width, "experts", "moe", "experts", copies=e
        ),
        Linear(
            "experts.down_proj", "experts_down", width, h, "experts", "moe", "experts", copies=e
        ),
    ]
    if model.num_shared_experts:
        shared = model.num_shared_experts * width
        linears += [
            Linear(
                "shared_expert.gate_proj", "shared_expert", h, shared, "column", "moe", "shared"
            ),
            Linear("shared_expert.up_proj", "shared_expert", h, shared, "column", "moe", "shared"),
            # Counted as a column of the fused GEMM: the same FLOPs and bytes as its down.
            Linear(
                "shared_expert.down_proj", "shared_expert", h, shared, "column", "moe", "shared"
            ),
        ]
    return linears


def _vocab(model: ModelSpec) -> list[Linear]:
    h, v = model.hidden_size, model.vocab_size
    # The lm_head runs even when it is the embedding's matrix (tied): it is a GEMM either way.
    return [
        Linear("embed_tokens", "", v, h, "vocab", "once", "embedding", quantized=False),
        Linear("lm_head", "lm_head", h, v, "vocab", "once", "lm_head", quantized=False),
    ]


def _stack(model: ModelSpec, attention_linears: list, attention: Attention) -> Architecture:
    moe = model.num_moe_layers
    linears = attention_linears + _swiglu(model, model.intermediate_size, "dense")
    if moe:
        linears += _moe(model)
    linears += _vocab(model)
    ops = tuple(dict.fromkeys(m.op for m in linears if m.op))
    return Architecture(
        model=model,
        linears=tuple(linears),
        attention=attention,
        norms_per_layer=2 * model.hidden_size,
        dense_layers=model.num_hidden_layers - moe,
        moe_layers=moe,
        ops=ops,
    )


def _llama(model: ModelSpec) -> Architecture:
    """Llama 3 (dense), Llama 4 (MoE layers every ``moe_layer_step``), Mistral and Mixtral
    (every layer MoE, no shared expert): GQA and SwiGLU, no biases."""
    return _stack(model, *_gqa(model))


def _qwen2(model: ModelSpec) -> Architecture:
    """Qwen2 / Qwen2.5: Llama's block with biases on q, k and v."""
    return _stack(model, *_gqa(model, bias=model.attention_bias))


def _qwen3(model: ModelSpec) -> Architecture:
    """Qwen3 (dense): Llama's block with an RMSNorm over every query and key head (QK-norm)."""
    return _stack(model, *_gqa(model, bias=model.attention_bias, qk_norm=True))


def _mla(model: ModelSpec) -> tuple[list, Attention]:
    """DeepSeek-V3's multi-head latent attention. Queries go through a low-rank bottleneck
    (``q_a`` to ``q_lora_rank``, normalized, ``q_b`` up to every head's key dims); keys and
    values share one compressed latent of ``kv_lora_rank`` plus ``qk_rope_head_dim`` rotated
    dims (``kv_a``, the only thing cached), which ``kv_b`` expands to every head's keys and
    values. The two down projections are small and kept whole on every GPU; the up projections
    split by heads, as vLLM and SGLang shard them."""
    h, heads = model.hidden_size, model.num_attention_heads
    nope, rope, v = model.qk_nope_head_dim, model.qk_rope_head_dim, model.v_head_dim
    q_rank, kv_rank = model.q_lora_rank, model.kv_lora_rank
    linears = [
        Linear("q_a_proj", "qkv_a_proj", h, q_rank, "replicated", "all", "attention"),
        Linear("kv_a_proj_with_mqa", "qkv_a_proj", h, kv_rank + rope, "replicated", "all",
               "attention"),
        Linear("q_b_proj", "q_b_proj", q_rank, heads * (nope + rope), "column", "all",
               "attention"),
        Linear("kv_b_proj", "kv_b_proj", kv_rank, heads * (nope + v), "column", "all",
               "attention"),
        Linear("o_proj", "o_proj", heads * v, h, "row", "all", "attention"),
    ]  # fmt: skip
    attention = Attention(
        heads=heads,
        kv_heads=0,
        qk_dim=nope + rope,
        v_dim=v,
        rope_dim=rope,
        latent_dim=kv_rank + rope,
        norms_per_layer=q_rank + kv_rank,
    )
    return linears, attention


def _deepseek_v3(model: ModelSpec) -> Architecture:
    """DeepSeek-V3: latent attention; dense SwiGLU in the first ``first_k_dense_replace``
    layers, then 256 routed experts (top 8) and one shared expert in every layer. (The
    multi-token-prediction module of the checkpoint is not counted: it serves only as an
    optional speculative drafter.)"""
    return _stack(model, *_mla(model))


FAMILIES: dict[str, Callable[[ModelSpec], Architecture]] = {
    "llama": _llama,
    "llama4_text": _llama,
    "mistral": _llama,
    "mixtral": _llama,
    "qwen2": _qwen2,
    "qwen3": _qwen3,
    "deepseek_v3": _deepseek_v3,
}


# EAGLE-3's draft head predicts over a reduced vocabulary: 32,000 tokens in the published
# Llama 3.x heads (config.json ``draft_vocab_size`` of yuhuili/EAGLE3-LLaMA3.1-Instruct-8B).
EAGLE3_DRAFT_VOCAB = 32_000


def eagle3_head(model: ModelSpec) -> list[Linear]:
    """The matrices of an EAGLE-3 draft head for ``model`` (Li et al. 2025, arXiv:2503.01840;
    as vLLM 0.33.0 builds it in ``model_executor/models/llama_eagle3.py``): ``fc`` fuses three
    of the target's hidden states (3h -> h, a ``ReplicatedLinear``), one decoder layer whose
    q/k/v read the token embedding and that state side by side (2h wide), and an ``lm_head``
    over the draft vocabulary. The head shares the target's embedding (vLLM's
    ``_maybe_share_embeddings``) and runs in bf16 at the target's tensor parallelism."""
    h, d = model.hidden_size, model.head_dim
    q, kv = model.num_attention_heads * d, model.num_key_value_heads * d

    def head(name: str, op: str, k: int, n: int, shard: str, block: str) -> Linear:
        return Linear(name, op, k, n, shard, "once", block, quantized=False)

    return [
        head("fc", "fc", 3 * h, h, "replicated", "attention"),
        head("q_proj", "qkv_proj", 2 * h, q, "column", "attention"),
        head("k_proj", "qkv_proj", 2 * h, kv, "kv_column", "attention"),
        head("v_proj", "qkv_proj", 2 * h, kv, "kv_column", "attention"),
        head("o_proj", "o_proj", q, h, "row", "attention"),
        *[replace(m, quantized=False) for m in _swiglu(model, model.intermediate_size, "once")],
        head("lm_head", "lm_head", h, EAGLE3_DRAFT_VOCAB, "vocab", "lm_head"),
    ]


def architecture_of(model: ModelSpec) -> Architecture:
    """The description of ``model``'s family (``model.model_type``)."""
    return FAMILIES[model.model_type](model)
