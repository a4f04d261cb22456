"""Llama in PyTorch, built from the same ``ModelSpec`` the simulator prices.

One decoder layer is

    x = x + wo(attention(rope(q), rope(k), v))      with q, k, v = split(wqkv(rms_norm(x)))
    x = x + w_down(silu(gate) * up)                 with gate, up = split(w_gate_up(rms_norm(x)))

and the model is ``embed_tokens -> layers -> norm -> lm_head``. The projections that read the same
input are stored fused (``wqkv``, ``w_gate_up``): one GEMM instead of three (or two), and one
activation quantization instead of three under FP8. The parameter count is unchanged, so it is
exactly ``simulator.models.parameter_counts(spec).total``.

Attention is grouped-query (GQA): ``num_attention_heads`` query heads share
``num_key_value_heads`` K/V heads, ``heads_per_kv_group`` query heads each. RoPE follows the
Hugging Face "rotate half" layout (so HF checkpoints load unchanged) with Llama 3 frequency scaling.

The KV cache is static: ``[batch, num_kv_heads, max_seq_length, head_dim]`` allocated once by
``setup_caches``. Every tensor shape of a decode step is then fixed, which is what lets
``executor.engine`` capture the step in a CUDA graph. Sequences of one batch advance in lock step
(one ``input_pos`` for the whole batch), which is all a step-level benchmark needs.

Three attention paths, chosen by shape:
- no cache (``forward`` on a whole sequence): causal SDPA, the reference for tests;
- prefill from position 0: causal SDPA over the new tokens (flash backend on a GPU), and the new
  K/V written into the cache;
- decode with a known ``kv_length`` (a step captured for one context): unmasked SDPA over
  exactly the valid cache positions, which the flash backend splits over the keys;
- decode without it (one token, or with ``attend_cache`` a chunk that continues a cached
  context): SDPA of the new queries against the whole cache with a mask of the valid positions. For one token the query heads of a KV group are
  folded into the query-length axis (``[B, kv_heads, heads_per_kv_group, D]``), so each K/V head
  is read once, not once per query head.

Weights are seeded random at the real shapes (``init_random_weights``) or loaded from a local
Hugging Face safetensors checkpoint (``load_hf_checkpoint``).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from simulator.specs import ModelSpec

__all__ = [
    "KVCache",
    "RMSNorm",
    "Attention",
    "FeedForward",
    "TransformerBlock",
    "Llama",
    "rope_frequencies",
    "init_random_weights",
    "load_hf_checkpoint",
    "to_hf_state_dict",
    "count_parameters",
]


def rope_frequencies(spec: ModelSpec) -> torch.Tensor:
    """Inverse frequencies ``[head_dim // 2]`` (float64), with Llama 3 scaling when the spec asks.

    Llama 3 keeps high frequencies (wavelength under original_length / high_freq_factor),
    divides low ones (wavelength over original_length / low_freq_factor) by ``factor``, and
    blends linearly in between.
    """
    dim = spec.head_dim
    inv_freq = 1.0 / (spec.rope_theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim))
    scaling = spec.rope_scaling or {}
    kind = scaling.get("rope_type", scaling.get("type"))
    if kind == "llama3":
        factor = float(scaling["factor"])
        low = float(scaling.get("low_freq_factor", 1.0))
        high = float(scaling.get("high_freq_factor", 4.0))
        original = float(scaling.get("original_max_position_embeddings", 8192))
        wavelength = 2 * math.pi / inv_freq
        smooth = (original / wavelength - low) / (high - low)
        blended = (1 - smooth) * inv_freq / factor + smooth * inv_freq
        inv_freq = torch.where(wavelength > original / low, inv_freq / factor, inv_freq)
        middle = (wavelength <= original / low) & (wavelength >= original / high)
        inv_freq = torch.where(middle, blended, inv_freq)
    elif kind == "linear":
        inv_freq = inv_freq / float(scaling["factor"])
    return inv_freq


def _rope_table(spec: ModelSpec, length: int) -> tuple[torch.Tensor, torch.Tensor]:
    # cos, sin: [length, head_dim], float32, halves repeated as HF's rotate_half layout wants.
    angles = torch.outer(torch.arange(length, dtype=torch.float64), rope_frequencies(spec))
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, T, D]; cos, sin: [T, D]. Rotate pairs (i, i + D/2) by the position angle."""
    x_float = x.float()
    first, second = x_float.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x_float * cos + rotated * sin).to(x.dtype)


