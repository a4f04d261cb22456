"""A model from a Hugging Face ``config.json`` on disk, and back.

``from_hf_config`` reads the families rooftune describes (``architecture.FAMILIES``): the dense
Llama, Mistral and Qwen layouts, Llama 4 with its decoder under ``text_config``, Mixtral's and
DeepSeek-V3's expert keys; anything else is refused in one line naming what is accepted.
``to_hf_config`` writes the file that reads back as the same ``ModelSpec``. No network: the
file is local, or the model is a preset (``models.py``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from simulator.data.specs import ModelSpec
from simulator.errors import ConfigError, UnknownModelError, one_line

__all__ = ["from_hf_config", "to_hf_config"]

# model_type values of the families rooftune describes (``architecture.FAMILIES``).
_DENSE_TYPES = ("llama", "mistral", "qwen2", "qwen3")
_ACCEPTED = "llama, mistral, qwen2, llama4, qwen3, mixtral, deepseek_v3"
_CLASSES = {"llama": "LlamaForCausalLM", "mistral": "MistralForCausalLM",
            "qwen2": "Qwen2ForCausalLM", "qwen3": "Qwen3ForCausalLM",
            "mixtral": "MixtralForCausalLM", "deepseek_v3": "DeepseekV3ForCausalLM"}  # fmt: skip


def _require(cfg: dict[str, Any], key: str, file: Path) -> Any:
    if cfg.get(key) is None:
        raise ConfigError(f"{file}: missing required key '{key}'")
    return cfg[key]


def _rope(cfg: dict[str, Any]) -> tuple[float, dict[str, float | str | int] | None]:
    """(rope_theta, rope_scaling). Newer files fold both into ``rope_parameters``. Missing theta
    falls back to 10000, the default of the HF Llama/Mistral/Qwen2 config classes."""
    params = cfg.get("rope_parameters") or {}
    scaling = cfg.get("rope_scaling") or params
    theta = cfg.get("rope_theta") or params.get("rope_theta") or 10000.0
    # Keep scalar entries only: the spec stores a flat mapping, and list-valued extras
    # (per-dimension factors of other families) do not change the cost of a step.
    kept = {
        k: v
        for k, v in scaling.items()
        if k != "rope_theta" and isinstance(v, (str, int, float)) and not isinstance(v, bool)
    }
    if kept.get("rope_type", kept.get("type")) in (None, "default") and "factor" not in kept:
        return float(theta), None
    return float(theta), kept


def from_hf_config(path: str | os.PathLike[str], *, name: str | None = None) -> ModelSpec:
    """Read a Hugging Face ``config.json`` (or the directory holding one) without network access.

    ``name`` defaults to the directory name for a ``config.json``, else the file's stem. Accepted
    ``model_type``: llama, mistral, qwen2, llama4 (its ``text_config``) and llama4_text.
    """
    file = Path(path).expanduser()
    if file.is_dir():
        file = file / "config.json"
    try:
        raw = json.loads(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise UnknownModelError(f"no config.json at '{file}'") from None
    except OSError as err:
        raise ConfigError(f"cannot read {file}: {err.strerror}") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{file} is not valid JSON: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{file} is not a JSON object")
    cfg: dict[str, Any] = raw
    model_type = _require(cfg, "model_type", file)
    if model_type == "llama4":
        text = _require(cfg, "text_config", file)
        if not isinstance(text, dict):
            raise ConfigError(f"{file}: 'text_config' is not a JSON object")
        # The dtype is often recorded only at the top level of the multimodal file.
        cfg = {"torch_dtype": raw.get("torch_dtype"), **text, "model_type": "llama4_text"}
        model_type = "llama4_text"
    if model_type not in (*_DENSE_TYPES, "llama4_text", "mixtral", "deepseek_v3"):
        raise ConfigError(
            f"{file} is a {model_type} model; rooftune models Llama-architecture decoders "
            f"({_ACCEPTED})"
        )

    hidden = _require(cfg, "hidden_size", file)
    heads = _require(cfg, "num_attention_heads", file)
    if not cfg.get("head_dim") and isinstance(hidden, int) and isinstance(heads, int):
        if heads > 0 and hidden % heads:
            # HF derives head_dim = hidden_size // num_attention_heads: a remainder means a
            # config the model would not build (7 heads of 256 gave 36, 4 dimensions lost).
            raise ConfigError(
                f"{file}: hidden_size {hidden} is not a multiple of num_attention_heads "
                f"{heads}, and no head_dim is given"
            )
    theta, scaling = _rope(cfg)
    fields: dict[str, Any] = {
        "name": name or (file.parent.name if file.name == "config.json" else file.stem),
        "model_type": model_type,
        "num_hidden_layers": _require(cfg, "num_hidden_layers", file),
        "hidden_size": hidden,
        "num_attention_heads": heads,
        "num_key_value_heads": cfg.get("num_key_value_heads") or heads,
        "head_dim": cfg.get("head_dim") or hidden // heads,
        "vocab_size": _require(cfg, "vocab_size", file),
        "tie_word_embeddings": bool(cfg.get("tie_word_embeddings", False)),
        "rope_theta": theta,
        "rope_scaling": scaling,
        "rms_norm_eps": cfg.get("rms_norm_eps") or 1e-6,  # HF LlamaConfig's default
        "torch_dtype": cfg.get("torch_dtype") or cfg.get("dtype") or "bfloat16",
        "source": str(file),
    }
    if cfg.get("max_position_embeddings"):
        fields["max_position_embeddings"] = cfg["max_position_embeddings"]
    if model_type == "llama4_text":
        step = cfg.get("interleave_moe_layer_step") or 1
        layers = fields["num_hidden_layers"]
        listed = cfg.get("moe_layers")
        if listed is not None and list(listed) != list(range(step - 1, layers, step)):
            raise ConfigError(
                f"{file}: 'moe_layers' is not every {step}th layer; rooftune models MoE layers "
                "at a fixed interleave step"
            )
        fields.update(
            intermediate_size=_require(cfg, "intermediate_size_mlp", file),
            moe_intermediate_size=_require(cfg, "intermediate_size", file),
            num_local_experts=_require(cfg, "num_local_experts", file),
            num_experts_per_tok=cfg.get("num_experts_per_tok") or 1,
            num_shared_experts=1,  # Llama 4 has exactly one shared expert per MoE layer
            moe_layer_step=step,
        )
    elif model_type == "mixtral":
        # Every layer is a mixture of experts; HF's intermediate_size is the expert width.
        width = _require(cfg, "intermediate_size", file)
        fields.update(
            intermediate_size=width,
            moe_intermediate_size=width,
            num_local_experts=_require(cfg, "num_local_experts", file),
            num_experts_per_tok=cfg.get("num_experts_per_tok") or 2,
            moe_layer_step=1,
        )
    elif model_type == "deepseek_v3":
        fields.update(_deepseek_fields(cfg, file))
    else:
        fields["intermediate_size"] = _require(cfg, "intermediate_size", file)
        fields["attention_bias"] = bool(cfg.get("attention_bias", model_type == "qwen2"))
    try:
        return ModelSpec(**fields)
    except ValidationError as err:
        raise ConfigError(f"{file}: {one_line(err)}") from None


def _deepseek_fields(cfg: dict[str, Any], file: Path) -> dict[str, Any]:
    """DeepSeek-V3's spelling: latent attention, ``n_routed_experts``, dense first layers."""
    if (cfg.get("moe_layer_freq") or 1) != 1:
        raise ConfigError(f"{file}: rooftune models DeepSeek-V3 with an MoE layer every layer")
    keys = ("q_lora_rank", "kv_lora_rank", "qk_rope_head_dim", "qk_nope_head_dim", "v_head_dim")
    fields = {key: _require(cfg, key, file) for key in keys}
    fields.update(
        head_dim=fields["qk_nope_head_dim"] + fields["qk_rope_head_dim"],
        num_key_value_heads=cfg.get("num_key_value_heads") or cfg["num_attention_heads"],
        intermediate_size=_require(cfg, "intermediate_size", file),
        moe_intermediate_size=_require(cfg, "moe_intermediate_size", file),
        num_local_experts=_require(cfg, "n_routed_experts", file),
        num_experts_per_tok=_require(cfg, "num_experts_per_tok", file),
        num_shared_experts=cfg.get("n_shared_experts") or 0,
        first_k_dense_replace=cfg.get("first_k_dense_replace") or 0,
        moe_layer_step=1,
    )
    return fields


