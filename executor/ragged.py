"""One serving iteration on the model: sequences at different positions in one batch, prompt
chunks beside decodes, K/V in a paged cache.

A serving engine's iteration holds decodes (one new token each, every sequence at its own
length) and prompt chunks (a prompt's next tokens, from where its earlier chunks stopped).
``RaggedBatch`` lays them out as one row of ``N`` tokens, the decodes first, so the GEMMs, norms
and MLP run once over all of them, as the cost model's mixed step prices them; only attention
splits:

- decodes attend over their own cached keys, each to its own length;
- a chunk attends causally over its prompt so far: the fresh keys alone for a first chunk
  (the flash kernel), its cached keys for a later one.

K and V live in a ``PagedKVCache``: blocks of ``block_size`` token slots shared by all sequences,
each sequence holding a table of its blocks, as vLLM, SGLang and TensorRT-LLM keep them (and as
the simulator's scheduler admits requests by blocks). On a GPU a decode reads its blocks in the
one-kernel decode attention (``executor.decode_attention``, through the table); elsewhere, and
for chunks, a sequence's blocks are gathered into one tensor for PyTorch's SDPA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from executor.fused import causal_attention

__all__ = ["PagedKVCache", "RaggedBatch", "ragged_attention", "setup_paged_caches"]


class PagedKVCache:
    """K/V of one layer in blocks: ``k, v [num_blocks, kv_heads, block_size, head_dim]``.

    ``float8_e4m3fn`` stores FP8 with one per-tensor ``scale`` (as ``model.KVCache``). Which
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


def setup_paged_caches(model, *, num_blocks: int, block_size: int,
                       kv_dtype: torch.dtype | None = None, kv_scale: float = 1.0,
                       max_seq_length: int) -> None:  # fmt: skip
    """A ``PagedKVCache`` of ``num_blocks`` blocks in every layer of ``model`` (an
    ``executor.model.Llama``), for ``forward(..., ragged=)``, and its RoPE table up to
    ``max_seq_length``."""
    model.free_caches()
    device = model.embed_tokens.weight.device
    dtype = kv_dtype or model.layers[0].attention_norm.weight.dtype
    for layer in model.layers:
        attn = layer.attention
        attn.kv_cache = PagedKVCache(num_blocks, attn.num_kv_heads, block_size, attn.head_dim,
                                     dtype, device, scale=kv_scale)  # fmt: skip
    if model.rope_cos.shape[0] < max_seq_length:
        model.set_rope(max_seq_length)


@dataclass
class RaggedBatch:
    """One iteration's tokens: ``decodes`` sequences first (one token each), then the chunks.

    ``positions [N]``: each token's position in its sequence; ``blocks, offsets [N]``: its K/V
    slot; ``tables [S, max_blocks]``: the block table of each sequence of the batch (a decode's
    row is its index; a chunk names its row); ``chunks``: (first token, length, table row,
    start position) per prompt chunk; ``sample_rows``: the tokens whose logits are sampled (each
    decode, and the last token of a chunk that completes its prompt)."""

    positions: torch.Tensor
    blocks: torch.Tensor
    offsets: torch.Tensor
    tables: torch.Tensor
    decodes: int
    chunks: list[tuple[int, int, int, int]]
    sample_rows: torch.Tensor
    max_length: int  # the longest sequence's cached length after this iteration


def ragged_attention(attention, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     batch: RaggedBatch, kernels) -> torch.Tensor:  # fmt: skip
    """Attention of one ``executor.model.Attention`` layer over ``batch``: ``qkv [1, N, heads +
    2 kv_heads, D]`` un-rotated, ``cos, sin [N, D]``. Stores every token's K/V in the layer's
    ``PagedKVCache``. Returns ``[1, N, heads * D]``."""
    cache: PagedKVCache = attention.kv_cache
    heads, kv_heads, d = attention.num_heads, attention.num_kv_heads, attention.head_dim
    n_dec = batch.decodes
    paged = kernels.paged_decode(cache) if n_dec else None
    first = n_dec if paged is not None else 0  # tokens the one-kernel decode rotates itself
    out = torch.empty(1, qkv.shape[1], heads * d, dtype=qkv.dtype, device=qkv.device)
    if paged is not None:
        out[0, :n_dec] = paged(qkv[0, :n_dec, None], cos[:n_dec], sin[:n_dec],
                               batch.positions[:n_dec], cache, batch.tables[:n_dec],
                               batch.max_length, heads)[:, 0]  # fmt: skip
    rest = qkv[:, first:]
    if rest.shape[1]:
        kernels.rope_cache(rest, cos[first:], sin[first:], heads, kv_heads)
        k = rest[0, :, heads : heads + kv_heads]
        v = rest[0, :, heads + kv_heads :]
        cache.write(batch.blocks[first:], batch.offsets[first:], k, v)
    q = qkv[0, :, :heads]  # [N, heads, D], rotated
    if paged is None and n_dec:
        out[0, :n_dec] = _decodes(q[:n_dec], cache, batch, kv_heads).reshape(n_dec, heads * d)
    for start_token, length, row, start in batch.chunks:
        rows = slice(start_token, start_token + length)
        q_c = q[rows].transpose(0, 1)[None]  # [1, heads, L, D]
        if start == 0:  # the whole prompt so far is this chunk: its fresh keys, causally
            k_c = qkv[0, rows, heads : heads + kv_heads].transpose(0, 1)[None]
            v_c = qkv[0, rows, heads + kv_heads :].transpose(0, 1)[None]
            o = causal_attention(q_c, k_c, v_c, kernels.prefill_backend)
        else:
            k_c, v_c = cache.gather(batch.tables[row], start + length, q.dtype)
            visible = torch.arange(start + length, device=q.device)[None, :] <= (
                start + torch.arange(length, device=q.device)[:, None]
            )
            o = F.scaled_dot_product_attention(q_c, k_c, v_c, attn_mask=visible, enable_gqa=True)
        out[0, rows] = o[0].transpose(0, 1).reshape(length, heads * d)
    return out


def _decodes(q: torch.Tensor, cache: PagedKVCache, batch: RaggedBatch, kv_heads: int):
    """The decodes' attention with each sequence's keys gathered (no GPU kernel): ``q [B,
    heads, D]`` -> ``[B, heads, D]``."""
    outputs = []
    for i in range(q.shape[0]):
        length = int(batch.positions[i]) + 1
        k, v = cache.gather(batch.tables[i], length, q.dtype)  # [1, kv_heads, L, D]
        o = F.scaled_dot_product_attention(q[i][None, :, None], k, v, enable_gqa=True)
        outputs.append(o[0, :, 0])
    return torch.stack(outputs)
