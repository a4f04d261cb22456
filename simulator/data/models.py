"""Model presets and exact parameter counts (a local ``config.json``: ``hf_config.py``).

A Llama-family decoder is fully described by a dozen numbers. Per layer there is attention
(``q_proj`` hidden -> heads x head_dim, ``k_proj`` and ``v_proj`` hidden -> kv_heads x head_dim,
``o_proj`` back to hidden; no biases) and a SwiGLU MLP (gate, up, down: three matrices of
hidden x intermediate), each behind an RMSNorm that owns one vector of ``hidden`` weights. Around
the stack sit the token embedding (vocab x hidden), a final RMSNorm, and the ``lm_head``
(hidden x vocab), which the small Llama 3.2 models share with the embedding.

Llama 4 swaps the MLP of every ``moe_layer_step``-th layer for a mixture of experts: a router
(Linear hidden -> num_experts, no bias), ``num_local_experts`` routed SwiGLU experts of width
``moe_intermediate_size`` of which each token uses the top ``num_experts_per_tok`` (one), and one
shared expert of the same width that every token uses. Scout is MoE in all 48 layers; Maverick
alternates dense and MoE layers (24 of each).

Assumptions, all in the conservative direction for capacity planning:
- Llama 4 chunked local attention layers (three in four) are treated as global attention, so the
  KV cache grows with the whole context in every layer. Real engines keep at most one 8192-token
  chunk in those layers; our estimate of KV memory is therefore an upper bound.
- Mistral's sliding window is likewise treated as global attention.
- Only the text decoder is counted: Llama 4's vision encoder and projector (about 0.9 B
  parameters) are not, because they do not run while generating text.
- Qwen2's q/k/v biases (a few hundred thousand parameters) are not counted.
- "Active per token" counts the whole embedding and ``lm_head``, as the published "17B active"
  figures do, and only the routed top-k experts plus the shared expert of each MoE layer.

Every preset cites the published ``config.json`` it was copied from, and the tests pin the totals
against the counts published for the checkpoints (e.g. 8,030,261,248 for Llama-3.1-8B).
"""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path
from typing import Any

from simulator.data.specs import ModelSpec
from simulator.errors import UnknownModelError
from simulator.units import format_bytes

__all__ = [
    "PRESETS",
    "ParameterCounts",
    "list_models",
    "get_model",
    "preset_name",
    "parameter_counts",
    "describe_model",
]


def _llama3_rope(factor: float, *, high_freq_factor: float = 4.0) -> dict[str, float | str | int]:
    # Llama 3.1+ stretch RoPE from the 8192-token pretraining context ("llama3" scaling):
    # factor 8 for 3.1/3.3, 32 for 3.2, 16 (with flat bands) for Llama 4 Scout.
    return {"factor": factor, "high_freq_factor": high_freq_factor, "low_freq_factor": 1.0,
            "original_max_position_embeddings": 8192, "rope_type": "llama3"}  # fmt: skip


# What every Llama 3.x config.json shares: GQA with 8 KV heads, 128256-token vocabulary, 128k
# context, RoPE theta 500000 with llama3 scaling x8.
_LLAMA3: dict[str, Any] = dict(
    num_key_value_heads=8, head_dim=128, vocab_size=128256, max_position_embeddings=131072,
    rope_theta=500000.0, rope_scaling=_llama3_rope(8.0), rms_norm_eps=1e-5,
)  # fmt: skip

# The text_config of Llama4ForConditionalGeneration, shared by Scout and Maverick. HF's
# ``intermediate_size`` (8192) is the expert width and ``intermediate_size_mlp`` (16384) the dense
# MLP width; ModelSpec names them ``moe_intermediate_size`` and ``intermediate_size``.
_LLAMA4: dict[str, Any] = dict(
    model_type="llama4_text", num_hidden_layers=48, hidden_size=5120, num_attention_heads=40, num_key_value_heads=8,
    head_dim=128, intermediate_size=16384, vocab_size=202048, rope_theta=500000.0,
    rms_norm_eps=1e-5, num_experts_per_tok=1, num_shared_experts=1, moe_intermediate_size=8192,
)  # fmt: skip