def to_hf_config(model: ModelSpec) -> dict[str, Any]:
    """The ``config.json`` that ``from_hf_config`` reads back as ``model`` (except ``source``).

    Each family in its own layout: Llama 4 as its multimodal file with the decoder under
    ``text_config`` (whose ``intermediate_size`` is the expert width), Mixtral and DeepSeek-V3
    with their own expert keys, the dense families flat.
    """
    text: dict[str, Any] = {
        "hidden_size": model.hidden_size,
        "intermediate_size": model.intermediate_size,
        "num_hidden_layers": model.num_hidden_layers,
        "num_attention_heads": model.num_attention_heads,
        "num_key_value_heads": model.num_key_value_heads,
        "head_dim": model.head_dim,
        "vocab_size": model.vocab_size,
        "tie_word_embeddings": model.tie_word_embeddings,
        "max_position_embeddings": model.max_position_embeddings,
        "rope_theta": model.rope_theta,
        "rope_scaling": dict(model.rope_scaling) if model.rope_scaling else None,
        "rms_norm_eps": model.rms_norm_eps,
        "hidden_act": "silu",
        "attention_bias": model.attention_bias,
        "torch_dtype": model.torch_dtype,
    }
    kind = model.model_type
    if kind in _DENSE_TYPES:
        return {"architectures": [_CLASSES[kind]], "model_type": kind, **text}
    if kind == "mixtral":
        text.update(intermediate_size=model.moe_intermediate_size,
                    num_local_experts=model.num_local_experts,
                    num_experts_per_tok=model.num_experts_per_tok)  # fmt: skip
        return {"architectures": [_CLASSES[kind]], "model_type": kind, **text}
    if kind == "deepseek_v3":
        text.update(
            moe_intermediate_size=model.moe_intermediate_size,
            n_routed_experts=model.num_local_experts,
            num_experts_per_tok=model.num_experts_per_tok,
            n_shared_experts=model.num_shared_experts,
            first_k_dense_replace=model.first_k_dense_replace,
            moe_layer_freq=1,
            q_lora_rank=model.q_lora_rank,
            kv_lora_rank=model.kv_lora_rank,
            qk_rope_head_dim=model.qk_rope_head_dim,
            qk_nope_head_dim=model.qk_nope_head_dim,
            v_head_dim=model.v_head_dim,
        )
        return {"architectures": [_CLASSES[kind]], "model_type": kind, **text}
    if model.num_shared_experts != 1:
        raise ConfigError(
            f"{model.name}: the Llama 4 format has exactly one shared expert, "
            f"not {model.num_shared_experts}"
        )
    text.update(
        model_type="llama4_text",
        intermediate_size=model.moe_intermediate_size,
        intermediate_size_mlp=model.intermediate_size,
        num_local_experts=model.num_local_experts,
        num_experts_per_tok=model.num_experts_per_tok,
        interleave_moe_layer_step=model.moe_layer_step,
    )
    return {
        "architectures": ["Llama4ForConditionalGeneration"],
        "model_type": "llama4",
        "text_config": text,
        "torch_dtype": model.torch_dtype,
    }
