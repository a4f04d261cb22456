"""Triton kernels for the elementwise steps that sit between a layer's GEMMs.

- ``rope_cache``: RoPE on the q and k heads of the fused q/k/v projection, in place, and the new
  K and V written into the static KV cache at their positions (FP8-quantized for an FP8 cache),
  all in one pass. Run op by op this is a rotation that copies the whole projection, then one
  scatter each for K and V. At decode that is three kernel launches a layer; in a long prefill
  the compiled rotation alone took ~0.8 ms of an 8k prompt's layer, ten times its memory floor.
- ``silu_and_mul``: SwiGLU's ``silu(gate) * up`` over the fused gate/up projection, in bf16 or
  straight into FP8 for an FP8 down projection with a static input scale.
- ``add_rms_norm``: the residual add and the next RMSNorm, one row per program (FP8 output for
  an FP8 consumer, as above).

Each reads every element once and writes it once (memory-bound, so that is the whole cost), and
launches with programmatic dependent launch where the GPU has it (``executor.pdl``). Layouts
are the model's own: ``qkv [B, T, heads, D]`` with q heads first, then K, then V; cos and sin
``[T, D]`` with the halves repeated (Hugging Face's rotate-half RoPE: ``(x1, x2) -> (x1 cos -
x2 sin, x2 cos + x1 sin)``); the cache ``[batch, kv_heads, max_seq, D]``.

``available()`` says whether Triton and a GPU are here; ``executor.fused.Kernels.compiled`` then
routes the model's calls to these kernels. Tests run them in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch

from executor import pdl
from executor.triton_launch import launch
from executor.tritonlib import available, tl, triton

__all__ = ["available", "rope_cache", "silu_and_mul", "add_rms_norm"]


if triton is not None:
    FP8_MAX = tl.constexpr(448.0)  # the largest finite float8_e4m3fn

    # A serving iteration's chunk tokens follow its decodes, so their slots and blocks are views
    # at any offset and the token count is any number: specialized on alignment or on the count
    # (1, a multiple of 16, other), each new combination compiled inside a timed iteration.
    @triton.jit(do_not_specialize=["num_tokens"],
                do_not_specialize_on_alignment=["pos_ptr", "blocks_ptr"])  # fmt: skip
    def _rope_cache_kernel(
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        pos_ptr,
        blocks_ptr,
        k_cache_ptr,
        v_cache_ptr,
        num_tokens,
        num_q_heads,
        num_kv_heads,
        stride_qkv_b,
        stride_qkv_t,
        stride_qkv_h,
        stride_cos_t,
        stride_cache_b,
        stride_cache_h,
        stride_cache_s,
        cache_inv_scale,
        HALF: tl.constexpr,
        BLOCK_H: tl.constexpr,
        HAS_CACHE: tl.constexpr,
        CACHE_FP8: tl.constexpr,
        USE_PDL: tl.constexpr,
        PAGED: tl.constexpr = False,
    ):
        pdl.start(USE_PDL)
        token = tl.program_id(0)  # batch * num_tokens + position index
        b = token // num_tokens
        t = token % num_tokens
        heads = tl.program_id(1) * BLOCK_H + tl.arange(0, BLOCK_H)  # [BLOCK_H]
        d = tl.arange(0, HALF)  # [HALF]
        rotated_heads = num_q_heads + num_kv_heads
        head_ok = (heads < rotated_heads + num_kv_heads)[:, None]
        rotate = (heads < rotated_heads)[:, None]
        row = qkv_ptr + b * stride_qkv_b + t * stride_qkv_t + heads[:, None] * stride_qkv_h
        x1 = tl.load(row + d[None, :], mask=head_ok, other=0.0).to(tl.float32)
        x2 = tl.load(row + HALF + d[None, :], mask=head_ok, other=0.0).to(tl.float32)
        cos = tl.load(cos_ptr + t * stride_cos_t + d)[None, :]
        sin = tl.load(sin_ptr + t * stride_cos_t + d)[None, :]
        y1 = tl.where(rotate, x1 * cos - x2 * sin, x1)
        y2 = tl.where(rotate, x2 * cos + x1 * sin, x2)
        out_type = qkv_ptr.dtype.element_ty
        tl.store(row + d[None, :], y1.to(out_type), mask=head_ok & rotate)
        tl.store(row + HALF + d[None, :], y2.to(out_type), mask=head_ok & rotate)
        if HAS_CACHE:
            position = tl.load(pos_ptr + t)  # the slot in its cache row: a block's, if PAGED
            if PAGED:  # the token's block of a paged cache (qkv holds one row of tokens)
                cache_row = tl.load(blocks_ptr + t)
            else:
                cache_row = b
            is_k = (heads >= num_q_heads) & (heads < rotated_heads)
            is_v = (heads >= rotated_heads) & (heads < rotated_heads + num_kv_heads)
            kv_head = tl.where(is_k, heads - num_q_heads, heads - rotated_heads)
            slot = (
                cache_row * stride_cache_b
                + kv_head[:, None] * stride_cache_h
                + position * stride_cache_s
                + d[None, :]
            )
            if CACHE_FP8:
                y1 = tl.clamp(y1 * cache_inv_scale, -FP8_MAX, FP8_MAX)
                y2 = tl.clamp(y2 * cache_inv_scale, -FP8_MAX, FP8_MAX)
            y1 = y1.to(k_cache_ptr.dtype.element_ty)
            y2 = y2.to(k_cache_ptr.dtype.element_ty)
            tl.store(k_cache_ptr + slot, y1, mask=is_k[:, None])
            tl.store(k_cache_ptr + slot + HALF, y2, mask=is_k[:, None])
            tl.store(v_cache_ptr + slot, y1, mask=is_v[:, None])
            tl.store(v_cache_ptr + slot + HALF, y2, mask=is_v[:, None])

    @triton.jit
    def _silu_and_mul_kernel(
        gate_up_ptr,
        out_ptr,
        scale_ptr,
        width,
        stride_in,
        stride_out,
        TO_FP8: tl.constexpr,
        USE_PDL: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        row = tl.program_id(0)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < width
        gate = tl.load(gate_up_ptr + row * stride_in + cols, mask=ok, other=0.0).to(tl.float32)
        up = tl.load(gate_up_ptr + row * stride_in + width + cols, mask=ok, other=0.0)
        y = gate * tl.sigmoid(gate) * up.to(tl.float32)
        if TO_FP8:
            y = tl.clamp(y / tl.load(scale_ptr), -FP8_MAX, FP8_MAX)
        tl.store(out_ptr + row * stride_out + cols, y.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def add_rms_norm_row(
        residual_ptr,
        delta,
        weight_ptr,
        scale_ptr,
        out_residual_ptr,
        out_ptr,
        row,
        hidden,
        eps,
        TO_FP8: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        """One row: ``residual + delta`` (``delta`` a loaded block) stored, then its RMSNorm.
        Shared with the one-shot all-reduce (executor.allreduce), whose delta is the sum."""
        cols = tl.arange(0, BLOCK)
        ok = cols < hidden
        residual = tl.load(residual_ptr + row * hidden + cols, mask=ok, other=0.0)
        # Rounded as PyTorch rounds ``residual + delta``: the sum in the model's dtype.
        residual = (residual.to(tl.float32) + delta.to(tl.float32)).to(residual.dtype)
        tl.store(out_residual_ptr + row * hidden + cols, residual, mask=ok)
        x = residual.to(tl.float32)
        rms = tl.rsqrt(tl.sum(x * x, axis=0) / hidden + eps)
        normed = x * rms * tl.load(weight_ptr + cols, mask=ok, other=0.0).to(tl.float32)
        if TO_FP8:
            normed = tl.clamp(normed / tl.load(scale_ptr), -FP8_MAX, FP8_MAX)
        tl.store(out_ptr + row * hidden + cols, normed.to(out_ptr.dtype.element_ty), mask=ok)

    @triton.jit
    def _add_rms_norm_kernel(
        residual_ptr,
        delta_ptr,
        weight_ptr,
        scale_ptr,
        out_residual_ptr,
        out_ptr,
        hidden,
        eps,
        TO_FP8: tl.constexpr,
        USE_PDL: tl.constexpr,
        BLOCK: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        row = tl.program_id(0)
        cols = tl.arange(0, BLOCK)
        delta = tl.load(delta_ptr + row * hidden + cols, mask=cols < hidden, other=0.0)
        add_rms_norm_row(
            residual_ptr,
            delta,
            weight_ptr,
            scale_ptr,
            out_residual_ptr,
            out_ptr,
            row,
            hidden,
            eps,
            TO_FP8,
            BLOCK,
        )


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
    """Rotate the q and k heads of ``qkv [B, T, heads, D]`` in place and, with ``cache`` (an
    ``executor.kv_cache.KVCache``), write K and V at ``input_pos [T]``; with a
    ``PagedKVCache`` and ``blocks [T]`` (B = 1), token t's at slot ``input_pos[t]`` of block
    ``blocks[t]``: a serving iteration's new keys stored in the same pass. Returns ``qkv``."""
    batch, num_tokens, heads, head_dim = qkv.shape
    half = head_dim // 2
    if half & (half - 1):  # the kernel walks a half head in one power-of-two block
        from executor import fused

        return fused.rope_cache(qkv, cos, sin, num_q_heads, num_kv_heads, cache, input_pos,
                                blocks)  # fmt: skip
    assert qkv.stride(3) == 1 and cos.stride(1) == 1, "rope_cache: contiguous head_dim"
    block_h = min(16, triton.next_power_of_2(heads))
    if cache is not None:
        k_cache, v_cache = cache.k, cache.v
        strides = k_cache.stride()[:3]
        inv_scale = 1.0 / cache.scale
    else:
        k_cache = v_cache = qkv
        strides, inv_scale = (0, 0, 0), 1.0
    positions = input_pos if input_pos is not None else cos  # unread without a cache
    assert blocks is None or batch == 1, "rope_cache: a paged store takes one row of tokens"
    grid = (batch * num_tokens, triton.cdiv(heads, block_h))
    launch(
        _rope_cache_kernel,
        grid,
        qkv,
        cos,
        sin,
        positions,
        blocks if blocks is not None else positions,  # unread unless paged
        k_cache,
        v_cache,
        num_tokens,
        num_q_heads,
        num_kv_heads,
        qkv.stride(0),
        qkv.stride(1),
        qkv.stride(2),
        cos.stride(0),
        *strides,
        inv_scale,
        HALF=half,
        BLOCK_H=block_h,
        HAS_CACHE=cache is not None,
        CACHE_FP8=cache is not None and cache.is_fp8,
        PAGED=blocks is not None,
        **pdl.launch_options(),
    )
    return qkv


