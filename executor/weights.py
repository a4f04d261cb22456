"""Weights of the executor's Llama: seeded random at the real shapes, or a local Hugging Face
checkpoint; the mapping to Hugging Face names; the parameter count the simulator must agree with.

The executor fuses q/k/v into ``wqkv`` and gate/up into ``w_gate_up``; ``to_hf_state_dict``
returns views of those fused tensors under the unfused HF names, so loading a checkpoint is a
copy into each view and exporting to HF is a plain ``load_state_dict``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from executor.model import Llama, RMSNorm

__all__ = ["count_parameters", "init_random_weights", "to_hf_state_dict", "load_hf_checkpoint"]


def count_parameters(model: nn.Module) -> int:
    """Distinct parameter elements (a tied lm_head counts once), quantized weights included."""
    seen: set[int] = set()
    total = 0
    for module in model.modules():
        for name, tensor in list(module.named_parameters(recurse=False)) + [
            (n, b) for n, b in module.named_buffers(recurse=False) if n in ("weight", "qweight")
        ]:
            if id(tensor) in seen or name.endswith("scale"):
                continue
            seen.add(id(tensor))
            total += tensor.numel()
    return total


@torch.no_grad()
def init_random_weights(
    model: nn.Module, *, seed: int = 0, generator: torch.Generator | None = None
) -> nn.Module:
    """Seeded random weights at the real shapes: linears N(0, 1/in_features), embedding
    N(0, 1), norms 1. Activations then keep unit scale through the stack, as in a trained model.

    ``model`` may be the whole Llama or one block of it; blocks initialized in module order
    with one shared ``generator`` get exactly the whole model's weights."""
    if generator is None:
        device = next(model.parameters()).device
        generator = torch.Generator(device=device).manual_seed(seed)
    for module in model.modules():
        if isinstance(module, nn.Linear):
            std = module.in_features**-0.5
            module.weight.normal_(0.0, std, generator=generator)
        elif isinstance(module, nn.Embedding):
            module.weight.normal_(0.0, 1.0, generator=generator)
        elif isinstance(module, RMSNorm):
            module.weight.fill_(1.0)
    return model


def to_hf_state_dict(model: Llama) -> dict[str, torch.Tensor]:
    """Our weights under Hugging Face ``LlamaForCausalLM`` names (q/k/v and gate/up unfused)."""
    spec = model.spec
    q_width, kv_width = spec.q_size, spec.kv_size
    state = {
        "model.embed_tokens.weight": model.embed_tokens.weight,
        "model.norm.weight": model.norm.weight,
        "lm_head.weight": model.lm_head.weight,
    }
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        q, k, v = layer.attention.wqkv.weight.split([q_width, kv_width, kv_width])
        gate, up = layer.mlp.w_gate_up.weight.chunk(2)
        state.update(
            {
                prefix + "self_attn.q_proj.weight": q,
                prefix + "self_attn.k_proj.weight": k,
                prefix + "self_attn.v_proj.weight": v,
                prefix + "self_attn.o_proj.weight": layer.attention.wo.weight,
                prefix + "mlp.gate_proj.weight": gate,
                prefix + "mlp.up_proj.weight": up,
                prefix + "mlp.down_proj.weight": layer.mlp.w_down.weight,
                prefix + "input_layernorm.weight": layer.attention_norm.weight,
                prefix + "post_attention_layernorm.weight": layer.mlp_norm.weight,
            }
        )
    return state


@torch.no_grad()
def load_hf_checkpoint(model: Llama, path: str | Path) -> Llama:
    """Copy a local Hugging Face safetensors checkpoint (a directory of ``*.safetensors``, or one
    file) into ``model``, fusing q/k/v and gate/up. Reads one tensor at a time (mmap)."""
    try:
        from safetensors import safe_open
    except ImportError as error:  # pragma: no cover - depends on the environment
        raise ImportError("loading a checkpoint needs `pip install safetensors`") from error
    path = Path(path)
    files = sorted(path.glob("*.safetensors")) if path.is_dir() else [path]
    if not files:
        raise FileNotFoundError(f"no *.safetensors under {path}")
    targets = to_hf_state_dict(model)
    spec = model.spec
    loaded: set[str] = set()
    for file in files:
        with safe_open(str(file), framework="pt") as handle:
            for name in handle.keys():
                if name not in targets:
                    continue
                targets[name].copy_(handle.get_tensor(name))  # views into the fused weights
                loaded.add(name)
    missing = set(targets) - loaded
    if spec.tie_word_embeddings:
        missing.discard("lm_head.weight")
    if missing:
        raise KeyError(f"checkpoint lacks {len(missing)} tensors, e.g. {sorted(missing)[:3]}")
    return model
