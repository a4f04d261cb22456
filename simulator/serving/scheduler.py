"""One engine replica, iteration by iteration, as vLLM v1's scheduler runs it.

Every iteration (one forward pass of the model) the scheduler fills a token budget
(``max_num_batched_tokens``):

1. **Running decodes first.** Each running sequence gets one token (``g + 1`` when verifying
   ``g`` speculative drafts). A sequence whose next token starts a new KV block needs a free
   block; when none is left, the most recently admitted request is **preempted**: its blocks
   are freed, it goes back to the front of the waiting queue and later recomputes its prompt
   plus the tokens it had produced (vLLM's recompute preemption).
2. **Partial prefills** (chunked prefill) continue with what is left of the budget.
3. **Waiting requests** are admitted first come, first served while the budget, ``max_num_seqs``
   and the free KV blocks allow: a request needs blocks for its whole prompt to be admitted,
   plus what the engine's admission policy keeps free for future output (``admission.py``:
   nothing for vLLM, every remaining output token for TensorRT-LLM's no-evict policy, SGLang's
   new-token ratio of it).
   With chunked prefill a long prompt takes a chunk of the remaining budget and continues next
   iteration; without it, a prompt must fit the remaining budget whole, or admission stops.

The iteration's time is the step model's time for that mix (prefill chunks + decodes, as
aggregate features). A prefill that completes emits the request's first token at the end of
its iteration; each decode emits one token (or the accepted drafts plus one).

Prefix sharing: ``cached`` tokens of a prompt (whole blocks) hit the prefix cache. They skip the
prefill compute but are still read by attention, and their blocks are shared: one pool sized
for the longest hit is reserved once (a common system prompt or few-shot context), so a hit
costs no blocks of its own.

Pipeline parallelism: the requests of an iteration are split into ``m = min(pp, sequences)``
micro-batches that follow each other through the stages; the engine issues one every stage
time, so the iteration (every sequence advancing once) takes ``max(latency, m x stage)`` of a
micro-batch: with fewer micro-batches than stages, stages idle (the pipeline bubble). A prompt
chunk is not split across micro-batches, so the one holding the largest chunk takes its full
latency. Stage-to-stage transfers are the step model's ``pp_send``. The token budget is per
micro-batch, so an iteration holds up to ``pp x max_num_batched_tokens``.

Speed: iterations where nothing happens but decoding (no arrival, no completion, no phase
change, enough free blocks) form a run; ``decode_runs.py`` times a whole run at once instead
of one iteration at a time.
"""

from __future__ import annotations

from collections import deque

from ..cost.shapes import chunk_terms, decode_terms, feature_vector
from .admission import policy_for
from .decode_runs import decode_run
from .decodes import RandomDecodes, UniformDecodes

__all__ = ["ContinuousEngine"]


