"""Decode attention in Triton: one new token per sequence against its cached K/V (flash decoding).

A decode step's attention is small (at batch 1 and a 1k context, 4 MB of K/V a layer) and
latency-bound: the library kernel it replaces took ~8.5 us a layer on an H100 in two launches
(`studies/executor-h100/profile.log`), for ~1.4 us of memory traffic. This one:

1. splits each sequence's valid keys ``[0, kv_length)`` into chunks; one program takes one
   (sequence, K/V head, chunk) and all ``G = heads / kv_heads`` query heads that share the K/V
   head (GQA), so each K/V element is read once. Scores ``q K^T / sqrt(D)`` and ``P V`` run on
   the tensor cores (``tl.dot``, the G query rows padded to 16), with the running max and sum of
   the online softmax; each program writes its partial output and log-sum-exp;
2. a second, small kernel merges the chunks of each (sequence, head) by their log-sum-exp.

An FP8 cache is read as FP8 and its scale applied to the scores and the output, so an FP8 cache
halves the bytes instead of adding a dequantized copy. ``decode_attention(q, cache, kv_length)``
takes ``q [B, heads, 1, D]`` and the layer's ``KVCache``, and returns ``[B, heads, 1, D]``.
It is an option (``Kernels.compiled(decode_attention="triton")``), off by default until it has
been timed against the library kernel on each GPU.
"""

from __future__ import annotations

import torch

from executor import pdl
from executor.tritonlib import available, tl, triton

__all__ = ["available", "decode_attention", "split_count"]

MIN_KEYS_PER_SPLIT = 64
TARGET_PROGRAMS = 256  # about two per SM on an H100 (132) or H200 (132)


