"""Decode-only serving iterations replayed from CUDA graphs, one per batch bucket.

An iteration with no prompt chunk is ``B`` decodes through the paged cache: the same kernels
every time for a given ``B``, so, as in a serving engine, it is captured once per bucket (1, 2,
4, ... the largest batch) and replayed with its inputs copied into static buffers. A batch is
padded up to its bucket with rows that write into a scratch block no sequence holds. Each
graph is captured for the longest sequence the cache may hold (it sizes the decode kernel's
key chunks), and every sequence still attends over its own length.
"""

from __future__ import annotations

import numpy as np
import torch

from executor.engine import BUCKETS, capture_graph
from executor.ragged import RaggedBatch

__all__ = ["BucketGraphs", "PagedDecodeGraphs", "check_inputs"]


class BucketGraphs:
    """One CUDA graph per batch bucket (1, 2, 4, ... ``max_batch``), captured up front by
    ``_capture(size)``; a batch replays the smallest bucket that holds it."""

    def __init__(self, max_batch: int) -> None:
        self.buckets = [b for b in BUCKETS if b < max_batch] + [max_batch]
        self.graphs: dict[int, tuple] = {}

    def capture(self) -> None:
        """Every bucket's graph, up front: a capture in the middle of a timed run would count."""
        for bucket in self.buckets:
            self.graphs[bucket] = self._capture(bucket)

    def bucket(self, batch: int) -> int | None:
        return next((b for b in self.buckets if b >= batch), None)

    def _capture(self, size: int) -> tuple:
        raise NotImplementedError


class PagedDecodeGraphs(BucketGraphs):
    """``run(tokens, positions, tables)`` -> the greedy next tokens (on the GPU), from the
    bucket's graph."""

    def __init__(self, model, *, max_batch: int, table_width: int, max_seq_length: int,
                 scratch_block: int) -> None:  # fmt: skip
        super().__init__(max_batch)
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

        with torch.inference_mode():  # a pool per bucket: buckets replay in any order
            graph, _ = capture_graph(step)
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