class ContinuousEngine:
    """One replica with continuous batching. ``run`` is the shared ``serving.Run`` state
    (request lengths, results, the fast step model, the speculative model)."""

    def __init__(self, run, replica: int):
        self.run = run
        self.replica = replica
        cfg = run.config
        self.block = cfg.block_size
        self.max_seqs = cfg.max_num_seqs
        self.pp = cfg.pp
        self.budget = cfg.max_num_batched_tokens * cfg.pp
        self.chunked = cfg.enable_chunked_prefill
        self.query = 1 if run.spec is None else run.spec.g + 1
        self.decodes: UniformDecodes | RandomDecodes = (
            UniformDecodes(cfg.block_size)
            if run.spec is None
            else RandomDecodes(cfg.block_size, cfg.max_num_seqs)
        )
        self.policy = policy_for(cfg.admission)
        self.stall_s = 0.0  # time the running decodes waited on prefill-only iterations
        self.total_blocks = run.total_blocks
        self.free = run.total_blocks - run.shared_prefix_blocks
        self.clock = 0.0
        self.waiting: deque[int] = deque()
        self.prefilling: list[list[int]] = []  # [rid, computed, target, private blocks, order]
        self.sequence = 0  # admission order
        self.added = self.finished = 0
        self.last_finished = 0  # finished in the last iteration (at ``clock``)
        self.busy_s = 0.0
        self.block_seconds = 0.0  # integral of blocks in use over busy time
        self.batch_seconds = 0.0  # integral of running sequences over busy time
        self.peak_blocks = 0
        self.steps = 0
        # Which limits changed a decision (what a larger value of that knob would change), and
        # the peaks under the others: ``serving.EngineLimits`` turns them into a rule for when
        # another configuration would have run this same schedule.
        self.bound_by: set[str] = set()
        self.peak_running = 0  # sequences running when one more was admitted
        self.peak_tokens = 0  # tokens scheduled in one iteration

    # --- interface to the driver ---------------------------------------------------------------
    def add(self, rid: int, time_s: float) -> None:
        if not self.has_work:
            self.clock = max(self.clock, time_s)
            self.policy.idle()
        self.waiting.append(rid)
        self.added += 1

    @property
    def has_work(self) -> bool:
        return bool(self.decodes.n or self.prefilling or self.waiting)

    def outstanding(self, time_s: float) -> int:
        """Requests routed here and not finished at ``time_s``."""
        late = self.last_finished if self.clock > time_s else 0
        return self.added - self.finished + late

    def step(self, until: float) -> None:
        """Run one iteration, or a run of decode iterations that all start before ``until``."""
        self.last_finished = 0
        if (
            self.run.clock is None  # an external clock runs every iteration on its own
            and not self.prefilling
            and self.decodes.n
            and not self.stall_s
            and not self._admissible()
            and decode_run(self, until)
        ):
            return
        self._iteration()

    # --- one iteration ---------------------------------------------------------------------------
    def _admissible(self) -> bool:
        """Whether the head of the waiting queue could be admitted now (a limit that says no
        is noted: with more of it, this engine would have admitted)."""
        n = self.decodes.n
        if not self.waiting:
            return False
        if n + len(self.prefilling) >= self.max_seqs:
            self.bound_by.add("max_num_seqs")
            return False
        budget = self.budget - n * self.query
        rid = self.waiting[0]
        target = self.run.prompt[rid] + self.run.emitted[rid]
        cached = self.run.cached[rid]
        if budget <= 0 or (not self.chunked and target - cached > budget):
            self.bound_by.add("token_budget")
            return False
        private = -(-target // self.block) - cached // self.block
        if private + self._future_blocks(rid) > self.free - self._reserved_blocks():
            self.bound_by.add("kv_cache")
            return False
        return True

    def _reserved_blocks(self) -> int:
        """Free blocks the admission policy keeps for the running requests' future output."""
        policy = self.policy
        if not policy.reserves:
            return 0
        run, block = self.run, self.block
        to_completion = tokens_left = 0
        for rid, _, target, _, _ in self.prefilling:
            total = run.prompt[rid] + run.output[rid]
            to_completion += -(-total // block) - -(-target // block)
            tokens_left += run.output[rid] - run.emitted[rid]
        if policy.reserve == "completion":
            to_completion += self.decodes.blocks_to_completion()
        else:
            tokens_left += self.decodes.tokens_left()
        return policy.reserved_blocks(
            to_completion=to_completion, tokens_left=tokens_left, block=block
        )

    def _future_blocks(self, rid: int) -> int:
        """Blocks a new request must find free for its output, beyond its prompt's."""
        if not self.policy.reserves:
            return 0
        run = self.run
        return self.policy.future_blocks(
            computed=run.prompt[rid] + run.emitted[rid],
            prompt=run.prompt[rid],
            output=run.output[rid],
            block=self.block,
        )

    def _reserve_decode_blocks(self) -> None:
        """Blocks for the slots this iteration writes; preempt the newest requests until they
        fit (a preempted prefill frees its blocks; a preempted decode also needs none)."""
        decodes = self.decodes
        if isinstance(decodes, UniformDecodes):
            need = decodes.new_blocks(1) if decodes.n else 0
            while need > self.free:
                if decodes.n and decodes.latest_order() > self._latest_prefill_order():
                    need -= decodes.crossing_latest()
                self._preempt()
            self.free -= need
            return
        needs = decodes.need(self.query)
        while int(needs.sum()) > self.free:
            self._preempt()
            needs = decodes.need(self.query)
        self.free -= int(needs.sum())
        decodes.allocate(needs)

    def _latest_prefill_order(self) -> int:
        return self.prefilling[-1][4] if self.prefilling else -1

    def _iteration(self) -> None:
        run, block, decodes, query = self.run, self.block, self.decodes, self.query
        # Unmixed batches (SGLang): a prefill whenever one can be formed, the decodes waiting.
        prefill_only = (
            not self.policy.mixed
            and decodes.n > 0
            and (bool(self.prefilling) or self._admissible())
        )
        # 1. Decodes first: blocks for what they write, preempting if needed.
        if decodes.n and not prefill_only:
            self._reserve_decode_blocks()
        n = 0 if prefill_only else decodes.n
        budget = self.budget - n * query
        # 2. Partial prefills continue; 3. waiting requests are admitted.
        chunks: list[tuple[list[int], int]] = []
        reserved = self._reserved_blocks()
        for entry in self.prefilling:
            if budget < entry[2] - entry[1]:
                self.bound_by.add("token_budget")  # a chunk cut short, or none this time
            if budget <= 0:
                break
            chunk = min(entry[2] - entry[1], budget)
            chunks.append((entry, chunk))
            budget -= chunk
        while self.waiting:
            if budget <= 0:
                self.bound_by.add("token_budget")
                break
            if decodes.n + len(self.prefilling) >= self.max_seqs:
                self.bound_by.add("max_num_seqs")
                break
            rid = self.waiting[0]
            target = run.prompt[rid] + run.emitted[rid]
            cached = run.cached[rid]
            if target - cached > budget:
                self.bound_by.add("token_budget")  # chunked, or (unchunked) not admitted
                if not self.chunked:
                    break
            private = -(-target // block) - cached // block
            future = self._future_blocks(rid)
            if private + future > self.free - reserved:
                self.bound_by.add("kv_cache")
                break
            reserved += future
            self.peak_running = max(self.peak_running, decodes.n + len(self.prefilling))
            self.waiting.popleft()
            self.free -= private
            if run.admit_s[rid] != run.admit_s[rid]:  # NaN: first admission
                run.admit_s[rid] = self.clock
            entry = [rid, cached, target, private, self.sequence]
            self.sequence += 1
            self.prefilling.append(entry)
            chunk = min(target - cached, budget)
            chunks.append((entry, chunk))
            budget -= chunk
        if not n and not chunks:
            raise RuntimeError("engine stalled: a request cannot be admitted into an idle engine")
        if n:
            self.policy.iterations(1)
        self.peak_tokens = max(self.peak_tokens, self.budget - budget)
        # The step's features: sums over the prefill chunks, plus the decodes.
        c_tokens = c_pairs = c_kv = c_naive = 0.0
        logits = 0
        for entry, chunk in chunks:
            pairs, kv, naive = chunk_terms(chunk, entry[1])
            c_tokens += chunk
            c_pairs += pairs
            c_kv += kv
            c_naive += naive
            logits += entry[1] + chunk == entry[2]
        micro = min(self.pp, n + len(chunks))
        d_tokens, d_kv, d_pairs = decode_terms(n, float(decodes.context), query)
        x = feature_vector(
            prefill_tokens=c_tokens / micro,
            prefill_pairs=c_pairs / micro,
            prefill_kv=c_kv / micro,
            naive_scores=c_naive / micro,
            prefill_logits=logits / micro,
            prefill_seqs=len(chunks) / micro,
            decode_tokens=d_tokens / micro,
            decode_kv=d_kv / micro,
            decode_pairs=d_pairs / micro,
            experts=run.experts,
            experts_per_token=run.experts_per_token,
        )
        latency, stage = run.fast.time(x)
        duration = max(latency, micro * stage)
        if micro > 1 and chunks:
            # A prompt chunk is not split across micro-batches: the one holding the largest
            # chunk (with its share of the decodes) takes its full latency.
            entry, chunk = max(chunks, key=lambda item: item[1])
            pairs, kv, naive = chunk_terms(chunk, entry[1])
            big = feature_vector(
                prefill_tokens=chunk,
                prefill_pairs=pairs,
                prefill_kv=kv,
                naive_scores=naive,
                prefill_logits=float(entry[1] + chunk == entry[2]),
                prefill_seqs=1.0,
                decode_tokens=d_tokens / micro,
                decode_kv=d_kv / micro,
                decode_pairs=d_pairs / micro,
                experts=run.experts,
                experts_per_token=run.experts_per_token,
            )
            duration = max(duration, run.fast.time(big)[0])
        if run.spec is not None:  # the drafter's own steps, before the target's verify
            duration += (run.spec.draft_time(n, d_kv) if n else 0.0) + (
                micro * run.spec.prefill_time(x) if chunks else 0.0
            )
        # A speculative round's tokens per sequence are drawn before it runs: an external clock
        # must know how many drafts each sequence keeps.
        emits = None if not n or isinstance(decodes, UniformDecodes) else run.spec.sample(n)
        if run.clock is not None:
            duration = self._external(duration, chunks, n, emits)
        end = self.clock + duration
        self._account(duration, decodes.n + len(self.prefilling), 0)
        # Emit: decodes advance, finished prefills emit their first (or next) token.
        finished = []
        if n:
            if isinstance(decodes, UniformDecodes):
                finished = decodes.advance(1)
            else:
                assert emits is not None
                finished = decodes.advance(emits)
            # a decode that waited on prefill-only iterations: its gap holds them
            run.itl_runs.append((duration + self.stall_s, 0.0, 1, n))
            self.stall_s = 0.0
        elif prefill_only:
            self.stall_s += duration
        for entry, chunk in chunks:
            entry[1] += chunk
            if entry[1] == entry[2]:
                self.prefilling.remove(entry)
                self._prefill_done(entry, end)
        self.clock = end
        self._finish_decodes(finished, end)

    def _external(self, predicted: float, chunks: list, n: int, emits) -> float:
        """Hand this iteration to the run's external clock; log it; return its time."""
        from .simulate import Iteration

        iteration = Iteration(
            replica=self.replica,
            start_s=self.clock,
            prefill=[(entry[0], entry[1], chunk) for entry, chunk in chunks],
            decode=self.decodes.running_ids() if n else [],
            predicted_s=predicted,
            released=self.run.released[:],
            emitting=(n if emits is None else int(emits.sum()))
            + sum(1 for entry, chunk in chunks if entry[1] + chunk == entry[2]),
            accepted=None if emits is None else (emits - 1).tolist(),
        )
        self.run.released.clear()
        iteration.duration_s = float(self.run.clock(iteration))
        self.run.iterations.append(iteration)
        return iteration.duration_s

    def _prefill_done(self, entry: list[int], end: float) -> None:
        run = self.run
        rid, _, target, private, order = entry
        emitted = run.emitted[rid]
        if emitted == 0:
            run.first_s[rid] = end
        else:  # resumed after a preemption: the gap since its last token
            run.itl_extra.append(end - run.last_emit_s[rid])
        run.emitted[rid] = emitted + 1
        run.last_emit_s[rid] = end
        if emitted + 1 >= run.output[rid]:
            self.free += private
            self._finish(rid, end)
            return
        self.decodes.add(
            rid, target, run.output[rid] - emitted - 1, order, run.cached[rid] // self.block
        )

    def _finish(self, rid: int, end: float) -> None:
        self.run.release(rid)
        self.run.finish_s[rid] = end
        self.finished += 1
        self.last_finished += 1
        self.run.on_finish(rid, end)

    def _finish_decodes(self, finished: list[tuple[int, int]], end: float) -> None:
        run = self.run
        for rid, private in finished:
            run.emitted[rid] = run.output[rid]
            run.last_emit_s[rid] = end
            self.free += private
            self._finish(rid, end)

    def _preempt(self) -> None:
        """Preempt the most recently admitted running request (decoding or prefilling): with
        every decode advancing a token per iteration, also the one that has decoded least."""
        run = self.run
        self.bound_by.add("kv_cache")
        if self.policy.decay:  # SGLang re-estimates its ratio from the running requests
            rids = [e[0] for e in self.prefilling] + self.decodes.running_ids()
            output = sum(run.output[r] for r in rids)
            left = self.decodes.tokens_left() + sum(
                run.output[e[0]] - run.emitted[e[0]] for e in self.prefilling
            )
            self.policy.retracted(decoded=output - left, output=output, running=len(rids))
        if self.prefilling and self._latest_prefill_order() > self.decodes.latest_order():
            rid, _, _, private, _ = self.prefilling.pop()
        else:
            rid, remaining, private = self.decodes.preempt_latest()
            # Tokens emitted so far survive; the KV does not (recompute on resume).
            run.emitted[rid] = run.output[rid] - remaining
        self.free += private
        run.preemptions[rid] += 1
        run.release(rid)
        if self.policy.retract_to_back:
            self.waiting.append(rid)
        else:
            self.waiting.appendleft(rid)

    def _account(self, duration: float, running: int, new_blocks: int) -> None:
        used = self.total_blocks - self.free
        self.busy_s += duration
        # Blocks open up evenly over a run: the integral at its mean occupancy.
        self.block_seconds += (used - new_blocks / 2) * duration
        self.batch_seconds += running * duration
        self.peak_blocks = max(self.peak_blocks, used)
        self.steps += 1
