"""The elementwise pieces of the Llama layer, and fused versions of them.

RoPE, RMSNorm, the residual add, SwiGLU's ``silu(gate) * up`` and the FP8 cast are each several
small kernels when PyTorch runs them op by op. ``Kernels`` holds the functions the model calls;
``Kernels.compiled()`` swaps in fused ones: hand-written Triton kernels for RoPE with the KV-cache
write, SwiGLU and the residual add + RMSNorm (``executor.elementwise``), and ``torch.compile``
(dynamic shapes, one Triton kernel apiece) for the lone first RMSNorm, or for all of them where
there is no Triton. The GEMMs and prefill attention stay library calls; decode attention is
SDPA or the one Triton kernel of ``executor.decode_attention``, as ``decode_attention_mode``
says. Fusions that follow the data: the residual add shares a kernel with the next RMSNorm,
RoPE runs on the fused q/k/v projection in place and writes K and V into the cache in the same
pass, and before an FP8 GEMM with a static input scale the producing kernel writes FP8
directly.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from executor.naive_attention import naive_causal_attention

__all__ = [
    "DEFAULT_DECODE_ATTENTION",
    "DECODE_ATTENTION_MODES",
    "decode_attention_for",
    "Kernels",
    "EAGER",
    "apply_rope",
    "rope_cache",
    "rms_norm",
    "add_rms_norm",
    "silu_and_mul",
    "to_fp8",
    "static_input_scale",
    "causal_attention",
]


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [B, heads, T, D]; cos, sin: [T, D]. Rotate pairs (i, i + D/2) by the position angle."""
    x_float = x.float()
    first, second = x_float.chunk(2, dim=-1)
    rotated = torch.cat([-second, first], dim=-1)
    return (x_float * cos + rotated * sin).to(x.dtype)


def rope_cache(
    qkv: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    num_q_heads: int,
    num_kv_heads: int,
    cache=None,
    input_pos: torch.Tensor | None = None,
    blocks: torch.Tensor | None = None,
) -> torch.Tensor:
    """qkv: [B, T, heads, D], the q, k and v heads of the fused projection. Rotates the q and k
    heads in place and, given a ``KVCache``, stores K and V at ``input_pos``; given a
    ``PagedKVCache`` and ``blocks [T]`` (B = 1), token t's at slot ``input_pos[t]`` of block
    ``blocks[t]``. Returns qkv."""
    rotated = num_q_heads + num_kv_heads
    # [B, T, heads, D] -> [B, heads, T, D] views, so apply_rope's [T, D] tables broadcast.
    qkv[:, :, :rotated] = apply_rope(qkv[:, :, :rotated].transpose(1, 2), cos, sin).transpose(1, 2)
    if blocks is not None:
        cache.write(blocks, input_pos, qkv[0, :, num_q_heads:rotated], qkv[0, :, rotated:])
    elif cache is not None:
        k = qkv[:, :, num_q_heads:rotated].transpose(1, 2)
        v = qkv[:, :, rotated:].transpose(1, 2)
        cache.write(input_pos, k, v)
    return qkv


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
    residual: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
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


def causal_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, backend: str = "flash"
) -> torch.Tensor:
    """Causal SDPA of q [B, heads, T, D] over k, v [B, kv_heads, T, D]. ``backend`` "cudnn"
    asks for cuDNN's fused attention (faster than flash on Hopper for long prompts); it wants
    as many K/V heads as query heads, so K/V are repeated first (a small copy next to T^2 work).
    "naive" materializes the scores as the cost model's ``attention: naive`` prices them: a
    score matrix per head, written, soft-maxed under the mask and read back
    (``executor.naive_attention``).
    Anything else, or a CPU, is PyTorch's choice with native GQA: cuDNN's on Hopper with torch
    2.11 (the "default" and "cudnn" rows of ``studies/attention/h200/attention-rates.log``
    agree), flash elsewhere. cuDNN builds a plan per sequence length, so a serving run pads
    its chunks to buckets (``executor.ragged.ATTENTION_BUCKET``)."""
    if backend == "naive":
        return naive_causal_attention(q, k, v)
    if backend == "cudnn" and q.is_cuda:
        from torch.nn.attention import SDPBackend, sdpa_kernel

        group = q.shape[1] // k.shape[1]
        k_full, v_full = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)
        with sdpa_kernel(
            [SDPBackend.CUDNN_ATTENTION, SDPBackend.FLASH_ATTENTION], set_priority=True
        ):
            return F.scaled_dot_product_attention(q, k_full, v_full, is_causal=True)
    return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)


# The decode-step attention a fused model runs: "triton" (executor.decode_attention: RoPE, the
# cache write and flash decoding in one kernel), "sdpa" (the RoPE kernel, then PyTorch's SDPA),
# or "auto": the Triton kernel for an FP8 cache (it reads FP8 where SDPA needs a dequantized
# copy: a batch-1 step 8-13% faster), SDPA for a bf16 one (a step 0.4-4.6% faster, measured over
# the decode grid on an H100; studies/executor-h100/decode-attention).
DECODE_ATTENTION_MODES = ("auto", "sdpa", "triton")
DEFAULT_DECODE_ATTENTION = "auto"