def _preset(name: str, repo: str, base: dict[str, Any], **fields: Any) -> ModelSpec:
    """A preset copied from ``repo``'s published config.json (``org/name``; meta-llama when
    the organization is left out)."""
    repo = repo if "/" in repo else f"meta-llama/{repo}"
    source = f"https://huggingface.co/{repo}/blob/main/config.json"
    return ModelSpec(**{**base, **fields, "name": name, "source": source})


# Other families of the Llama lineage, each from its published config.json: Qwen2.5 (biases on
# q, k, v), Qwen3 (QK-norm), Mixtral (eight experts, top two, in every layer) and DeepSeek-V3
# (multi-head latent attention; 256 routed experts, top eight, and one shared expert in all
# but the first three layers). Their parameter counts are pinned against the published totals.
_QWEN: dict[str, Any] = dict(rope_theta=1000000.0, rms_norm_eps=1e-6, head_dim=128)
_OTHERS: dict[str, dict[str, Any]] = {
    "qwen2.5-7b": dict(_QWEN, model_type="qwen2", num_hidden_layers=28, hidden_size=3584,
                       num_attention_heads=28, num_key_value_heads=4, intermediate_size=18944,
                       vocab_size=152064, max_position_embeddings=131072, attention_bias=True),
    "qwen3-8b": dict(_QWEN, model_type="qwen3", num_hidden_layers=36, hidden_size=4096,
                     num_attention_heads=32, num_key_value_heads=8, intermediate_size=12288,
                     vocab_size=151936, max_position_embeddings=40960),
    "mixtral-8x7b": dict(model_type="mixtral", num_hidden_layers=32, hidden_size=4096,
                         num_attention_heads=32, num_key_value_heads=8, head_dim=128,
                         intermediate_size=14336, moe_intermediate_size=14336, vocab_size=32000,
                         max_position_embeddings=32768, rope_theta=1000000.0,
                         num_local_experts=8, num_experts_per_tok=2, moe_layer_step=1),
    "deepseek-v3": dict(model_type="deepseek_v3", num_hidden_layers=61, hidden_size=7168,
                        num_attention_heads=128, num_key_value_heads=128, head_dim=192,
                        intermediate_size=18432, moe_intermediate_size=2048, vocab_size=129280,
                        max_position_embeddings=163840, rope_theta=10000.0, rms_norm_eps=1e-6,
                        rope_scaling={"type": "yarn", "factor": 40.0, "beta_fast": 32,
                                      "beta_slow": 1, "mscale": 1.0, "mscale_all_dim": 1.0,
                                      "original_max_position_embeddings": 4096},
                        num_local_experts=256, num_experts_per_tok=8, num_shared_experts=1,
                        first_k_dense_replace=3, moe_layer_step=1, q_lora_rank=1536,
                        kv_lora_rank=512, qk_rope_head_dim=64, qk_nope_head_dim=128,
                        v_head_dim=128),
}  # fmt: skip
_REPOS = {"qwen2.5-7b": "Qwen/Qwen2.5-7B", "qwen3-8b": "Qwen/Qwen3-8B",
          "mixtral-8x7b": "mistralai/Mixtral-8x7B-v0.1", "deepseek-v3": "deepseek-ai/DeepSeek-V3"}  # fmt: skip


