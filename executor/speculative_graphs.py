"""Speculative rounds replayed from CUDA graphs, one per batch bucket; and the drafts alone.

A round with no prompt chunk (``executor.speculative``) is the same kernels every time for a
given batch: the drafter's ``g`` steps, then the target's verify of ``g + 1`` tokens per
sequence. It is captured once per bucket (1, 2, 4, ... the largest batch) and replayed with
its inputs copied into static buffers: each sequence's last token, its position, its block
table and what the drafter keeps per sequence (``tail_of``). Positions and K/V slots of every
step are computed inside the graph from those. A batch is padded to its bucket with rows at
position 1 over the scratch block. As for decodes (``executor.serving_graphs``), every graph is
captured for the longest sequence the cache holds, each sequence attending over its own keys.

A round with prompt chunks verifies beside them (from the piecewise graphs, or eagerly past
them), but its drafts are the same ``g`` steps over the decodes alone: ``ProposeGraphs``
captures those per bucket, so that no round launches the drafter's kernels from Python (for
a draft model, ``g`` times its layers' worth, which a host issues slower than a GPU runs).
"""

from __future__ import annotations

import numpy as np
import torch

from executor.engine import capture_graph
from executor.ragged import RaggedBatch
from executor.serving_graphs import BucketGraphs

__all__ = ["ProposeGraphs", "RoundGraphs"]


class RoundGraphs(BucketGraphs):
    """``run(rows, last, first, tables)`` -> (the verify's greedy tokens ``[n * (g + 1)]``, its
    inputs ``[n, g + 1]``, its hidden states or None), from the bucket's graph."""

    def __init__(self, executor, *, max_batch: int) -> None:
        super().__init__(max_batch)
        self.executor = executor

    def _capture(self, size: int) -> tuple:
        executor = self.executor
        drafter, model, query = executor.drafter, executor.model, executor.query
        device, width = executor.device, executor.blocks.width
        last = torch.zeros(size, dtype=torch.long, device=device)
        first = torch.ones(size, dtype=torch.long, device=device)
        tables = torch.full((size, width), executor.blocks.scratch, dtype=torch.long,
                            device=device)  # fmt: skip
        rows = torch.zeros(size, dtype=torch.long, device=device)
        tail = tuple(t.clone() for t in drafter.tail_of(rows))  # the drafter's static inputs
        keep_hidden = getattr(drafter, "wants_hidden", False)
        sample_rows = torch.arange(size * query, device=device)
        offsets = torch.arange(query, device=device)
        out: list = []

        def round_() -> None:
            drafts = drafter.propose(tail, last, first, tables, executor.max_seq_length)
            verify = torch.cat([last[:, None], drafts], dim=1)  # [size, query]
            positions = first[:, None] + offsets[None, :]
            batch = RaggedBatch(
                positions=positions.reshape(-1),
                blocks=tables.gather(1, positions // executor.block_size).reshape(-1),
                offsets=(positions % executor.block_size).reshape(-1), tables=tables,
                decodes=size, chunks=[], sample_rows=sample_rows,
                max_length=executor.max_seq_length, query=query, keep_hidden=keep_hidden,
            )  # fmt: skip
            tokens = model(verify.reshape(1, -1), ragged=batch)[0].argmax(dim=-1)
            out[:] = [tokens, verify, model.hidden if keep_hidden else None]

        with torch.inference_mode():  # a pool per bucket: buckets replay in any order
            graph, _ = capture_graph(round_)
        # Every tensor made outside the capture and read inside it lives as long as the graph.
        return graph, (last, first, tables, tail), (sample_rows, offsets, rows), out

    def run(self, rows: torch.Tensor, last: np.ndarray, first: np.ndarray,
            tables: np.ndarray):  # fmt: skip
        """``rows`` (block-table rows, on the GPU), ``last, first [n]``, ``tables [n, w]`` (cut
        to the widest one's blocks): one round, replayed."""
        n = len(last)
        graph, (last_buf, first_buf, tables_buf, tail_buf), _, out = self.graphs[self.bucket(n)]
        # The columns some sequence uses, and those a padding row at position 1 writes into.
        size, block = last_buf.shape[0], self.executor.block_size
        widest = max(tables.shape[1], -(-(1 + self.executor.query) // block))
        padded = np.full((size, widest), self.executor.blocks.scratch, dtype=np.int64)
        padded[:n, : tables.shape[1]] = tables
        last_buf.copy_(torch.from_numpy(np.pad(last, (0, size - n))))
        first_buf.copy_(torch.from_numpy(np.pad(first, (0, size - n), constant_values=1)))
        tables_buf[:, :widest].copy_(torch.from_numpy(padded))
        for buf, value in zip(tail_buf, self.executor.drafter.tail_of(rows), strict=True):
            buf[:n] = value
            buf[n:] = 0
        graph.replay()
        tokens, verify, hidden = out
        query = self.executor.query
        return tokens[: n * query], verify[:n], None if hidden is None else hidden[: n * query]


class ProposeGraphs(BucketGraphs):
    """``run(tail, last, first, tables)`` -> the drafter's ``[n, g]`` drafts after each of
    ``n`` sequences' ``last`` token at position ``first`` (``drafter.propose``'s inputs, on the
    GPU), from the bucket's graph. The buckets share one memory pool, captured largest first:
    the drafts are copied into the verify's inputs before any other bucket replays."""

    def __init__(self, executor, *, max_batch: int) -> None:
        super().__init__(max_batch)
        self.executor = executor

    def _capture(self, size: int) -> tuple:
        executor = self.executor
        drafter, device = executor.drafter, executor.device
        last = torch.zeros(size, dtype=torch.long, device=device)
        first = torch.ones(size, dtype=torch.long, device=device)
        tables = torch.full((size, executor.blocks.width), executor.blocks.scratch,
                            dtype=torch.long, device=device)  # fmt: skip
        rows = torch.zeros(size, dtype=torch.long, device=device)
        tail = tuple(t.clone() for t in drafter.tail_of(rows))
        out: list = []

        def propose() -> None:
            out[:] = [drafter.propose(tail, last, first, tables, executor.max_seq_length)]

        with torch.inference_mode():
            graph, self.pool = capture_graph(propose, pool=self.pool)
        return graph, (last, first, tables, tail), rows, out

    def run(self, tail: tuple[torch.Tensor, ...], last: torch.Tensor, first: torch.Tensor,
            tables: torch.Tensor) -> torch.Tensor:  # fmt: skip
        n, width = len(last), tables.shape[1]
        graph, (last_buf, first_buf, tables_buf, tail_buf), _, out = self.graphs[self.bucket(n)]
        # Padding rows at position 1 over the scratch block, as ``RoundGraphs`` pads.
        last_buf[n:], first_buf[n:] = 0, 1
        tables_buf.fill_(self.executor.blocks.scratch)
        last_buf[:n], first_buf[:n], tables_buf[:n, :width] = last, first, tables
        for buf, value in zip(tail_buf, tail, strict=True):
            buf[:n] = value
            buf[n:] = 0
        graph.replay()
        return out[0][:n]
