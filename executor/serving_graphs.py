"""Decode-only serving iterations replayed from CUDA graphs, one per batch bucket.

An iteration with no prompt chunk is ``B`` decodes through the paged cache: the same kernels
every time for a given ``B``, so, as in a serving engine, it is captured once per bucket and
replayed with its inputs copied into static buffers. A batch is padded up to its bucket with
rows that write into a scratch block no sequence holds. Each graph is captured for the longest
sequence the cache may hold (it sizes the decode kernel's key chunks), and every sequence
still attends over its own length.

The buckets are vLLM's default capture sizes (``capture_sizes``: 1, 2, 4, then every 8), so a
batch pads by at most 7 rows, as it would in the engine the plan is written for; in powers of
two, 65 sequences ran as 128, a decode step 2.1 ms longer on an H100
(``studies/serving-validation/NOTES.md``). Their graphs share one memory pool, captured
largest first, as vLLM's and SGLang's are: a graph's output is read before any other graph
replays (the loop copies the sampled tokens to the host at once), so one graph's temporaries
may reuse another's.
"""

from __future__ import annotations

import numpy as np
import torch

from executor.engine import BUCKETS, capture_graph
from executor.ragged import RaggedBatch

__all__ = ["BucketGraphs", "PagedDecodeGraphs", "capture_sizes", "check_inputs"]


def capture_sizes(max_batch: int) -> list[int]:
    """vLLM's default CUDA-graph capture sizes up to ``max_batch``: 1, 2, 4, then multiples of
    8 below 256 and of 16 from there (``CompilationConfig``'s ``cudagraph_capture_sizes``),
    ``max_batch`` last."""
    sizes = [1, 2, 4, *range(8, 256, 8), *range(256, max_batch + 1, 16)]
    return [b for b in sizes if b < max_batch] + [max_batch]


class BucketGraphs:
    """One CUDA graph per batch bucket (``sizes``, or 1, 2, 4, ... ``max_batch``), captured
    up front by ``_capture(size)``, largest first; a batch replays the smallest bucket that
    holds it. ``pool``: a memory pool the subclass's captures may share (None until one
    does)."""

    def __init__(self, max_batch: int, sizes: list[int] | None = None) -> None:
        self.buckets = sizes or [b for b in BUCKETS if b < max_batch] + [max_batch]
        self.graphs: dict[int, tuple] = {}
        self.pool = None

    def capture(self) -> None:
        """Every bucket's graph, up front: a capture in the middle of a timed run would count.
        Largest first: a shared pool then holds the largest graph's temporaries from the start,
        and the smaller ones reuse them."""
        for bucket in sorted(self.buckets, reverse=True):
            self.graphs[bucket] = self._capture(bucket)

    def bucket(self, batch: int) -> int | None:
        return next((b for b in self.buckets if b >= batch), None)

    def holds(self, batch: int) -> bool:
        """Whether a captured graph replays ``batch`` rows (none where capture failed)."""
        return bool(self.graphs) and self.bucket(batch) is not None

    def _capture(self, size: int) -> tuple:
        raise NotImplementedError


class PagedDecodeGraphs(BucketGraphs):
    """``run(tokens, positions, tables)`` -> the greedy next tokens (on the GPU), from the
    bucket's graph."""

    def __init__(self, model, *, max_batch: int, table_width: int, max_seq_length: int,
                 scratch_block: int) -> None:  # fmt: skip
        super().__init__(max_batch, capture_sizes(max_batch))
        self.model, self.width, self.scratch = model, table_width, scratch_block
        self.max_seq_length = max_seq_length

    def _capture(self, size: int) -> tuple:
        device = self.model.embed_tokens.weight.device
        tokens = torch.zeros(1, size, dtype=torch.long, device=device)
        positions = torch.zeros(size, dtype=torch.long, device=device)
        tables = torch.full((size, self.width), self.scratch, dtype=torch.long, device=device)
        unused = torch.zeros(size, dtype=torch.long, device=device)  # decodes write in-kernel
        batch = RaggedBatch(positions=positions, blocks=unused, offsets=unused, tables=tables,
                            decodes=size, chunks=[], sample_rows=torch.arange(size, device=device),
                            max_length=self.max_seq_length)  # fmt: skip
        out: list[torch.Tensor] = []

        def step() -> None:
            out[:] = [self.model(tokens, ragged=batch)[0].argmax(dim=-1)]

        with torch.inference_mode():  # one pool: each graph's output is read at once
            graph, self.pool = capture_graph(step, pool=self.pool)
        # The graph reads every tensor of ``batch`` at the address it had when captured: all of
        # them must live as long as the graph, or the allocator hands their memory to others
        # (the sampled rows' index, freed, came back as garbage indices: a device-side assert).
        return graph, tokens, positions, tables, out, batch

    def run(self, tokens: np.ndarray, positions: np.ndarray, tables: np.ndarray) -> torch.Tensor:
        """``tables [n, w]``: each sequence's row, cut to the widest one's blocks."""
        n = len(tokens)
        check_inputs(tokens, positions, self.model.spec.vocab_size, self.max_seq_length)
        graph, tokens_buf, positions_buf, tables_buf, out, _ = self.graphs[self.bucket(n)]
        size = tokens_buf.shape[1]
        # Only the columns some sequence uses (``tables`` is cut to them): the kernel reads no
        # block past a sequence's length, and padding rows read their first (scratch) column.
        widest = tables.shape[1]
        padded = np.full((size, widest), self.scratch, dtype=np.int64)
        padded[:n] = tables
        tokens_buf.copy_(torch.from_numpy(np.pad(tokens, (0, size - n)))[None], non_blocking=True)
        positions_buf.copy_(torch.from_numpy(np.pad(positions, (0, size - n))), non_blocking=True)
        tables_buf[:, :widest].copy_(torch.from_numpy(padded), non_blocking=True)
        graph.replay()
        return out[0][:n]


def check_inputs(tokens: np.ndarray, positions: np.ndarray, vocab: int, length: int) -> None:
    """A token id or a position past its table, said on the host: on the GPU it would be a
    device-side assert in the middle of a graph, with no word of which."""
    if len(tokens) and not (0 <= tokens.min() and tokens.max() < vocab):
        raise RuntimeError(f"token id {int(tokens.max())} outside the vocabulary of {vocab}")
    if len(positions) and not (0 <= positions.min() and positions.max() < length):
        raise RuntimeError(f"position {int(positions.max())} past the {length} the cache holds")