def silu_and_mul(gate_up: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
    """``silu(gate) * up`` of ``gate_up [..., 2I]`` -> ``[..., I]``: in gate_up's dtype, or
    float8_e4m3fn divided by ``scale`` (a static FP8 input scale of the next GEMM)."""
    width = gate_up.shape[-1] // 2
    rows = gate_up.reshape(-1, 2 * width)
    assert rows.stride(1) == 1, "silu_and_mul: contiguous last dimension"
    out_dtype = torch.float8_e4m3fn if scale is not None else gate_up.dtype
    out = torch.empty(rows.shape[0], width, dtype=out_dtype, device=gate_up.device)
    block = min(1024, triton.next_power_of_2(width))
    grid = (rows.shape[0], triton.cdiv(width, block))
    launch(
        _silu_and_mul_kernel,
        grid,
        rows,
        out,
        scale if scale is not None else out,
        width,
        rows.stride(0),
        out.stride(0),
        TO_FP8=scale is not None,
        BLOCK=block,
        **pdl.launch_options(),
    )
    return out.view(*gate_up.shape[:-1], width)


def add_rms_norm(
    residual: torch.Tensor,
    delta: torch.Tensor,
    weight: torch.Tensor,
    eps: float,
    scale: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """``residual + delta`` and its RMSNorm times ``weight``, one row per program: the normed
    output in the residual's dtype, or float8_e4m3fn divided by ``scale`` (a static FP8 input
    scale of the next GEMM)."""
    hidden = residual.shape[-1]
    residual, delta = residual.contiguous(), delta.contiguous()
    new_residual = torch.empty_like(residual)
    out_dtype = torch.float8_e4m3fn if scale is not None else residual.dtype
    normed = torch.empty(residual.shape, dtype=out_dtype, device=residual.device)
    launch(
        _add_rms_norm_kernel,
        (residual.numel() // hidden,),
        residual,
        delta,
        weight,
        scale if scale is not None else weight,
        new_residual,
        normed,
        hidden,
        eps,
        TO_FP8=scale is not None,
        BLOCK=triton.next_power_of_2(hidden),
        num_warps=4 if hidden <= 4096 else 8,
        **pdl.launch_options(),
    )
    return new_residual, normed
