"""Runs of pure decode iterations, timed in one go.

Between events (an arrival, a completion, a prefill, a block shortage) an engine only decodes:
every running sequence advances, nothing joins or leaves. Such a run is simulated at once:

- without speculation every sequence advances one token per iteration, so the context sum
  grows by the batch size per step. Without pipeline stages a step's latency is linear in the
  context sum between the few points where an op changes bound (``FastStep.decode_segments``),
  so step j of a run takes ``d0 + slope x j`` and the run's length, its cut at the next
  arrival and its ITL record are closed forms (O(1) per run, whatever its length); with
  pipeline stages each step is ``max(latency, m x stage)`` of its micro-batches, evaluated
  as arrays;
- with speculation each sequence draws its accepted tokens per round; the draws of the run
  are one ``[rounds, batch]`` matrix, whose cumulative sums give when the first sequence
  finishes, how many blocks each round opens and every round's context, hence its draft and
  verify times (with pipeline stages, each verify as its micro-batches take it).

A run never crosses an event: it ends at the first completion, before the first iteration that
would need more blocks than are free (that iteration runs alone and preempts), and before the
first iteration that would start at or after ``until`` (the next arrival).
"""

from __future__ import annotations

import math
from bisect import bisect_right

import numpy as np

from ..cost.shapes import decode_terms, feature_vector
from .decodes import RandomDecodes, UniformDecodes

__all__ = ["decode_run", "MAX_RUN_STEPS", "MAX_SPECULATIVE_ROUNDS"]

MAX_RUN_STEPS = 4096  # longest run of plain decode iterations timed in one go
MAX_SPECULATIVE_ROUNDS = 64  # rounds drawn at once for a speculative run
# While requests wait under a moving admission rule (SGLang's decaying ratio), a run stops this
# often to ask again whether the head of the queue fits.
RECHECK_STEPS = 16


def _longest(engine, steps: int) -> int:
    """At most ``steps`` iterations, fewer while an admission rule may change its answer."""
    if engine.policy.decay and engine.waiting:
        return min(steps, RECHECK_STEPS)
    return steps


def decode_run(engine, until: float) -> bool:
    """Advance ``engine`` by a run of decode iterations; False when none can run (the next
    iteration needs a preemption), and the engine then runs a single iteration instead."""
    if isinstance(engine.decodes, RandomDecodes):
        return _speculative_run(engine, until)
    decodes: UniformDecodes = engine.decodes
    k = decodes.max_steps(
        engine.free, _longest(engine, min(decodes.steps_to_finish(), MAX_RUN_STEPS))
    )
    if k <= 0:
        return False
    start = engine.clock
    k = _linear_run(engine, k, until) if engine.pp == 1 else _array_run(engine, k, until)
    new_blocks = decodes.new_blocks(k)
    engine.free -= new_blocks
    engine._account(engine.clock - start, decodes.n, new_blocks)
    engine.steps += k - 1  # _account counted one
    engine.policy.iterations(k)
    engine._finish_decodes(decodes.advance(k), engine.clock)
    return True


def _steps_before(clock: float, d0: float, slope: float, steps: int, until: float) -> int:
    """How many of ``steps`` iterations (step j takes d0 + slope j) start before ``until``;
    the first always does."""
    low, high = 0, steps - 1
    while low < high:
        mid = (low + high + 1) // 2
        if clock + mid * d0 + slope * mid * (mid - 1) / 2 < until:
            low = mid
        else:
            high = mid - 1
    return low + 1


def _linear_run(engine, k: int, until: float) -> int:
    run, n = engine.run, engine.decodes.n
    x_base = feature_vector(
        decode_tokens=n, experts=run.experts, experts_per_token=run.experts_per_token
    )
    breaks, intercepts, slopes = run.fast.decode_segments(x_base)
    context = float(engine.decodes.context)
    done = 0
    while done < k:
        i = bisect_right(breaks, context)
        steps = k - done
        if i < len(breaks):  # stay on this segment: contexts below the next break
            steps = min(steps, max(1, math.ceil((breaks[i] - context) / n)))
        d0 = intercepts[i] + slopes[i] * context
        slope = slopes[i] * n
        last_start = engine.clock + (steps - 1) * d0 + slope * (steps - 1) * (steps - 2) / 2
        cut = steps > 1 and last_start >= until
        if cut:
            steps = _steps_before(engine.clock, d0, slope, steps, until)
        run.itl_runs.append((d0, slope, steps, n))
        engine.clock += steps * d0 + slope * steps * (steps - 1) / 2
        context += n * steps
        done += steps
        if cut:
            break
    return done


