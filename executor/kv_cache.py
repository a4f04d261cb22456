"""The K/V caches of one attention layer.

- ``KVCache``: a static cache, one row of ``max_seq_length`` slots per sequence: what a step of
  fixed shape (``tune measure``, the decode graphs of ``executor.engine``) reads and writes.
- ``PagedKVCache``: blocks of ``block_size`` slots shared by all sequences, each holding a
  table of its blocks (``executor.ragged``: the serving loop's iterations, as vLLM, SGLang and
  TensorRT-LLM keep their caches).

Both store bf16 or FP8 (one per-tensor scale), and both carry the counters the one-kernel
decode attention (``executor.decode_attention``) merges its key chunks with.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = ["KVCache", "PagedKVCache"]


class KVCache(nn.Module):
    """Static K/V storage of one layer: ``[max_batch, num_kv_heads, max_seq_length, head_dim]``.

    ``dtype`` float8_e4m3fn stores an FP8 cache with one per-tensor scale per K and V (a memory
    saving; values are dequantized to the compute dtype before attention).
    """

    def __init__(
        self,
        max_batch: int,
        num_kv_heads: int,
        max_seq_length: int,
        head_dim: int,
        dtype: torch.dtype,
        device: torch.device | str | None = None,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        shape = (max_batch, num_kv_heads, max_seq_length, head_dim)
        self.register_buffer("k", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        self.register_buffer("v", torch.zeros(shape, dtype=dtype, device=device), persistent=False)
        # Per (sequence, K/V head): the decode-attention kernel's count of finished key chunks
        # (executor.decode_attention), zero between steps. Here so a CUDA graph keeps them.
        counters = torch.zeros(max_batch * num_kv_heads, dtype=torch.int32, device=device)
        self.register_buffer("split_counters", counters, persistent=False)
        # Sequence b's cache is row b: the decode kernel's block table of a static cache.
        rows = torch.arange(max_batch, dtype=torch.int32, device=device)[:, None]
        self.register_buffer("own_rows", rows, persistent=False)
        self.is_fp8 = dtype == torch.float8_e4m3fn
        self.scale = scale

    def write(self, input_pos: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store k, v ``[B, kv_heads, T, D]`` at positions ``input_pos [T]``."""
        batch = k.shape[0]
        if self.is_fp8:
            # index_copy_ has no float8 kernel: move the bytes as uint8.
            k_fp8 = (k.float() / self.scale).clamp(-448, 448).to(self.k.dtype)
            v_fp8 = (v.float() / self.scale).clamp(-448, 448).to(self.v.dtype)
            self.k[:batch].view(torch.uint8).index_copy_(2, input_pos, k_fp8.view(torch.uint8))
            self.v[:batch].view(torch.uint8).index_copy_(2, input_pos, v_fp8.view(torch.uint8))
        else:
            self.k[:batch].index_copy_(2, input_pos, k)
            self.v[:batch].index_copy_(2, input_pos, v)

    def read(
        self, batch: int, dtype: torch.dtype, kv_length: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """The first ``batch`` sequences' cache, ``[batch, kv_heads, kv_length or
        max_seq_length, D]``, in the compute ``dtype``."""
        k_cache, v_cache = self.k[:batch], self.v[:batch]
        if kv_length is not None:
            k_cache, v_cache = k_cache[:, :, :kv_length], v_cache[:, :, :kv_length]
        if self.is_fp8:
            return k_cache.to(dtype) * self.scale, v_cache.to(dtype) * self.scale
        return k_cache, v_cache


class PagedKVCache:
    """K/V of one layer in blocks: ``k, v [num_blocks, kv_heads, block_size, head_dim]``.

    ``float8_e4m3fn`` stores FP8 with one per-tensor ``scale`` (as ``KVCache``). Which
    blocks a sequence holds is the caller's (``RaggedBatch.tables``)."""

    def __init__(self, num_blocks: int, kv_heads: int, block_size: int, head_dim: int,
                 dtype: torch.dtype, device: torch.device | str, scale: float = 1.0):  # fmt: skip
        shape = (num_blocks, kv_heads, block_size, head_dim)
        self.k = torch.zeros(shape, dtype=dtype, device=device)
        self.v = torch.zeros(shape, dtype=dtype, device=device)
        self.block_size = block_size
        self.is_fp8 = dtype == torch.float8_e4m3fn
        self.scale = scale
        # The decode kernel's count of finished key chunks per (sequence, K/V head): sized for
        # the most sequences one iteration may decode (``ensure_counters``).
        self.split_counters = torch.zeros(0, dtype=torch.int32, device=device)

    def ensure_counters(self, pairs: int) -> None:
        if self.split_counters.numel() < pairs:
            self.split_counters = torch.zeros(pairs, dtype=torch.int32, device=self.k.device)

    def write(self, blocks: torch.Tensor, offsets: torch.Tensor, k: torch.Tensor,
              v: torch.Tensor) -> None:  # fmt: skip
        """Store ``k, v [N, kv_heads, D]`` at token slots ``(blocks[i], offsets[i])``."""
        if self.is_fp8:  # index_put_ has no float8 kernel: move the bytes as uint8
            k = (k.float() / self.scale).clamp(-448, 448).to(self.k.dtype).view(torch.uint8)
            v = (v.float() / self.scale).clamp(-448, 448).to(self.v.dtype).view(torch.uint8)
            self.k.view(torch.uint8)[blocks, :, offsets] = k
            self.v.view(torch.uint8)[blocks, :, offsets] = v
        else:
            self.k[blocks, :, offsets] = k
            self.v[blocks, :, offsets] = v

    def gather(self, table: torch.Tensor, length: int, dtype: torch.dtype):
        """One sequence's first ``length`` keys and values ``[1, kv_heads, length, D]`` from its
        block ``table``, in the compute ``dtype``."""
        used = table[: -(-length // self.block_size)]

        def one(cache: torch.Tensor) -> torch.Tensor:
            if self.is_fp8:  # no float8 indexing kernel: gather the bytes
                blocks = cache.view(torch.uint8)[used].view(cache.dtype)
            else:
                blocks = cache[used]  # [blocks, kv_heads, block_size, D]
            out = blocks.transpose(0, 1).reshape(1, cache.shape[1], -1, cache.shape[3])
            out = out[:, :, :length].to(dtype)
            return out * self.scale if self.is_fp8 else out

        return one(self.k), one(self.v)
