"""The running decode set of one engine replica: lengths, remaining tokens and KV blocks.

Two forms with one interface:

- ``UniformDecodes`` (no speculation): every sequence advances exactly one token per iteration,
  so nothing is stored per iteration. A global iteration counter ``steps`` gives each
  sequence's length (``length at join + steps since join``); a heap keyed by the counter value
  at which a sequence finishes gives the next completion; a histogram of the block offsets
  (``(length - steps) mod block_size``) gives how many sequences open a new KV block at any
  future iteration. A run of ``k`` iterations therefore costs O(block_size), not O(batch).
- ``RandomDecodes`` (speculative decoding): sequences advance by their own accepted-token
  counts, so lengths live in arrays and each iteration updates them (vectorized).

A sequence holds ``ceil(length / block_size)`` blocks (speculation: enough for ``g + 1`` more
slots, reserved before the verify); ``shared`` of them are prefix-cache blocks owned by the
shared pool, the rest are its own and come back to the free pool when it leaves.
"""

from __future__ import annotations

import heapq

import numpy as np

__all__ = ["UniformDecodes", "RandomDecodes"]


class UniformDecodes:
    """Decodes that advance one token per iteration (see the module docstring)."""

    def __init__(self, block_size: int):
        self.block = block_size
        self.steps = 0  # iterations so far
        self.n = 0
        self.context = 0  # sum of KV lengths
        # order -> [rid, length - steps at join, remaining + steps at join, shared]
        self.running: dict[int, list[int]] = {}
        self.finish_heap: list[tuple[int, int]] = []  # (steps value at finish, order)
        self.offsets = [0] * block_size  # sequences by (length - steps) mod block
        self.finish_sum = 0  # sum of "remaining + steps at join": tokens_left() without a loop
        self.base_sum = 0  # sum of "length - steps at join"
        self.final_blocks = 0  # sum of the blocks each sequence holds when it completes

    def add(self, rid: int, length: int, remaining: int, order: int, shared: int) -> None:
        base = length - self.steps
        self.running[order] = [rid, base, remaining + self.steps, shared]
        heapq.heappush(self.finish_heap, (remaining + self.steps, order))
        self.finish_sum += remaining + self.steps
        self.base_sum += base
        self.final_blocks += -(-(length + remaining + 1) // self.block)
        self.offsets[base % self.block] += 1
        self.n += 1
        self.context += length

    def _remove(self, order: int) -> tuple[int, int, int]:
        """(rid, remaining tokens, private blocks) of a sequence leaving the set."""
        rid, base, finish_at, shared = self.running.pop(order)
        self.finish_sum -= finish_at
        self.base_sum -= base
        self.final_blocks -= -(-(base + finish_at + 1) // self.block)
        length = base + self.steps
        self.offsets[base % self.block] -= 1
        self.n -= 1
        self.context -= length
        return rid, finish_at - self.steps, -(-length // self.block) - shared

    def tokens_left(self) -> int:
        """Output tokens the running sequences still have to produce."""
        return self.finish_sum - self.n * self.steps

    def running_ids(self) -> list[int]:
        return [entry[0] for entry in self.running.values()]

    def blocks_to_completion(self) -> int:
        """Blocks the running sequences still have to open, each up to its prompt plus its
        whole output (TensorRT-LLM's ``getRemainingBlocksToCompletion``), in O(block_size)."""
        block, steps = self.block, self.steps
        # sum of ceil(length / block) = (sum of lengths + sum of the gaps to a block edge) / block
        gaps = sum(count * ((-(r + steps)) % block) for r, count in enumerate(self.offsets))
        held = (self.base_sum + self.n * steps + gaps) // block
        return self.final_blocks - held

    def new_blocks(self, k: int) -> int:
        """Blocks the next ``k`` iterations open: iteration ``s`` writes slot
        ``base + s`` of each sequence, a new block when that is a multiple of the block size."""
        block, offsets, steps = self.block, self.offsets, self.steps
        total = (k // block) * self.n
        for r in range(k % block):
            total += offsets[(-(steps + r)) % block]
        return total

    def max_steps(self, free: int, k: int) -> int:
        """The largest number of iterations (at most ``k``) whose new blocks fit ``free``."""
        if not self.n or free >= self.n * (k // self.block + 1):
            return k
        block, offsets, steps = self.block, self.offsets, self.steps
        cycles = free // self.n
        if cycles * block >= k:
            return k
        left = free - cycles * self.n
        partial = 0
        while partial < block:
            left -= offsets[(-(steps + partial)) % block]
            if left < 0:
                break
            partial += 1
        return min(k, cycles * block + partial)

    def steps_to_finish(self) -> int:
        heap, running = self.finish_heap, self.running
        while heap and heap[0][1] not in running:  # preempted: stale entry
            heapq.heappop(heap)
        return heap[0][0] - self.steps

    def advance(self, k: int) -> list[tuple[int, int]]:
        """Advance ``k`` iterations; returns ``(rid, private blocks)`` of those that finished."""
        self.steps += k
        self.context += self.n * k
        done = []
        heap, running = self.finish_heap, self.running
        while heap and heap[0][0] <= self.steps:
            _, order = heapq.heappop(heap)
            if order in running:
                rid, _, blocks = self._remove(order)
                done.append((rid, blocks))
        return done

    def latest_order(self) -> int:
        return next(reversed(self.running)) if self.running else -1

    def crossing_latest(self) -> bool:
        """Whether the most recent sequence opens a block at the next iteration."""
        base = self.running[next(reversed(self.running))][1]
        return (base + self.steps) % self.block == 0

    def preempt_latest(self) -> tuple[int, int, int]:
        """Remove the most recently admitted sequence: (rid, remaining tokens, private blocks)."""
        return self._remove(next(reversed(self.running)))


class RandomDecodes:
    """Decodes that advance by sampled token counts (speculative decoding)."""

    def __init__(self, block_size: int, capacity: int):
        self.block = block_size
        self.n = 0
        self.context = 0
        self.ids = np.zeros(capacity, dtype=np.int64)
        self.length = np.zeros(capacity, dtype=np.int64)
        self.remaining = np.zeros(capacity, dtype=np.int64)
        self.held = np.zeros(capacity, dtype=np.int64)  # blocks, shared ones included
        self.shared = np.zeros(capacity, dtype=np.int64)
        self.order = np.zeros(capacity, dtype=np.int64)

    def add(self, rid: int, length: int, remaining: int, order: int, shared: int) -> None:
        i = self.n
        self.ids[i], self.length[i], self.remaining[i] = rid, length, remaining
        self.held[i] = -(-length // self.block)
        self.shared[i], self.order[i] = shared, order
        self.n = i + 1
        self.context += length

    def _arrays(self):
        return (self.ids, self.length, self.remaining, self.held, self.shared, self.order)

    def _keep(self, keep: np.ndarray) -> None:
        n, m = self.n, int(keep.sum())
        for array in self._arrays():
            array[:m] = array[:n][keep]
        self.n = m

    def tokens_left(self) -> int:
        """Output tokens the running sequences still have to produce."""
        return int(self.remaining[: self.n].sum())

    def running_ids(self) -> list[int]:
        return self.ids[: self.n].tolist()

    def blocks_to_completion(self) -> int:
        n, block = self.n, self.block
        final = -(-(self.length[:n] + self.remaining[:n] + 1) // block)
        return int(np.maximum(final - self.held[:n], 0).sum())

    def need(self, query: int) -> np.ndarray:
        """Blocks each sequence must add to hold ``query`` more slots."""
        n = self.n
        return np.maximum(-(-(self.length[:n] + query) // self.block) - self.held[:n], 0)

    def allocate(self, need: np.ndarray) -> None:
        self.held[: self.n] += need

    def latest_order(self) -> int:
        return int(self.order[: self.n].max()) if self.n else -1

    def preempt_latest(self) -> tuple[int, int, int]:
        i = int(np.argmax(self.order[: self.n]))
        rid, remaining = int(self.ids[i]), int(self.remaining[i])
        private = int(self.held[i] - self.shared[i])
        self.context -= int(self.length[i])
        keep = np.ones(self.n, dtype=bool)
        keep[i] = False
        self._keep(keep)
        return rid, remaining, private

    def advance(self, tokens: np.ndarray) -> list[tuple[int, int]]:
        """Each sequence emits ``tokens`` (capped at what it has left); returns the finished."""
        n = self.n
        advance = np.minimum(tokens, self.remaining[:n])
        self.length[:n] += advance
        self.remaining[:n] -= advance
        self.context += int(advance.sum())
        done = self.remaining[:n] <= 0
        if not done.any():
            return []
        finished = [
            (int(self.ids[i]), int(self.held[i] - self.shared[i]))
            for i in np.flatnonzero(done).tolist()
        ]
        self.context -= int(self.length[:n][done].sum())
        self._keep(~done)
        return finished