def _cut(clock: float, durations: np.ndarray, until: float) -> np.ndarray:
    """The leading durations whose iterations start before ``until`` (at least one)."""
    ends = np.cumsum(durations) + clock
    if len(durations) > 1 and ends[-2] >= until:
        return durations[: 1 + int(np.searchsorted(ends[:-1], until, side="left"))]
    return durations


def _array_run(engine, k: int, until: float) -> int:
    run, n = engine.run, engine.decodes.n
    micro = min(engine.pp, n)
    context = float(engine.decodes.context)
    tokens, kv, pairs = decode_terms(n, context)
    x0 = feature_vector(
        decode_tokens=tokens / micro,
        decode_kv=kv / micro,
        decode_pairs=pairs / micro,
        experts=run.experts,
        experts_per_token=run.experts_per_token,
    )
    latency, stage = run.fast.run_decode(x0, n / micro, k)
    durations = _cut(engine.clock, np.maximum(latency, micro * stage), until)
    run.itl_runs.extend((d, 0.0, 1, n) for d in durations.tolist())
    engine.clock += float(durations.sum())
    return len(durations)


def _speculative_run(engine, until: float) -> bool:
    decodes: RandomDecodes = engine.decodes
    run, spec = engine.run, engine.run.spec
    n, block, query = decodes.n, engine.block, engine.query
    length, remaining = decodes.length[:n], decodes.remaining[:n]
    held = decodes.held[:n]
    tokens = spec.draw(MAX_SPECULATIVE_ROUNDS, n)  # [rounds, n]
    emitted = np.minimum(np.cumsum(tokens, axis=0), remaining)  # by the end of each round
    before = np.vstack([np.zeros((1, n), dtype=np.int64), emitted[:-1]])  # at its start
    # Rounds up to and including the first in which some sequence finishes.
    finishing = np.flatnonzero((emitted >= remaining).any(axis=1))
    rounds = _longest(engine, int(finishing[0]) + 1 if finishing.size else MAX_SPECULATIVE_ROUNDS)
    # Blocks each round must hold: room for the g + 1 slots the verify writes.
    blocks = np.maximum(-(-(length + before + query) // block), held)
    new_blocks = (blocks - held).sum(axis=1)  # cumulative, non-decreasing
    rounds = min(rounds, int(np.searchsorted(new_blocks, engine.free, side="right")))
    if rounds <= 0:
        return False
    contexts = decodes.context + before[:rounds].sum(axis=1).astype(float)
    durations = _cut(
        engine.clock, spec.draft_times(n, contexts) + _verify(engine, contexts), until
    )
    rounds = len(durations)
    last = rounds - 1
    spec.count(tokens[:rounds])
    run.itl_runs.extend((d, 0.0, 1, n) for d in durations.tolist())
    total = float(durations.sum())
    engine.clock += total
    engine.free -= int(new_blocks[last])
    engine._account(total, n, int(new_blocks[last]))
    engine.steps += rounds - 1  # _account counted one
    engine.policy.iterations(rounds)
    held[:] = blocks[last]
    engine._finish_decodes(decodes.advance(emitted[last]), engine.clock)
    return True


def _verify(engine, contexts: np.ndarray) -> np.ndarray:
    """The target's verify step of every round. With pipeline stages the sequences split into
    ``min(pp, n)`` micro-batches and a round takes ``max(latency, micro-batches x stage)``,
    as ``ContinuousEngine._iteration`` times one."""
    run, n = engine.run, engine.decodes.n
    if engine.pp == 1:
        return run.spec.verify_times(n, contexts)
    micro = min(engine.pp, n)
    latency, stage = run.fast.decode_steps(
        n / micro,
        contexts / micro,
        query=engine.query,
        experts=run.experts,
        experts_per_token=run.experts_per_token,
    )
    return np.maximum(latency, micro * stage)
