"""Iterations with prompt chunks from CUDA graphs in pieces: everything but attention replayed.

A decode-only iteration runs the same kernels for a given batch, so it is one graph per batch
bucket (``executor.serving_graphs``). An iteration with a prompt chunk is not: its attention
depends on how its tokens split into sequences and chunks. Everything else (the embedding,
norms, GEMMs, MLP and residual adds) sees only a row of ``N`` tokens. So, as vLLM's piecewise
CUDA graphs do, each token bucket ``T`` gets one graph before the first layer's attention and
one between each layer's attention and the next, and attention runs eagerly between replays:
a step of ``L`` layers is ``L + 1`` replays and ``L`` eager attentions instead of a few
hundred launches from Python. Rows ``N..T`` are padding that no attention reads or writes.

The pieces hand state to each other through static buffers (the residual stream, each layer's
``qkv``, the attention output, RoPE's cos and sin, each token's K/V slot), views of one
allocation at the largest bucket, so every piece of every bucket captures the same addresses.
Temporaries inside the pieces share one memory pool: the pieces run one after another on one
stream. A piece ends with the next layer's RoPE and its store of the new K/V (as vLLM's pieces
hold the rotary embedding), so what runs between the pieces is attention alone, over a
rotated ``qkv`` and a cache that holds every new token (``IterationAttention(rotated=True)``);
padding rows store theirs into the scratch block no sequence holds.

An EAGLE-3 head reads the states after three of the target's layers (``model.eagle_layers``):
built with ``keep_hidden``, the pieces after those layers copy the residual stream into static
buffers as well, so a round with prompt chunks serves the head from pieces too
(``model.hidden``, as the eager forward leaves it). Without a head nothing is copied.

The buckets reach the token budget (up to ``PIECEWISE_MAX_TOKENS``), past vLLM's default
largest capture (512 tokens, the cost model's ``CUDA_GRAPH_MAX_TOKENS``), above which vLLM runs
its compiled pieces without graphs. Those are a few fused kernels a layer; this executor's
eager layer is about a dozen launches from Python, and on a slow host its iterations of
530-2,875 tokens were issued at 0.6-1.3 ms a layer (median 1.07), longer than their GEMMs
took (`studies/serving-validation/h100-layout-2026-12-07/`). From pieces a layer's host work is
its attention alone, some 0.33 ms there at a few hundred tokens, under the GEMMs' time past 512
tokens, so such steps are the GPU's, as the model prices them. Above 512 the buckets step by 128
tokens (256 above 2,048, 512 above 4,096): cuBLAS tiles the rows by 64-256 anyway, so the
padding costs a few percent.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from executor.engine import capture_graph
from executor.model import eagle_layers
from executor.ragged import IterationAttention, RaggedBatch

__all__ = ["PIECEWISE_BUCKETS", "PIECEWISE_MAX_TOKENS", "PiecewiseGraphs"]

PIECEWISE_MAX_TOKENS = 8192
# Token buckets: fine steps where padding would cost a memory-bound step little, then steps of
# 64 where the GEMMs turn compute-bound and padding costs FLOPs, then coarser steps, each a
# few percent of the bucket.
PIECEWISE_BUCKETS = (
    (16, 32, 48, 64, 96, 128, 160, 192, 224, 256, 320, 384, 448, 512)
    + tuple(range(640, 2049, 128))
    + tuple(range(2304, 4097, 256))
    + tuple(range(4608, PIECEWISE_MAX_TOKENS + 1, 512))
)


class PiecewiseGraphs:
    """``run(token_ids [1, N], batch)`` -> the greedy tokens of ``batch``'s sampled rows, the
    model's ``forward(token_ids, ragged=batch)`` with everything but attention from graphs.
    ``scratch_block``: the paged cache's block that padding rows write into; ``capture`` is
    ``executor.engine.capture_graph`` (a test may run pieces eagerly); ``keep_hidden``: keep
    the states an EAGLE-3 head reads (a batch that asks for them)."""

    def __init__(self, model, *, max_tokens: int, scratch_block: int,
                 capture: Callable = capture_graph, keep_hidden: bool = False) -> None:  # fmt: skip
        self.model, self._capture, self.scratch = model, capture, scratch_block
        top = min(max_tokens, PIECEWISE_MAX_TOKENS)
        self.buckets = [b for b in PIECEWISE_BUCKETS if b < top] + [top]
        self.graphs: dict[int, list] = {}
        self.failure: str | None = None  # the buckets that could not be captured, and why
        device = model.embed_tokens.weight.device
        dtype = model.embed_tokens.weight.dtype
        attention = model.layers[0].attention
        heads, kv_heads, d = attention.num_heads, attention.num_kv_heads, attention.head_dim
        self.tokens = torch.zeros(1, top, dtype=torch.long, device=device)
        self.positions = torch.zeros(top, dtype=torch.long, device=device)
        self.residual = torch.zeros(1, top, model.spec.hidden_size, dtype=dtype, device=device)
        self.qkv = torch.zeros(1, top, heads + 2 * kv_heads, d, dtype=dtype, device=device)
        self.attended = torch.zeros(1, top, heads * d, dtype=dtype, device=device)
        self.cos = torch.zeros(top, d, dtype=model.rope_cos.dtype, device=device)
        self.sin = torch.zeros_like(self.cos)
        self.blocks = torch.full((top,), scratch_block, dtype=torch.long, device=device)
        self.offsets = torch.zeros(top, dtype=torch.long, device=device)
        # The final norm's output, in the lm_head's input dtype (FP8 where it has a static
        # scale): one layer's tail on a row of zeros says which.
        with torch.inference_mode():
            _, probe = model.finish_layer(len(model.layers) - 1, self.residual[:, :1],
                                          self.residual[:, :1])  # fmt: skip
        self.normed = torch.zeros(1, top, probe.shape[-1], dtype=probe.dtype, device=device)
        # The residual stream after each layer an EAGLE-3 head reads, in the head's order.
        self.eagle_layers = eagle_layers(len(model.layers)) if keep_hidden else ()
        self.kept = torch.zeros(len(self.eagle_layers), 1, top, model.spec.hidden_size,
                                dtype=dtype, device=device)  # fmt: skip

    def bucket(self, tokens: int) -> int | None:
        return next((b for b in self.buckets if b >= tokens), None)

    def holds(self, tokens: int) -> bool:
        """Whether captured pieces run an iteration of ``tokens`` (none where capture failed)."""
        return bool(self.graphs) and self.bucket(tokens) is not None

    def capture(self) -> None:
        """Every bucket's pieces, up front, smallest first, in one memory pool. Where a larger
        bucket runs out of memory, the smaller ones stay and longer iterations run eagerly
        (``failure`` says from which size and why); a failure at the first is raised."""
        pool = None
        with torch.inference_mode():
            for size in self.buckets:
                pieces = []
                try:
                    for piece in self._pieces(size):
                        graph, pool = self._capture(piece, pool=pool)
                        pieces.append(graph)
                except torch.OutOfMemoryError as error:
                    if not self.graphs:
                        raise
                    self.buckets = list(self.graphs)
                    why = (str(error).strip().splitlines() or ["out of memory"])[0][:120]
                    self.failure = f"{size} tokens and more: {why}"
                    return
                self.graphs[size] = pieces

    def _pieces(self, size: int) -> list[Callable[[], None]]:
        """The ``L + 1`` pieces of bucket ``size``: the embedding to the first ``qkv``, then
        after each layer's attention its ``wo`` to the next layer's ``qkv`` (to the final norm
        after the last)."""
        model, rows = self.model, slice(0, size)
        layers = model.layers

        def store_qkv(layer: int, normed: torch.Tensor) -> None:
            attention = layers[layer].attention
            qkv = self.qkv[:, rows]
            qkv.copy_(attention.wqkv(normed).view(1, size, *self.qkv.shape[2:]))
            model.kernels.rope_cache(qkv, self.cos[rows], self.sin[rows], attention.num_heads,
                                     attention.num_kv_heads, attention.kv_cache,
                                     self.offsets[rows], blocks=self.blocks[rows])  # fmt: skip

        def front() -> None:
            residual, normed, cos, sin = model.embed(self.tokens[:, rows], self.positions[rows])
            self.residual[:, rows].copy_(residual)
            self.cos[rows].copy_(cos)
            self.sin[rows].copy_(sin)
            store_qkv(0, normed)

        def after(index: int) -> Callable[[], None]:
            def piece() -> None:
                attended = layers[index].attention.wo(self.attended[:, rows])
                residual, normed = model.finish_layer(index, self.residual[:, rows], attended)
                self.residual[:, rows].copy_(residual)
                for slot, at in enumerate(self.eagle_layers):
                    if at == index:
                        self.kept[slot, :, rows].copy_(residual)
                if index + 1 < len(layers):
                    store_qkv(index + 1, normed)
                else:
                    self.normed[:, rows].copy_(normed)

            return piece

        return [front, *(after(index) for index in range(len(layers)))]

    def run(self, token_ids: torch.Tensor, batch: RaggedBatch) -> torch.Tensor:
        n = token_ids.shape[1]
        size = self.bucket(n)
        assert size is not None and (self.eagle_layers or not batch.keep_hidden)
        model, graphs = self.model, self.graphs[size]
        self.tokens[:, :n].copy_(token_ids)
        self.positions[:n].copy_(batch.positions)
        self.blocks[:n].copy_(batch.blocks)
        self.blocks[n:size].fill_(self.scratch)  # a longer iteration's slots before
        self.offsets[:n].copy_(batch.offsets)
        qkv, cos, sin = self.qkv[:, :n], self.cos[:n], self.sin[:n]
        with torch.inference_mode():
            attend = IterationAttention(model.layers[0].attention, qkv, cos, sin, batch,
                                        model.kernels, out=self.attended[:, :n], rotated=True)  # fmt: skip
            for layer, graph in zip(model.layers, graphs, strict=False):
                graph.replay()
                attend(layer.attention)
            graphs[-1].replay()
            if batch.keep_hidden:  # [n, 3 x hidden], as ``Llama.forward`` keeps it
                model.hidden = torch.cat(list(self.kept[:, 0, :n]), dim=-1)
            return model.sampled_logits(self.normed[:, :n], batch.sample_rows)[0].argmax(dim=-1)
