"""One serving iteration on the model: sequences at different positions in one batch, prompt
chunks beside decodes, K/V in a paged cache.

A serving engine's iteration holds decodes (one new token each, every sequence at its own
length) and prompt chunks (a prompt's next tokens, from where its earlier chunks stopped).
``RaggedBatch`` lays them out as one row of ``N`` tokens, the decodes first, so the GEMMs, norms
and MLP run once over all of them, as the cost model's mixed step prices them; only attention
splits:

- decodes attend over their own cached keys, each to its own length;
- a chunk attends causally over its prompt so far: the fresh keys alone for a first chunk
  (cuDNN's fused kernel on Hopper), its cached keys too for a later one (cut into shapes that
  kernel takes and merged, ``executor.prefix_attention``).

K and V live in a ``PagedKVCache`` (``executor.kv_cache``): blocks of ``block_size`` token slots shared by all sequences,
each sequence holding a table of its blocks, as vLLM, SGLang and TensorRT-LLM keep them (and as
the simulator's scheduler admits requests by blocks). On a GPU a decode reads its blocks in the
one-kernel decode attention (``executor.decode_attention``, through the table); elsewhere, and
for chunks, a sequence's blocks are gathered into one tensor for PyTorch's SDPA.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from executor.fused import causal_attention
from executor.kv_cache import PagedKVCache
from executor.prefix_attention import MIN_QUERIES, PREFIX_BUCKET, LaterChunk, pays_on

__all__ = [
    "ATTENTION_BUCKET",
    "IterationAttention",
    "RaggedBatch",
    "chunks_alone",
    "setup_paged_caches",
    "to_device",
]

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


def to_device(device: torch.device, *arrays: np.ndarray) -> list[torch.Tensor]:
    """Integer arrays on ``device`` (int64, flattened) in one copy, not one each (a serving
    iteration's inputs): a copy from pageable memory waits for the GPU. Each starts on a
    16-byte boundary, as Triton compiles a kernel once for aligned pointers and again for
    others."""
    sizes = [array.size for array in arrays]
    starts = np.concatenate([[0], np.cumsum([-(-n // 2) * 2 for n in sizes])])
    packed = np.zeros(starts[-1], dtype=np.int64)
    for array, start, n in zip(arrays, starts, sizes, strict=False):
        packed[start : start + n] = array.ravel()
    on_device = torch.from_numpy(packed).to(device, non_blocking=True)
    return [on_device[start : start + n] for start, n in zip(starts, sizes, strict=False)]


def chunks_alone(batch: RaggedBatch, token_ids: torch.Tensor):
    """The prompt chunks of ``batch`` alone, with their token ids: a drafter's prefill of the
    prompt tokens its target runs."""
    first, n = batch.decodes * batch.query, batch.decodes
    chunks = [(at - first, length, row - n, start) for at, length, row, start in batch.chunks]
    alone = RaggedBatch(positions=batch.positions[first:], blocks=batch.blocks[first:],
                        offsets=batch.offsets[first:], tables=batch.tables[n:], decodes=0,
                        chunks=chunks, sample_rows=batch.sample_rows[:0],
                        max_length=batch.max_length)  # fmt: skip
    return alone, token_ids[:, first:]


class IterationAttention:
    """One serving iteration's attention over ``batch``, laid out once and run layer by layer:
    ``attend = IterationAttention(layers[0].attention, qkv, cos, sin, batch, kernels, out)``,
    then ``attend(layer.attention)`` for each layer once its q/k/v are in ``qkv [1, N, heads +
    2 kv_heads, D]`` (un-rotated; ``run(layer.attention, qkv)`` copies them in), with ``cos, sin
    [N, D]``. Each stores every token's K/V in the layer's ``PagedKVCache`` and writes its
    output ``[1, N, heads * D]`` into ``out`` (allocated once if not given).

    Every layer's attention reads the same rows of the same buffers (``qkv``, the RoPE tables,
    ``out``) at the same positions and block tables; only its cache differs. So the views, the
    decode kernel's chunking and scratch, and a first chunk's padded inputs are the host's work
    once an iteration, not once a layer. Between the piecewise graphs' replays, and in an eager
    iteration, that work is the host's share of a layer, and where the host's work outruns the
    GPU's it sets the step's time (``IterationRecord.issued_s``).

    The order is the layer's: the decodes' kernel rotates and stores their new K/V itself; then
    the other tokens are rotated and stored (a verify's, the chunks'); then a verify's queries
    read the cache; then each chunk attends. ``rotated``: every token's q is rotated and its
    K/V stored already (the piecewise graphs' pieces do both), so the decodes' queries read the
    cache as a verify's do."""

    def __init__(self, attention, qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                 batch: RaggedBatch, kernels, out: torch.Tensor | None = None,
                 rotated: bool = False) -> None:  # fmt: skip
        heads, kv_heads, d = attention.num_heads, attention.num_kv_heads, attention.head_dim
        n_dec, query = batch.decodes, batch.query
        n_q = n_dec * query  # the decodes' tokens
        prepare = kernels.paged_decode(attention.kv_cache) if n_dec else None
        # One new token, not yet rotated: the kernel rotates and stores it.
        fused = prepare is not None and query == 1 and not rotated
        first = n_dec if fused else 0
        if out is None:
            out = torch.empty(1, qkv.shape[1], heads * d, dtype=qkv.dtype, device=qkv.device)
        self.qkv, self.out, self.batch, self.kernels = qkv, out, batch, kernels
        self.kv_heads = kv_heads
        self.fused = self.cached = None
        if fused:  # written in place: the decodes' rows of ``out``
            self.fused = prepare(qkv[0, :n_dec, None], cos[:n_dec], sin[:n_dec],
                                 batch.positions[:n_dec], batch.tables[:n_dec], batch.max_length,
                                 heads, out=out[0, :n_dec].view(n_dec, 1, heads * d))  # fmt: skip
        elif prepare is not None:  # query tokens per sequence, their K/V stored first
            self.cached = prepare(qkv[0, :n_q].view(n_dec, query, *qkv.shape[2:]), None, None,
                                  batch.positions[:n_q:query], batch.tables[:n_dec],
                                  batch.max_length, heads,
                                  out=out[0, :n_q].view(n_dec, query, heads * d),
                                  rotated=True)  # fmt: skip
        self.sdpa_decodes = prepare is None and n_dec > 0
        rest = qkv[:, first:]  # rotated, and its K/V stored in their blocks, in one pass
        stores = rest.shape[1] and not rotated
        self.rope = (rest, cos[first:], sin[first:], heads, kv_heads) if stores else None
        self.slots = batch.offsets[first:], batch.blocks[first:]
        self.q = qkv[0, :, :heads]  # [N, heads, D], rotated
        bucket = ATTENTION_BUCKET if qkv.is_cuda else 1
        self.chunks = [_Chunk(qkv, out, chunk, heads, kv_heads, kernels.prefill_backend, bucket)
                       for chunk in batch.chunks]  # fmt: skip

    def run(self, attention, qkv: torch.Tensor) -> torch.Tensor:
        """``attention``'s layer over its ``qkv``, copied into the laid-out buffer first unless
        it is that buffer (the piecewise graphs write it in place)."""
        if qkv.data_ptr() != self.qkv.data_ptr():
            self.qkv.copy_(qkv)
        return self(attention)

    def __call__(self, attention) -> torch.Tensor:
        cache: PagedKVCache = attention.kv_cache
        out, batch = self.out, self.batch
        if self.fused is not None:
            self.fused(cache)
        if self.rope is not None:
            offsets, blocks = self.slots
            self.kernels.rope_cache(*self.rope, cache, offsets, blocks=blocks)
        if self.cached is not None:
            self.cached(cache)
        elif self.sdpa_decodes:
            n_q = batch.decodes * batch.query
            out[0, :n_q] = _decodes(self.q[:n_q], cache, batch, self.kv_heads).reshape(n_q, -1)
        for chunk in self.chunks:
            chunk(cache, batch)
        return out


class _Chunk:
    """One prompt chunk's attention (``chunk``: as ``RaggedBatch.chunks``) from ``qkv`` into
    ``out``, its views laid out once. A first chunk (the whole prompt so far) attends causally
    over its fresh keys, at its length rounded up to a multiple of ``bucket`` (one copy of its
    rows into zeros), so that every chunk of a bucket has the same shape and strides, which is
    what a cuDNN plan is built for; under the causal mask no real query sees a padded key. A
    later chunk of ``MIN_QUERIES`` tokens or more attends over its cached keys as
    ``executor.prefix_attention.LaterChunk`` cuts it up for the same kernel; a shorter one (and
    any under ``naive`` attention) through SDPA with a bottom-right causal bias, a fused flash
    kernel."""

    def __init__(self, qkv, out, chunk, heads: int, kv_heads: int, backend: str,
                 bucket: int) -> None:  # fmt: skip
        start_token, self.length, self.row, self.start = chunk
        rows = slice(start_token, start_token + self.length)
        self.out = out[0, rows].view(self.length, heads, -1)
        self.backend = backend
        if self.start == 0:
            self.rows = qkv[0, rows]
            padded = -self.length % bucket
            # The padding stays zero: each layer copies only the chunk's rows in.
            self.padded = F.pad(self.rows, (0, 0, 0, 0, 0, padded)) if padded else None
            # Where each layer's rows go: a view made once, not once a layer.
            self.padded_rows = None if self.padded is None else self.padded[: self.length]
            source = self.rows if self.padded is None else self.padded
            self.qkv = source.transpose(0, 1)[None].split([heads, kv_heads, kv_heads], dim=1)
        elif (
            backend != "naive"
            and pays_on(qkv.device)
            and (self.length >= MIN_QUERIES or not qkv.is_cuda)
        ):
            prefix_bucket = PREFIX_BUCKET if qkv.is_cuda else 1
            self.later = LaterChunk(qkv[0, rows, :heads], self.out, self.start, kv_heads, bucket,
                                    prefix_bucket)  # fmt: skip
        else:
            self.later = None
            self.q = qkv[0, rows, :heads].transpose(0, 1)[None]  # [1, heads, L, D]
            self.mask = causal_lower_right(self.length, self.start + self.length)

    def __call__(self, cache: PagedKVCache, batch: RaggedBatch) -> None:
        if self.start == 0:
            if self.padded_rows is not None:
                self.padded_rows.copy_(self.rows)
            o = causal_attention(*self.qkv, self.backend)[..., : self.length, :]
        else:
            k, v = cache.gather(batch.tables[self.row], self.start + self.length, self.out.dtype)
            if self.later is not None:
                self.later(k, v)
                return
            o = F.scaled_dot_product_attention(self.q, k, v, enable_gqa=True, attn_mask=self.mask)
        self.out.copy_(o[0].transpose(0, 1))  # one copy


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