def rope_qkv(
    qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor, num_rotated_heads: int
) -> torch.Tensor:
    """qkv: [B, T, heads, D] (q, k and v heads of the fused projection). Rotates the first
    ``num_rotated_heads`` (q and k) and passes v through: one kernel for the whole projection."""
    rotated = apply_rope(qkv[:, :, :num_rotated_heads].transpose(1, 2), cos, sin).transpose(1, 2)
    return torch.cat([rotated, qkv[:, :, num_rotated_heads:]], dim=2)


def rms_norm(x: torch.Tensor, weight: torch.Tensor, eps: float) -> torch.Tensor:
    x_float = x.float()
    x_float = x_float * torch.rsqrt(x_float.pow(2).mean(-1, keepdim=True) + eps)
    return (x_float * weight.float()).to(x.dtype)


def add_rms_norm(
    residual: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual add and the next RMSNorm in one pass: (residual + delta, its norm)."""
    residual = residual + delta
    return residual, rms_norm(residual, weight, eps)


def silu_and_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def to_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """x / scale saturated to float8_e4m3fn (448 is its largest finite value)."""
    return (x.float() / scale).clamp(-448.0, 448.0).to(torch.float8_e4m3fn)


def add_rms_norm_fp8(
    residual: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor, eps: float,
    scale: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """add_rms_norm whose normed output is already the FP8 input of the next GEMM."""
    residual, normed = add_rms_norm(residual, delta, weight, eps)
    return residual, to_fp8(normed, scale)


def silu_and_mul_fp8(gate_up: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return to_fp8(silu_and_mul(gate_up), scale)


def static_input_scale(linear: nn.Module) -> torch.Tensor | None:
    """The fixed per-tensor FP8 input scale of a quantized linear, or None (bf16 linears and
    dynamic scaling). When it exists, the kernel before the GEMM writes FP8 directly."""
    scale_of = getattr(linear, "static_input_scale", None)
    return scale_of() if callable(scale_of) else None


class Kernels:
    """The elementwise functions the model calls, swappable for compiled (fused) versions.

    Eager, each of them is several small kernels; ``Kernels.compiled()`` fuses each into one
    Triton kernel (``torch.compile`` of these small functions only, with dynamic shapes, so they
    compile once and serve every batch size). The GEMMs and attention stay library calls.
    """

    def __init__(
        self,
        rms_norm: Callable = rms_norm,
        apply_rope: Callable = apply_rope,
        silu_and_mul: Callable = silu_and_mul,
        add_rms_norm: Callable = add_rms_norm,
        rope_qkv: Callable = rope_qkv,
        add_rms_norm_fp8: Callable = add_rms_norm_fp8,
        silu_and_mul_fp8: Callable = silu_and_mul_fp8,
    ) -> None:
        self.rope_qkv = rope_qkv
        self.add_rms_norm_fp8 = add_rms_norm_fp8
        self.silu_and_mul_fp8 = silu_and_mul_fp8
        self.rms_norm = rms_norm
        self.apply_rope = apply_rope
        self.silu_and_mul = silu_and_mul
        self.add_rms_norm = add_rms_norm

    @classmethod
    def compiled(cls) -> Kernels:
        def compile_one(fn: Callable) -> Callable:
            return torch.compile(fn, dynamic=True, fullgraph=True)

        # One compiled function serves every shape, but each distinct stride pattern and grad
        # mode is a recompile; a model sees a few dozen, more than dynamo's default of 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        return cls(compile_one(rms_norm), compile_one(apply_rope), compile_one(silu_and_mul),
                   compile_one(add_rms_norm), compile_one(rope_qkv),
                   compile_one(add_rms_norm_fp8), compile_one(silu_and_mul_fp8))


EAGER = Kernels()


class KVCache(nn.Module):
    """Static K/V storage of one layer: ``[max_batch, num_kv_heads, max_seq_length, head_dim]``.

    ``dtype`` float8_e4m3fn stores an FP8 cache with one per-tensor scale per K and V (a memory
    saving; values are dequantized to the compute dtype before attention).
    """

    def __init__(
        self, max_batch: int, num_kv_heads: int, max_seq_length: int, head_dim: int,
        dtype: torch.dtype, device: torch.device | str | None = None, scale: float = 1.0,
    ) -> None:
        super().__init__()
        shape = (max_batch, num_kv_heads, max_seq_length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.is_fp8 = dtype == torch.float8_e4m3fn
        self.scale = scale

    def update(
        self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
        kv_length: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Write k, v ``[B, kv_heads, T, D]`` at positions ``input_pos [T]``; return this
        batch's view of the cache (``[B, kv_heads, kv_length or max_seq_length, D]``) in the
        compute dtype."""
        batch = k.shape[0]
        k_cache, v_cache = self.k[:batch], self.v[:batch]
        if self.is_fp8:
            # index_copy_ has no float8 kernel: move the bytes as uint8.
            k_fp8 = (k.float() / self.scale).clamp(-448, 448).to(self.k.dtype)
            v_fp8 = (v.float() / self.scale).clamp(-448, 448).to(self.v.dtype)
            k_cache.view(torch.uint8).index_copy_(2, input_pos, k_fp8.view(torch.uint8))
            v_cache.view(torch.uint8).index_copy_(2, input_pos, v_fp8.view(torch.uint8))
        else:
            k_cache.index_copy_(2, input_pos, k)
            v_cache.index_copy_(2, input_pos, v)
        if kv_length is not None:
            k_cache, v_cache = k_cache[:, :, :kv_length], v_cache[:, :, :kv_length]
        if self.is_fp8:
            return k_cache.to(k.dtype) * self.scale, v_cache.to(v.dtype) * self.scale
        return k_cache, v_cache


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, kernels: Kernels = EAGER) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    """GQA self-attention. ``num_heads`` / ``num_kv_heads`` are the heads this module holds: all
    of them, or one GPU's share once ``executor.parallel.apply_tp`` has sharded it."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.num_heads = spec.num_attention_heads
        self.num_kv_heads = spec.num_key_value_heads
        self.head_dim = spec.head_dim
        fused_width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.wqkv = nn.Linear(spec.hidden_size, fused_width, bias=False)
        self.wo = nn.Linear(self.num_heads * self.head_dim, spec.hidden_size, bias=False)
        self.kv_cache: KVCache | None = None

    @property
    def heads_per_kv_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    def forward(
        self, x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
        input_pos: torch.Tensor | None, kernels: Kernels, attend_cache: bool = False,
        kv_length: int | None = None,
    ) -> torch.Tensor:
        batch, num_tokens, _ = x.shape  # x: [B, T, hidden]
        q_width = self.num_heads * self.head_dim
        qkv = self.wqkv(x).view(batch, num_tokens, -1, self.head_dim)  # [B, T, q+k+v heads, D]
        qkv = kernels.rope_qkv(qkv, cos, sin, self.num_heads + self.num_kv_heads)
        q, k, v = qkv.transpose(1, 2).split(
            [self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1)  # [B, heads, T, D]

        if self.kv_cache is None or input_pos is None:
            out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        else:
            exact = kv_length if num_tokens == 1 else None
            k_all, v_all = self.kv_cache.update(input_pos, k, v, exact)  # [B, kv_heads, S, D]
            if exact is not None:
                # Every cached position is valid: no mask, so the flash kernel (split over the
                # keys for one query) reads each K/V head once.
                out = F.scaled_dot_product_attention(q, k_all, v_all, enable_gqa=True)
            elif num_tokens == 1 or attend_cache:
                out = self._attend_cache(q, k_all, v_all, input_pos)
            else:
                # Prefill from position 0: the new tokens are the whole context.
                out = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
        out = out.transpose(1, 2).reshape(batch, num_tokens, q_width)
        return self.wo(out)

    def _attend_cache(
        self, q: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor, input_pos: torch.Tensor
    ) -> torch.Tensor:
        batch, _, num_tokens, head_dim = q.shape
        max_seq_length = k_all.shape[2]
        key_pos = torch.arange(max_seq_length, device=q.device)
        visible = key_pos[None, :] <= input_pos[:, None]  # [T, S_max]
        if num_tokens == 1:
            # [B, kv_heads, group, D]: the group's query heads ride the query-length axis.
            q_grouped = q.view(batch, self.num_kv_heads, self.heads_per_kv_group, head_dim)
            out = F.scaled_dot_product_attention(q_grouped, k_all, v_all, attn_mask=visible)
            return out.reshape(batch, self.num_heads, 1, head_dim)
        return F.scaled_dot_product_attention(
            q, k_all, v_all, attn_mask=visible, enable_gqa=True
        )


class FeedForward(nn.Module):
    """SwiGLU MLP: ``w_down(silu(x W_gate) * (x W_up))``, gate and up fused into one weight."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.w_gate_up = nn.Linear(spec.hidden_size, 2 * spec.intermediate_size, bias=False)
        self.w_down = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        gate_up = self.w_gate_up(x)
        scale = static_input_scale(self.w_down)
        if scale is not None:
            return self.w_down(kernels.silu_and_mul_fp8(gate_up, scale))
        return self.w_down(kernels.silu_and_mul(gate_up))


