"""Unfused causal attention, as the cost model's ``attention: naive`` prices it.

Without a fused (FlashAttention-class) kernel, attention materializes each head's score matrix
in HBM. The cost model (``simulator.cost.ops``) prices four passes over it, two bytes an
element each: the scores' GEMM writes it, the softmax reads it and writes the probabilities, the
value GEMM reads them. This runs exactly those passes:

- q is scaled before its GEMM (a pass over ``T x D``, not ``T x T``), and the query heads of a
  K/V head ride the rows of one GEMM (GQA without repeating K and V);
- one Triton kernel soft-maxes each row in place, under the causal mask it works out from the
  row's position: it reads only the visible scores and writes zeros past them, so no mask is
  read and no separate masking pass runs.

A PyTorch composite of the same math (scale, ``masked_fill``, ``softmax``) moves about 17 bytes
an element (`studies/attention/NOTES.md`); it stays as the fallback where Triton or a GPU is
missing, or a row is too long for one program.
"""

from __future__ import annotations

import torch

from executor.triton_launch import launch
from executor.tritonlib import available, tl, triton

__all__ = ["naive_causal_attention", "causal_softmax_"]

MAX_KEYS = 32768  # a row of scores in one program (fp32 registers), beyond it PyTorch's softmax

if triton is not None:

    @triton.jit
    def _causal_softmax_kernel(scores_ptr, queries, keys, BLOCK: tl.constexpr):
        row = tl.program_id(0)
        # Rows are query tokens in order within each head (and head group): query t of a chunk
        # of ``queries`` sees the keys up to its own position, ``keys - queries + t``.
        visible = row % queries + keys - queries + 1
        cols = tl.arange(0, BLOCK)
        at = scores_ptr + row.to(tl.int64) * keys + cols
        x = tl.load(at, mask=cols < visible, other=float("-inf")).to(tl.float32)
        x = tl.exp(x - tl.max(x, axis=0))
        p = x / tl.sum(x, axis=0)
        tl.store(at, p.to(scores_ptr.dtype.element_ty), mask=cols < keys)


def causal_softmax_(scores: torch.Tensor) -> torch.Tensor:
    """Soft-max each row of ``scores [..., queries, keys]`` (contiguous) in place, row ``t`` of
    each matrix over its first ``keys - queries + t + 1`` entries (zeros after them)."""
    queries, keys = scores.shape[-2:]
    assert scores.is_contiguous(), "causal_softmax_: contiguous scores"
    if available() and scores.is_cuda and keys <= MAX_KEYS:
        block = triton.next_power_of_2(keys)
        warps = 4 if block <= 1024 else (8 if block <= 4096 else 16)
        launch(_causal_softmax_kernel, (scores.numel() // keys,), scores, queries, keys,
               BLOCK=block, num_warps=warps)  # fmt: skip
        return scores
    hidden = torch.ones(queries, keys, dtype=torch.bool, device=scores.device)
    hidden = hidden.triu(keys - queries + 1)
    scores.copy_(scores.masked_fill(hidden, float("-inf")).softmax(dim=-1))
    return scores


def naive_causal_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """Causal attention of ``q [B, heads, T, D]`` over ``k, v [B, kv_heads, T, D]`` with the
    score matrix materialized: ``[B, heads, T, D]``."""
    batch, heads, length, head_dim = q.shape
    kv_heads = k.shape[1]
    group = heads // kv_heads
    # [B, kv_heads, group x T, D]: a K/V head's query heads one after another, each T rows.
    scaled = (q * head_dim**-0.5).reshape(batch, kv_heads, group * length, head_dim)
    scores = causal_softmax_(torch.matmul(scaled, k.transpose(-1, -2)).view(
        batch, kv_heads, group, length, k.shape[2]))  # fmt: skip
    out = torch.matmul(scores.view(batch, kv_heads, group * length, -1), v)
    return out.view(batch, heads, length, head_dim)