PRESETS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        _preset("llama-3.2-1b", "Llama-3.2-1B", _LLAMA3, num_hidden_layers=16, hidden_size=2048,
                num_attention_heads=32, head_dim=64, intermediate_size=8192,
                tie_word_embeddings=True, rope_scaling=_llama3_rope(32.0)),
        _preset("llama-3.2-3b", "Llama-3.2-3B", _LLAMA3, num_hidden_layers=28, hidden_size=3072,
                num_attention_heads=24, intermediate_size=8192,
                tie_word_embeddings=True, rope_scaling=_llama3_rope(32.0)),
        _preset("llama-3.1-8b", "Llama-3.1-8B", _LLAMA3, num_hidden_layers=32, hidden_size=4096,
                num_attention_heads=32, intermediate_size=14336),
        _preset("llama-3.1-70b", "Llama-3.1-70B", _LLAMA3, num_hidden_layers=80,
                hidden_size=8192, num_attention_heads=64, intermediate_size=28672),
        # 3.3 was published as an instruct model only; its architecture is 3.1-70B's.
        _preset("llama-3.3-70b", "Llama-3.3-70B-Instruct", _LLAMA3, num_hidden_layers=80,
                hidden_size=8192, num_attention_heads=64, intermediate_size=28672),
        _preset("llama-3.1-405b", "Llama-3.1-405B", _LLAMA3, num_hidden_layers=126,
                hidden_size=16384, num_attention_heads=128, intermediate_size=53248),
        _preset("llama-4-scout-17b-16e", "Llama-4-Scout-17B-16E", _LLAMA4,
                num_local_experts=16, moe_layer_step=1, max_position_embeddings=10485760,
                rope_scaling=_llama3_rope(16.0, high_freq_factor=1.0)),
        _preset("llama-4-maverick-17b-128e", "Llama-4-Maverick-17B-128E", _LLAMA4,
                num_local_experts=128, moe_layer_step=2, max_position_embeddings=1048576,
                rope_scaling=None),
        *(_preset(name, _REPOS[name], fields) for name, fields in _OTHERS.items()),
    )
}  # fmt: skip


def list_models() -> list[str]:
    """Preset names, smallest first (the order of ``PRESETS``)."""
    return list(PRESETS)


def _normalize(name: str) -> str:
    """'meta-llama/Meta-Llama-3.1-8B-Instruct' -> 'llama-3.1-8b'. Instruct and base checkpoints
    share one architecture, so the suffix does not change the spec."""
    key = name.strip().lower().rsplit("/", 1)[-1]
    if key.startswith("meta-llama-"):  # the first 3.1 uploads were named Meta-Llama-3.1-...
        key = key[len("meta-") :]
    return re.sub(r"(-instruct|-hf)+$", "", key)


def preset_name(name: str) -> str | None:
    """The preset a name or Hugging Face id stands for, or None (a path, or unknown)."""
    key = _normalize(str(name))
    return key if key in PRESETS else None


def get_model(name_or_path: str) -> ModelSpec:
    """A preset by name or Hugging Face id, or a local config.json (file or its directory)."""
    key = _normalize(name_or_path)
    if key in PRESETS:
        return PRESETS[key]
    if not str(name_or_path).strip():  # "" is a path to the working directory, not a model
        raise UnknownModelError(f"no model named: give a preset ({', '.join(PRESETS)}) or a path")
    if Path(name_or_path).expanduser().exists():
        from .hf_config import from_hf_config

        return from_hf_config(name_or_path)
    import difflib  # only for a name not found: not at start-up

    close = difflib.get_close_matches(key, list(PRESETS), n=2, cutoff=0.6)
    hint = f" (did you mean {' or '.join(close)}?)" if close else ""
    raise UnknownModelError(
        f"unknown model '{name_or_path}'; known: {', '.join(PRESETS)}{hint}; "
        "a path to a config.json (or its directory) works too"
    )