def split_count(batch: int, kv_heads: int, kv_length: int) -> int:
    """Chunks per sequence and K/V head: enough programs to fill the GPU, each with at least
    ``MIN_KEYS_PER_SPLIT`` keys."""
    wanted = -(-TARGET_PROGRAMS // (batch * kv_heads))
    return max(1, min(wanted, -(-kv_length // MIN_KEYS_PER_SPLIT)))


if triton is not None:

    @triton.jit
    def _partial_kernel(
        q_ptr,
        k_ptr,
        v_ptr,
        out_ptr,
        lse_ptr,
        kv_length,
        keys_per_split,
        num_splits,
        kv_heads,
        group,
        sm_scale,
        cache_scale,
        stride_qb,
        stride_qh,
        stride_kb,
        stride_kh,
        stride_ks,
        HEAD_DIM: tl.constexpr,
        BLOCK_G: tl.constexpr,
        BLOCK_S: tl.constexpr,
        USE_PDL: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        pair = tl.program_id(0)  # sequence * kv_heads + K/V head
        split = tl.program_id(1)
        b = pair // kv_heads
        kv_head = pair % kv_heads
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, HEAD_DIM)
        g_ok = g < group
        heads = kv_head * group + g  # the query heads of this K/V head
        q = tl.load(
            q_ptr + b * stride_qb + heads[:, None] * stride_qh + d[None, :],
            mask=g_ok[:, None],
            other=0.0,
        )
        dot_type = q_ptr.dtype.element_ty  # an FP8 cache is widened to the query's dtype
        base = b * stride_kb + kv_head * stride_kh
        start = split * keys_per_split
        stop = tl.minimum(start + keys_per_split, kv_length)
        running_max = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros((BLOCK_G,), dtype=tl.float32)
        acc = tl.zeros((BLOCK_G, HEAD_DIM), dtype=tl.float32)
        for s0 in range(start, stop, BLOCK_S):
            s = s0 + tl.arange(0, BLOCK_S)
            s_ok = s < stop
            offsets = base + s[:, None] * stride_ks + d[None, :]
            k = tl.load(k_ptr + offsets, mask=s_ok[:, None], other=0.0).to(dot_type)
            v = tl.load(v_ptr + offsets, mask=s_ok[:, None], other=0.0).to(dot_type)
            scores = tl.dot(q, tl.trans(k)) * (sm_scale * cache_scale)  # [BLOCK_G, BLOCK_S]
            scores = tl.where(s_ok[None, :], scores, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(scores, axis=1))
            correction = tl.exp(running_max - new_max)
            p = tl.exp(scores - new_max[:, None])
            running_sum = running_sum * correction + tl.sum(p, axis=1)
            acc = acc * correction[:, None] + tl.dot(p.to(dot_type), v)
            running_max = new_max
        out = acc * cache_scale / running_sum[:, None]
        row = (b * kv_heads * group + heads) * num_splits + split  # [B, heads, splits]
        tl.store(out_ptr + row[:, None] * HEAD_DIM + d[None, :], out, mask=g_ok[:, None])
        tl.store(lse_ptr + row, running_max + tl.log(running_sum), mask=g_ok)

    @triton.jit
    def _merge_kernel(
        partial_ptr,
        lse_ptr,
        out_ptr,
        num_splits,
        HEAD_DIM: tl.constexpr,
        BLOCK_SPLITS: tl.constexpr,
        USE_PDL: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        row = tl.program_id(0)  # sequence * heads + head
        splits = tl.arange(0, BLOCK_SPLITS)
        ok = splits < num_splits
        lse = tl.load(lse_ptr + row * num_splits + splits, mask=ok, other=float("-inf"))
        weights = tl.exp(lse - tl.max(lse, axis=0))
        weights = weights / tl.sum(weights, axis=0)
        d = tl.arange(0, HEAD_DIM)
        parts = tl.load(
            partial_ptr + (row * num_splits + splits)[:, None] * HEAD_DIM + d[None, :],
            mask=ok[:, None],
            other=0.0,
        )
        out = tl.sum(parts * weights[:, None], axis=0)
        tl.store(out_ptr + row * HEAD_DIM + d, out.to(out_ptr.dtype.element_ty))


def decode_attention(q: torch.Tensor, cache, kv_length: int) -> torch.Tensor:
    """Attention of ``q [B, heads, 1, D]`` over the first ``kv_length`` positions of ``cache``
    (``executor.model.KVCache``, bf16 or FP8), every position valid. Returns ``[B, heads, 1, D]``
    in q's dtype."""
    batch, heads, _, head_dim = q.shape
    k_cache, v_cache = cache.k[:batch], cache.v[:batch]
    kv_heads = k_cache.shape[1]
    group = heads // kv_heads
    keys_per_split = -(-kv_length // split_count(batch, kv_heads, kv_length))
    splits = -(-kv_length // keys_per_split)  # no chunk left empty
    partial = torch.empty(batch * heads * splits, head_dim, dtype=torch.float32, device=q.device)
    lse = torch.empty(batch * heads * splits, dtype=torch.float32, device=q.device)
    _partial_kernel[(batch * kv_heads, splits)](
        q,
        k_cache,
        v_cache,
        partial,
        lse,
        kv_length,
        keys_per_split,
        splits,
        kv_heads,
        group,
        head_dim**-0.5,
        cache.scale if cache.is_fp8 else 1.0,
        q.stride(0),
        q.stride(1),
        k_cache.stride(0),
        k_cache.stride(1),
        k_cache.stride(2),
        HEAD_DIM=head_dim,
        BLOCK_G=max(16, triton.next_power_of_2(group)),
        BLOCK_S=64,
        **pdl.launch_options(),
    )
    out = torch.empty(batch, heads, 1, head_dim, dtype=q.dtype, device=q.device)
    _merge_kernel[(batch * heads,)](
        partial,
        lse,
        out,
        splits,
        HEAD_DIM=head_dim,
        BLOCK_SPLITS=triton.next_power_of_2(splits),
        num_warps=4 if splits <= 64 else 8,
        **pdl.launch_options(),
    )
    return out
