"""One serving iteration on the model: sequences at different positions in one batch, prompt
chunks beside decodes, K/V in a paged cache.

A serving engine's iteration holds decodes (one new token each, every sequence at its own
length) and prompt chunks (a prompt's next tokens, from where its earlier chunks stopped).
``RaggedBatch`` lays them out as one row of ``N`` tokens, the decodes first, so the GEMMs, norms
and MLP run once over all of them, as the cost model's mixed step prices them; only attention
splits:

- decodes attend over their own cached keys, each to its own length;
- a chunk attends causally over its prompt so far: the fresh keys alone for a first chunk
  (the flash kernel), its cached keys for a later one (causal from the bottom right, a bias
  that lets SDPA run a fused kernel instead of reading a materialized mask).

K and V live in a ``PagedKVCache`` (``executor.kv_cache``): blocks of ``block_size`` token slots shared by all sequences,
each sequence holding a table of its blocks, as vLLM, SGLang and TensorRT-LLM keep them (and as
the simulator's scheduler admits requests by blocks). On a GPU a decode reads its blocks in the
one-kernel decode attention (``executor.decode_attention``, through the table); elsewhere, and
for chunks, a sequence's blocks are gathered into one tensor for PyTorch's SDPA.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from executor.fused import causal_attention
from executor.kv_cache import PagedKVCache

__all__ = ["ATTENTION_BUCKET", "RaggedBatch", "ragged_attention", "setup_paged_caches"]

# cuDNN's fused attention, PyTorch's pick for causal prefill on Hopper, builds an execution plan
# for each new sequence length: tens of milliseconds on the host, while the GPU waits. A serving
# run meets a new prompt length in nearly every iteration with a chunk. A first chunk's q, k and
# v are zero-padded at the end to a multiple of this, so that the plans are few and all built
# by the warm-up; the result is exact, as under the causal mask no real query sees a padded key.
ATTENTION_BUCKET = 128


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
    """One iteration's tokens: ``decodes`` sequences first (``query`` tokens each: one, or a
    speculative verify's last token and drafts), then the chunks.

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
    query: int = 1
    keep_hidden: bool = False  # the model keeps every token's final state (an EAGLE head's)


def ragged_attention(attention, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     batch: RaggedBatch, kernels,
                     out: torch.Tensor | None = None) -> torch.Tensor:  # fmt: skip
    """Attention of one ``executor.model.Attention`` layer over ``batch``: ``qkv [1, N, heads +
    2 kv_heads, D]`` un-rotated, ``cos, sin [N, D]``. Stores every token's K/V in the layer's
    ``PagedKVCache``. Returns ``[1, N, heads * D]``, written into ``out`` if given."""
    cache: PagedKVCache = attention.kv_cache
    heads, kv_heads, d = attention.num_heads, attention.num_kv_heads, attention.head_dim
    n_dec, query = batch.decodes, batch.query
    n_q = n_dec * query  # the decodes' tokens
    paged = kernels.paged_decode(cache) if n_dec else None
    fused = paged is not None and query == 1  # one new token: the kernel rotates and stores it
    first = n_dec if fused else 0
    if out is None:
        out = torch.empty(1, qkv.shape[1], heads * d, dtype=qkv.dtype, device=qkv.device)
    if fused:  # written in place: the decodes' rows of ``out``
        paged(qkv[0, :n_dec, None], cos[:n_dec], sin[:n_dec], batch.positions[:n_dec], cache,
              batch.tables[:n_dec], batch.max_length, heads,
              out=out[0, :n_dec].view(n_dec, 1, heads * d))  # fmt: skip
    rest = qkv[:, first:]
    if rest.shape[1]:  # rotated, and its K/V stored in their blocks, in one pass
        kernels.rope_cache(rest, cos[first:], sin[first:], heads, kv_heads, cache,
                           batch.offsets[first:], blocks=batch.blocks[first:])  # fmt: skip
    q = qkv[0, :, :heads]  # [N, heads, D], rotated
    if paged is not None and not fused:  # a verify: query tokens per sequence, K/V stored
        paged(qkv[0, :n_q].view(n_dec, query, *qkv.shape[2:]), None, None,
              batch.positions[:n_q:query], cache, batch.tables[:n_dec], batch.max_length, heads,
              out=out[0, :n_q].view(n_dec, query, heads * d))  # fmt: skip
    elif paged is None and n_dec:
        out[0, :n_q] = _decodes(q[:n_q], cache, batch, kv_heads).reshape(n_q, heads * d)
    for start_token, length, row, start in batch.chunks:
        rows = slice(start_token, start_token + length)
        if start == 0:  # the whole prompt so far is this chunk: its fresh keys, causally
            bucket = ATTENTION_BUCKET if q.is_cuda else 1
            o = _first_chunk_attention(qkv[0, rows], heads, kv_heads, kernels.prefill_backend,
                                       bucket)  # fmt: skip
        else:
            q_c = q[rows].transpose(0, 1)[None]  # [1, heads, L, D]
            k_c, v_c = cache.gather(batch.tables[row], start + length, q.dtype)
            o = F.scaled_dot_product_attention(q_c, k_c, v_c, enable_gqa=True,
                                               attn_mask=causal_lower_right(length, start + length))  # fmt: skip
        out[0, rows].view(length, heads, d).copy_(o[0].transpose(0, 1))  # one copy
    return out


def _first_chunk_attention(rows: torch.Tensor, heads: int, kv_heads: int, backend: str,
                           bucket: int) -> torch.Tensor:  # fmt: skip
    """Causal attention of a prompt's first chunk from its fused projection ``rows [L, heads +
    2 kv_heads, D]`` (rotated): ``[1, heads, L, D]``. Run at ``L`` rounded up to a multiple of
    ``bucket``: one copy of the rows, so that every chunk of a bucket has the same shape and
    strides, which is what a plan is built for."""
    length = rows.shape[0]
    if bucket > 1:
        rows = F.pad(rows, (0, 0, 0, 0, 0, -length % bucket))
    q, k, v = rows.transpose(0, 1)[None].split([heads, kv_heads, kv_heads], dim=1)
    return causal_attention(q, k, v, backend)[..., :length, :]


def _decodes(q: torch.Tensor, cache: PagedKVCache, batch: RaggedBatch, kv_heads: int):
    """The decodes' attention with each sequence's keys gathered (no GPU kernel): ``q [B *
    query, heads, D]`` -> the same shape, each token seeing the keys up to its own position."""
    outputs, query = [], batch.query
    for i in range(batch.decodes):
        first = int(batch.positions[i * query])
        k, v = cache.gather(batch.tables[i], first + query, q.dtype)  # [1, kv_heads, L, D]
        q_i = q[i * query : (i + 1) * query].transpose(0, 1)[None]  # [1, heads, query, D]
        o = F.scaled_dot_product_attention(q_i, k, v, enable_gqa=True,
                                           attn_mask=causal_lower_right(query, first + query))  # fmt: skip
        outputs.append(o[0].transpose(0, 1))
    return torch.cat(outputs)
