"""Static batching, the baseline continuous batching is measured against.

When the engine is free it takes up to ``max_num_seqs`` waiting requests whose full length
(prompt + output) fits the KV cache, prefills them (whole prompts, as many per iteration as the
token budget holds), then decodes the batch until its longest request finishes. Finished
requests stream their last token when they are done, but their slot stays in the batch as
padding until the end, and nobody joins a running batch: short requests wait for long ones and
the GPU computes padding. That is what iteration-level scheduling (Orca, vLLM) removed.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from ..cost.shapes import chunk_terms, decode_terms, feature_vector

__all__ = ["StaticEngine"]


class StaticEngine:
    """One replica that runs batches to completion (same driver interface as
    ``scheduler.ContinuousEngine``)."""

    def __init__(self, run, replica: int):
        self.run = run
        self.replica = replica
        cfg = run.config
        self.block = cfg.block_size
        self.max_seqs = cfg.max_num_seqs
        self.pp = cfg.pp
        self.budget = cfg.max_num_batched_tokens * cfg.pp
        self.total_blocks = run.total_blocks
        self.free = run.total_blocks - run.shared_prefix_blocks
        self.clock = 0.0
        self.waiting: deque[int] = deque()
        self.added = self.finished = self.last_finished = 0
        self.batch_finish = np.zeros(0)
        self.busy_s = self.block_seconds = self.batch_seconds = 0.0
        self.peak_blocks = 0
        self.steps = 0

    def add(self, rid: int, time_s: float) -> None:
        if not self.waiting:
            self.clock = max(self.clock, time_s)
        self.waiting.append(rid)
        self.added += 1

    @property
    def has_work(self) -> bool:
        return bool(self.waiting)

    def outstanding(self, time_s: float) -> int:
        late = int((self.batch_finish > time_s).sum()) if self.clock > time_s else 0
        return self.added - self.finished + late

    def _time(self, **aggregate) -> tuple[float, int]:
        run = self.run
        sequences = aggregate.pop("sequences")
        micro = min(self.pp, sequences)
        x = feature_vector(
            **{k: v / micro for k, v in aggregate.items()},
            experts=run.experts,
            experts_per_token=run.experts_per_token,
        )
        latency, stage = run.fast.time(x)
        return max(latency, micro * stage), micro

    def step(self, until: float) -> None:
        """Run one whole batch (``until`` does not cut a batch: nothing joins it anyway)."""
        del until
        run, block = self.run, self.block
        batch: list[int] = []
        blocks = 0
        while self.waiting and len(batch) < self.max_seqs:
            rid = self.waiting[0]
            slots = run.prompt[rid] + run.output[rid] - 1  # the last token is never cached
            need = -(-slots // block) - run.cached[rid] // block
            if batch and blocks + need > self.free:
                break
            batch.append(self.waiting.popleft())
            blocks += need
        start = t = self.clock
        self.last_finished = 0
        # Prefill: whole prompts, as many per iteration as the budget holds (at least one).
        i = 0
        while i < len(batch):
            tokens = pairs = kv = naive = 0.0
            group: list[int] = []
            while i < len(batch):
                rid = batch[i]
                past = run.cached[rid]
                chunk = run.prompt[rid] - past
                if group and tokens + chunk > self.budget:
                    break
                chunk_pairs, chunk_kv, chunk_naive = chunk_terms(chunk, past)
                tokens += chunk
                pairs += chunk_pairs
                kv += chunk_kv
                naive += chunk_naive
                group.append(rid)
                i += 1
            duration, _ = self._time(
                prefill_tokens=tokens,
                prefill_pairs=pairs,
                prefill_kv=kv,
                naive_scores=naive,
                prefill_logits=len(group),
                prefill_seqs=len(group),
                sequences=len(group),
            )
            t += duration
            self._account(duration, blocks, len(batch))
            for rid in group:
                run.admit_s[rid] = start
                run.first_s[rid] = run.last_emit_s[rid] = t
        # Decode: the whole batch, padded, until the longest request is done.
        size = len(batch)
        outputs = np.array([run.output[rid] for rid in batch])
        steps = int(outputs.max()) - 1
        finish = np.array([run.first_s[rid] for rid in batch])
        if steps > 0:
            context = float(sum(run.prompt[rid] for rid in batch))
            micro = min(self.pp, size)
            d_tokens, d_kv, d_pairs = decode_terms(size, context)
            x0 = feature_vector(
                decode_tokens=d_tokens / micro,
                decode_kv=d_kv / micro,
                decode_pairs=d_pairs / micro,
                experts=run.experts,
                experts_per_token=run.experts_per_token,
            )
            dx = np.zeros_like(x0)
            dx[run.decode_kv_index] = dx[run.decode_pairs_index] = size / micro
            latency, stage = run.fast.run(x0, dx, steps)
            durations = np.maximum(latency, micro * stage) if micro > 1 else latency
            ends = t + np.cumsum(durations)
            decoding = outputs > 1
            finish[decoding] = ends[outputs[decoding] - 2]
            # Requests still producing real tokens at each step (the rest is padding).
            alive = size - np.searchsorted(np.sort(outputs - 1), np.arange(steps), side="right")
            keep = alive > 0
            run.itl_runs.extend(
                (d, 0.0, 1, a)
                for d, a in zip(durations[keep].tolist(), alive[keep].tolist(), strict=True)
            )
            self.busy_s += float(durations.sum())
            self.block_seconds += blocks * float(durations.sum())
            self.batch_seconds += size * float(durations.sum())
            self.steps += steps
            t = float(ends[-1])
        self.peak_blocks = max(self.peak_blocks, blocks)
        self.clock = t
        self.batch_finish = finish
        for rid, end in zip(batch, finish.tolist(), strict=True):
            run.emitted[rid] = run.output[rid]
            run.finish_s[rid] = run.last_emit_s[rid] = end
            self.finished += 1
            self.last_finished += 1
            run.on_finish(rid, end)

    def _account(self, duration: float, blocks: int, running: int) -> None:
        self.busy_s += duration
        self.block_seconds += blocks * duration
        self.batch_seconds += running * duration
        self.steps += 1