@dataclasses.dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts (elements, not bytes) of the text decoder.

    Per-layer entries are for one layer of that kind: ``dense_mlp_per_layer`` applies to the
    ``num_dense_layers`` layers, ``router_per_layer``, ``expert_each`` (one routed expert) and
    ``shared_experts_per_moe_layer`` to the ``num_moe_layers`` layers. ``norms`` is every RMSNorm
    weight in the model (two per layer plus the final one).
    """

    embedding: int
    attention_per_layer: int
    dense_mlp_per_layer: int
    router_per_layer: int
    expert_each: int
    shared_experts_per_moe_layer: int
    norms: int
    lm_head: int
    total: int
    active_per_token: int


def parameter_counts(model: ModelSpec) -> ParameterCounts:
    """Exact parameter counts of the text decoder, from its family's description."""
    from simulator.data.architecture import architecture_of

    arch = architecture_of(model)
    embedding = arch.parameters("embedding")
    attention = arch.parameters("attention")
    dense_mlp = arch.parameters("mlp")
    router = arch.parameters("router")
    expert = arch.parameters("experts") // max(model.num_local_experts, 1)
    shared = arch.parameters("shared")
    lm_head = arch.parameters("lm_head")
    common = (
        embedding
        + lm_head
        + arch.norms
        + arch.layers * attention
        + arch.dense_layers * dense_mlp
        + arch.moe_layers * (router + shared)
    )
    return ParameterCounts(
        embedding=embedding,
        attention_per_layer=attention,
        dense_mlp_per_layer=dense_mlp,
        router_per_layer=router,
        expert_each=expert,
        shared_experts_per_moe_layer=shared,
        norms=arch.norms,
        lm_head=lm_head,
        total=common + arch.moe_layers * model.num_local_experts * expert,
        active_per_token=common + arch.moe_layers * model.num_experts_per_tok * expert,
    )


def _kv_bytes_per_token_bf16(model: ModelSpec) -> int:
    """Every layer's cache entry of one token at 2 bytes (K and V of every KV head, or the
    latent), on one GPU holding the whole model."""
    from simulator.data.architecture import architecture_of

    return int(model.num_hidden_layers * float(architecture_of(model).widths(1).cache) * 2)


def describe_model(model: ModelSpec) -> list[tuple[str, str]]:
    """(label, value) rows for ``tune models show``."""
    counts = parameter_counts(model)
    rope = f"theta {model.rope_theta:g}"
    if model.rope_scaling:
        kind = model.rope_scaling.get("rope_type", model.rope_scaling.get("type", "scaled"))
        rope += f", {kind} x{model.rope_scaling.get('factor', 1):g}"
    kv = _kv_bytes_per_token_bf16(model)
    rows = [
        ("name", model.name),
        ("layers", str(model.num_hidden_layers)),
        ("hidden size", str(model.hidden_size)),
        ("attention heads", f"{model.num_attention_heads} query, {model.num_key_value_heads} KV"),
        ("head dim", str(model.head_dim)),
    ]
    if model.latent_attention:
        rows[-2:] = [
            ("attention", f"{model.num_attention_heads} heads over one cached latent of "
                          f"{model.kv_lora_rank} + {model.qk_rope_head_dim} (rotated) per token"),
            ("head dim", f"keys {model.qk_nope_head_dim} + {model.qk_rope_head_dim}, values "
                         f"{model.v_head_dim}; queries through rank {model.q_lora_rank}"),
        ]  # fmt: skip
    rows += [("dense MLP width", str(model.intermediate_size))]
    if model.is_moe:
        rows += [
            ("MoE layers", f"{model.num_moe_layers} of {model.num_hidden_layers}"),
            ("experts", f"{model.num_local_experts} routed (top {model.num_experts_per_tok})"
                        f" + {model.num_shared_experts} shared"),
            ("expert width", str(model.moe_intermediate_size)),
        ]  # fmt: skip
    tied = " (lm_head tied to the embedding)" if model.tie_word_embeddings else ""
    rows += [
        ("vocabulary", f"{model.vocab_size}{tied}"),
        ("max context", f"{model.max_position_embeddings} tokens"),
        ("RoPE", rope),
        ("parameters", f"{counts.total / 1e9:.2f} B ({counts.total:,})"),
        ("active per token", f"{counts.active_per_token / 1e9:.2f} B"),
        ("KV cache per token (bf16)", f"{kv:,} B ({format_bytes(kv)})"),
        ("source", model.source),
    ]
    return rows