class TransformerBlock(nn.Module):
    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.attention = Attention(spec)
        self.mlp_norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = FeedForward(spec)

    def forward(self, x, cos, sin, input_pos, kernels: Kernels, attend_cache: bool = False,
                kv_length: int | None = None):
        normed = self.attention_norm(x, kernels)
        x = x + self.attention(normed, cos, sin, input_pos, kernels, attend_cache, kv_length)
        return x + self.mlp(self.mlp_norm(x, kernels), kernels)


class Llama(nn.Module):
    """A dense Llama decoder. ``forward(tokens [B, T], input_pos [T]) -> logits``.

    ``input_pos`` None runs without the cache (causal attention over ``tokens``). With a cache,
    several tokens are a prefill from position 0, unless ``attend_cache`` says they continue a
    cached context (a chunk); one token is a decode step.
    ``kv_length`` (decode only) says that exactly the first ``kv_length`` cache positions are
    valid, a number fixed when a step's graph is captured for one context length; attention then
    runs unmasked over them (the flash kernel, as serving engines read only valid KV).
    ``last_token_only`` computes the ``lm_head`` for the last position only (prefill needs just
    that one to sample, and the vocabulary projection of every prompt token is wasted work).
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        if spec.is_moe:
            raise NotImplementedError("the executor runs dense Llama models only")
        self.spec = spec
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(TransformerBlock(spec) for _ in range(spec.num_hidden_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.kernels = EAGER
        self.max_batch = 0
        self.max_seq_length = 0
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self._set_rope(min(spec.max_position_embeddings, 4096))

    def _set_rope(self, length: int) -> None:
        device = self.embed_tokens.weight.device
        cos, sin = _rope_table(self.spec, length)
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def setup_caches(
        self, *, max_batch: int, max_seq_length: int, kv_dtype: torch.dtype | None = None,
        kv_scale: float = 1.0,
    ) -> None:
        """Allocate the static KV cache (every layer) and the RoPE table up to max_seq_length.
        Raises ``torch.OutOfMemoryError`` on a GPU when it does not fit: callers record that."""
        max_seq_length = (max_seq_length + 15) // 16 * 16  # aligned masks for the SDPA kernels
        self.free_caches()
        device = self.embed_tokens.weight.device
        dtype = kv_dtype or self.layers[0].attention_norm.weight.dtype
        for layer in self.layers:
            attn = layer.attention
            attn.kv_cache = KVCache(
                max_batch, attn.num_kv_heads, max_seq_length, attn.head_dim, dtype, device,
                scale=kv_scale,
            )
        self.max_batch, self.max_seq_length = max_batch, max_seq_length
        if self.rope_cos.shape[0] < max_seq_length:
            self._set_rope(max_seq_length)

    def free_caches(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None
        self.max_batch = self.max_seq_length = 0

    def forward(
        self, tokens: torch.Tensor, input_pos: torch.Tensor | None = None, *,
        last_token_only: bool = False, attend_cache: bool = False, kv_length: int | None = None,
    ) -> torch.Tensor:
        num_tokens = tokens.shape[1]
        if input_pos is None:
            positions = torch.arange(num_tokens, device=tokens.device)
            if self.rope_cos.shape[0] < num_tokens:
                self._set_rope(num_tokens)
        else:
            positions = input_pos
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # [T, head_dim]
        kernels = self.kernels
        residual = self.embed_tokens(tokens)  # [B, T, hidden]
        normed = self.layers[0].attention_norm(residual, kernels)
        # TransformerBlock.forward unrolled so that each residual add shares a kernel with the
        # RMSNorm after it (the next layer's, or the final norm).
        next_norms = [layer.attention_norm for layer in self.layers[1:]] + [self.norm]
        next_inputs = [layer.attention.wqkv for layer in self.layers[1:]] + [self.lm_head]
        first_scale = static_input_scale(self.layers[0].attention.wqkv)
        if first_scale is not None:
            normed = to_fp8(normed, first_scale)
        for layer, next_norm, next_input in zip(self.layers, next_norms, next_inputs,
                                                strict=True):
            attended = layer.attention(normed, cos, sin, input_pos, kernels, attend_cache,
                                       kv_length)
            residual, normed = self._add_norm(
                residual, attended, layer.mlp_norm, layer.mlp.w_gate_up, kernels)
            residual, normed = self._add_norm(
                residual, layer.mlp(normed, kernels), next_norm, next_input, kernels)
        if last_token_only:
            normed = normed[:, -1:]
        return self.lm_head(normed)  # [B, T or 1, vocab]

    @staticmethod
    def _add_norm(residual, delta, norm: RMSNorm, consumer: nn.Module, kernels: Kernels):
        # The normed activation feeds `consumer`; an FP8 consumer with a static scale gets it
        # quantized by the same kernel.
        scale = static_input_scale(consumer)
        if scale is not None:
            return kernels.add_rms_norm_fp8(residual, delta, norm.weight, norm.eps, scale)
        return kernels.add_rms_norm(residual, delta, norm.weight, norm.eps)


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
def init_random_weights(model: Llama, *, seed: int = 0) -> Llama:
    """Seeded random weights at the real shapes: linears N(0, 1/in_features), embedding
    N(0, 1), norms 1. Activations then keep unit scale through the stack, as in a trained model."""
    generator = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
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
    state = {"model.embed_tokens.weight": model.embed_tokens.weight,
             "model.norm.weight": model.norm.weight, "lm_head.weight": model.lm_head.weight}
    for i, layer in enumerate(model.layers):
        prefix = f"model.layers.{i}."
        q, k, v = layer.attention.wqkv.weight.split([q_width, kv_width, kv_width])
        gate, up = layer.mlp.w_gate_up.weight.chunk(2)
        state.update({
            prefix + "self_attn.q_proj.weight": q, prefix + "self_attn.k_proj.weight": k,
            prefix + "self_attn.v_proj.weight": v,
            prefix + "self_attn.o_proj.weight": layer.attention.wo.weight,
            prefix + "mlp.gate_proj.weight": gate, prefix + "mlp.up_proj.weight": up,
            prefix + "mlp.down_proj.weight": layer.mlp.w_down.weight,
            prefix + "input_layernorm.weight": layer.attention_norm.weight,
            prefix + "post_attention_layernorm.weight": layer.mlp_norm.weight,
        })
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