def decode_attention_for(mode: str, fp8_cache: bool) -> str:
    """The decode attention ("sdpa" or "triton") that ``mode`` runs for a cache."""
    if mode == "auto":
        return "triton" if fp8_cache else "sdpa"
    return mode


class Kernels:
    """The elementwise functions the model calls, swappable for fused versions.

    Eager, each of them is several small kernels; ``Kernels.compiled()`` makes each one kernel:
    the Triton kernels of ``executor.elementwise`` where Triton and a GPU are here,
    ``torch.compile`` (dynamic shapes, so one compile serves every batch size) otherwise. The
    GEMMs and prefill attention stay library calls. A decode step's attention is the Triton
    kernel of ``executor.decode_attention`` (with its RoPE and cache write) or PyTorch's SDPA,
    as ``decode_attention_mode`` says (see ``DEFAULT_DECODE_ATTENTION``).
    """

    def __init__(
        self,
        rms_norm: Callable = rms_norm,
        rope_cache: Callable = rope_cache,
        silu_and_mul: Callable = silu_and_mul,
        add_rms_norm: Callable = add_rms_norm,
        add_rms_norm_fp8: Callable = add_rms_norm_fp8,
        silu_and_mul_fp8: Callable = silu_and_mul_fp8,
        prefill_backend: str = "flash",
        decode_attention: Callable | None = None,
        decode_attention_mode: str = "sdpa",
    ) -> None:
        self.prefill_backend = prefill_backend
        # A decode step over exactly the valid cache: executor.decode_attention's kernel where
        # the mode picks it, else rope_cache then PyTorch's SDPA.
        self.decode_attention = decode_attention
        self.decode_attention_mode = decode_attention_mode if decode_attention else "sdpa"
        self.rms_norm = rms_norm
        self.rope_cache = rope_cache
        self.silu_and_mul = silu_and_mul
        self.add_rms_norm = add_rms_norm
        self.add_rms_norm_fp8 = add_rms_norm_fp8
        self.silu_and_mul_fp8 = silu_and_mul_fp8

    def decode_kernel(self, cache) -> Callable | None:
        """The one-kernel decode attention for this ``KVCache``, or None for SDPA."""
        if decode_attention_for(self.decode_attention_mode, cache.is_fp8) != "triton":
            return None
        from executor.decode_attention import supports

        return self.decode_attention if supports(cache.k.shape[-1]) else None

    def paged_decode(self, cache) -> Callable | None:
        """A serving iteration's decodes over a ``PagedKVCache`` (``executor.ragged``) in the
        one-kernel decode attention, through each sequence's block table; None where it cannot
        run (no Triton kernel, or a head size it does not take): SDPA one sequence at a time.
        A bf16 cache uses it too: gathering each sequence's blocks for SDPA costs far more.

        Returns ``prepare(qkv, cos, sin, positions, tables, max_length, heads, out=None,
        rotated=False)``, the iteration's launch laid out once (``executor.decode_attention.
        prepare``), which ``launch(cache)`` runs on each layer's cache (shaped as ``cache``)."""
        if self.decode_attention is None:
            return None
        from executor import decode_attention as triton_decode

        if not triton_decode.supports(cache.k.shape[-1]):
            return None
        kernel = self.decode_attention

        def prepare(qkv, cos, sin, positions, tables, max_length, heads, out=None,
                    rotated=False):  # fmt: skip
            launch = dict(block_table=tables, out=out, rotated=rotated)
            if kernel is triton_decode.decode_attention:
                return triton_decode.prepare(qkv, cos, sin, positions, cache, max_length, heads,
                                             **launch)  # fmt: skip
            # A stand-in for the kernel (a test's): called layer by layer.
            return lambda layer_cache: kernel(qkv, cos, sin, positions, layer_cache, max_length,
                                              heads, **launch)  # fmt: skip

        return prepare

    @classmethod
    def compiled(
        cls, prefill_backend: str = "flash", decode_attention: str = DEFAULT_DECODE_ATTENTION
    ) -> Kernels:
        from executor import decode_attention as triton_decode
        from executor import elementwise

        def compile_one(fn: Callable) -> Callable:
            return torch.compile(fn, dynamic=True, fullgraph=True)

        # One compiled function serves every shape, but each distinct stride pattern and grad
        # mode is a recompile; a model sees a few dozen, more than dynamo's default of 8.
        torch._dynamo.config.recompile_limit = max(torch._dynamo.config.recompile_limit, 64)
        if elementwise.available():
            return cls(
                compile_one(rms_norm),
                elementwise.rope_cache,
                elementwise.silu_and_mul,
                elementwise.add_rms_norm,
                elementwise.add_rms_norm,
                elementwise.silu_and_mul,
                prefill_backend=prefill_backend,
                decode_attention=triton_decode.decode_attention,
                decode_attention_mode=decode_attention,
            )
        return cls(
            compile_one(rms_norm),
            rope_cache,
            compile_one(silu_and_mul),
            compile_one(add_rms_norm),
            compile_one(add_rms_norm_fp8),
            compile_one(silu_and_mul_fp8),
            prefill_backend=prefill_backend,
        )


EAGER = Kernels()
