"""Which KV-cache blocks each request of the serving loop holds, as rows of one array.

A request gets a row when its prompt starts; the row lists its blocks in order (the block
table the decode kernel reads), padded with a scratch block no request holds, and keeps its
cached length and last sampled token. Rows and blocks return to their free lists when the
request finishes or is preempted. Arrays, not dictionaries of lists, because the loop reads
a whole batch's rows every iteration: at a batch of hundreds, per-request Python work is most
of the host's time (``benchmarks/bench_serving_loop.py``).
"""

from __future__ import annotations

import numpy as np

__all__ = ["BlockTables"]


class BlockTables:
    """``num_blocks`` blocks of ``block_size`` token slots; rows ``width`` blocks wide."""

    def __init__(self, num_blocks: int, block_size: int, width: int, scratch: int) -> None:
        self.block_size, self.width, self.scratch = block_size, width, scratch
        self.free = list(range(num_blocks - 1, -1, -1))  # a stack: low blocks first
        self.row_of: dict[int, int] = {}  # request -> its row
        self._spare: list[int] = []
        self.table = np.full((0, width), scratch, dtype=np.int64)
        self.count = np.zeros(0, dtype=np.int64)  # blocks held, per row
        self.length = np.zeros(0, dtype=np.int64)  # tokens cached, per row
        self.last = np.zeros(0, dtype=np.int64)  # last sampled token, per row

    def row(self, rid: int) -> int:
        """``rid``'s row, given one if it has none."""
        row = self.row_of.get(rid)
        if row is None:
            if not self._spare:
                self._grow()
            row = self.row_of[rid] = self._spare.pop()
        return row

    def rows(self, rids: list[int]) -> np.ndarray:
        return np.fromiter((self.row_of[rid] for rid in rids), dtype=np.int64, count=len(rids))

    def reserve(self, row: int, length: int) -> None:
        """Blocks enough for the row's first ``length`` tokens."""
        blocks = -(-length // self.block_size)
        if blocks > self.width:
            raise RuntimeError(f"{length} tokens need {blocks} blocks; a block table holds "
                               f"{self.width} (the executor's max_seq_length)")  # fmt: skip
        need = blocks - int(self.count[row])
        if need > len(self.free):
            raise RuntimeError("the paged KV cache is full: the executor holds fewer blocks "
                               "than the simulator's scheduler admitted")  # fmt: skip
        for _ in range(need):
            self.table[row, self.count[row]] = self.free.pop()
            self.count[row] += 1

    def release(self, rid: int) -> None:
        """A finished or preempted request: its blocks and row are free again."""
        row = self.row_of.pop(rid, None)
        if row is None:
            return
        held = int(self.count[row])
        self.free.extend(self.table[row, :held][::-1].tolist())
        self.table[row, :held] = self.scratch
        self.count[row] = self.length[row] = self.last[row] = 0
        self._spare.append(row)

    def blocks_of(self, rid: int) -> list[int]:
        row = self.row_of[rid]
        return self.table[row, : self.count[row]].tolist()

    def _grow(self) -> None:
        old = len(self.count)
        new = max(64, 2 * old)
        table = np.full((new, self.width), self.scratch, dtype=np.int64)
        table[:old] = self.table
        self.table = table
        for name in ("count", "length", "last"):
            grown = np.zeros(new, dtype=np.int64)
            grown[:old] = getattr(self, name)
            setattr(self, name, grown)
        self._spare.extend(range(new - 1, old - 1, -1))
