"""Iterations with prompt chunks from piecewise graphs (CPU): every piece but attention replayed
on static buffers padded to a token bucket, attention eager between them.

A stand-in graph reruns the captured function on the static buffers, as a replay does, so the
buffers' plumbing (which piece writes what, where the padding goes, what a later and shorter
iteration of the same bucket finds left in them) is what these tests check: the greedy tokens
must be plain greedy decoding.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.piecewise_graphs import PIECEWISE_BUCKETS, PiecewiseGraphs  # noqa: E402
from executor.serving_loop import ServingExecutor  # noqa: E402
from executor.speculative import DraftModel, EagleHead  # noqa: E402
from tests.executor.conftest import rerun_capture  # noqa: E402
from tests.executor.test_serving_loop import Step, greedy, tiny_model  # noqa: E402
from tests.executor.test_speculative_loop import (  # noqa: E402
    PLAN,
    G,
    assert_greedy,
    draft_executor,
    random_prompts,
    run_plan,
    speculative_executor,
)


def with_pieces(executor: ServingExecutor, max_tokens: int) -> ServingExecutor:
    keep = getattr(executor.drafter, "wants_hidden", False)  # as the executor builds them
    executor.piecewise = PiecewiseGraphs(executor.model, max_tokens=max_tokens,
                                         scratch_block=executor.blocks.scratch,
                                         capture=rerun_capture, keep_hidden=keep)  # fmt: skip
    executor.piecewise.capture()
    if isinstance(executor.drafter, DraftModel):  # its prefill from pieces of its own
        executor.drafter.pieces = PiecewiseGraphs(executor.drafter.model, max_tokens=max_tokens,
                                                  scratch_block=executor.blocks.scratch,
                                                  capture=rerun_capture)  # fmt: skip
        executor.drafter.pieces.capture()
    return executor


def test_buckets_stop_at_the_token_budget_or_the_largest_capture():
    from executor.ragged import setup_paged_caches

    model = tiny_model()
    setup_paged_caches(model, num_blocks=8, block_size=4, max_seq_length=64)  # the pieces store
    assert PiecewiseGraphs(model, max_tokens=40, scratch_block=0).buckets == [16, 32, 40]
    assert (
        PiecewiseGraphs(model, max_tokens=40, scratch_block=0).kept.shape[0] == 0
    )  # no head: no states kept
    budget = PiecewiseGraphs(model, max_tokens=4096, scratch_block=0).buckets
    assert budget == [b for b in PIECEWISE_BUCKETS if b <= 4096] and budget[-1] == 4096
    assert PiecewiseGraphs(model, max_tokens=20000, scratch_block=0).buckets == list(
        PIECEWISE_BUCKETS
    )
    pieces = PiecewiseGraphs(model, max_tokens=40, scratch_block=0, capture=rerun_capture)
    pieces.capture()
    assert {size: len(graphs) for size, graphs in pieces.graphs.items()} == {
        16: 3, 32: 3, 40: 3,  # the embedding to the first qkv, then one after each layer
    }  # fmt: skip


def test_a_bucket_out_of_memory_keeps_the_smaller_ones_and_says_so():
    from executor.ragged import setup_paged_caches
    from executor.serving_warmup import _note_partial

    model = tiny_model()
    setup_paged_caches(model, num_blocks=8, block_size=4, max_seq_length=64)
    per_bucket, calls = len(model.layers) + 1, []

    def runs_out_in_the_third_bucket(fn, pool=None):
        calls.append(fn)
        if len(calls) > 2 * per_bucket:
            raise torch.OutOfMemoryError("CUDA out of memory")
        return rerun_capture(fn, pool)

    pieces = PiecewiseGraphs(model, max_tokens=40, scratch_block=0,
                             capture=runs_out_in_the_third_bucket)  # fmt: skip
    pieces.capture()
    assert pieces.buckets == [16, 32] and list(pieces.graphs) == [16, 32]
    assert pieces.holds(32) and not pieces.holds(33)
    executor = type("Executor", (), {"notes": []})()
    _note_partial(executor, pieces, "piecewise graphs")
    assert executor.notes == ["piecewise graphs could not be captured for 40 tokens and more: "
                              "CUDA out of memory: those iterations ran eagerly"]  # fmt: skip
    first = PiecewiseGraphs(model, max_tokens=40, scratch_block=0,
                            capture=runs_out_in_the_third_bucket)  # fmt: skip
    with pytest.raises(torch.OutOfMemoryError):  # nothing captured: the caller says so
        first.capture()


def test_chunks_beside_decodes_from_pieces_sample_what_each_sequence_alone_does():
    model = tiny_model()
    gen = torch.Generator().manual_seed(0)
    prompts = {rid: torch.randint(97, (n,), generator=gen).tolist()
               for rid, n in ((0, 21), (1, 5), (2, 3), (3, 40))}  # fmt: skip
    executor = with_pieces(ServingExecutor(
        model, num_blocks=48, block_size=4, max_seq_length=64,
        prompt_tokens=lambda rid, start, n: prompts[rid][start : start + n],
    ), max_tokens=32)  # fmt: skip
    sampled: dict[int, list[int]] = {rid: [] for rid in prompts}
    plan = [  # (decodes, chunks, requests whose prompt is done after it)
        ([], [(0, 0, 16), (1, 0, 5)], [1]),  # 21 tokens: the 32 bucket
        ([1], [(0, 16, 5)], [0]),  # 6 tokens, later in the same buffers: the 16 bucket
        ([0, 1], [(2, 0, 3)], [2]),
        ([0, 1, 2], [(3, 0, 36)], []),  # 39 tokens: past the largest bucket, eager
        ([0, 2], [(3, 36, 4)], [3]),  # a later chunk over cached keys
        ([0, 1, 2, 3], [], []),  # decodes alone (no decode graphs here: eager)
    ]
    for decodes, chunks, completed in plan:
        executor(Step(decode=decodes, prefill=chunks))
        for rid in decodes + completed:
            sampled[rid].append(executor.last_token[rid])
    for rid, prompt in prompts.items():
        assert sampled[rid] == greedy(model, prompt, len(sampled[rid])), rid
    paths = [r.path for r in executor.records]
    assert paths == ["piecewise", "piecewise", "piecewise", "eager", "piecewise", "piecewise"]


def test_an_iteration_past_vllms_largest_capture_runs_from_pieces():
    """The pieces reach the token budget: a 600-token chunk beside a decode replays the 640
    bucket's pieces (vLLM's captures stop at 512) and samples plain greedy decoding."""
    model = tiny_model()
    gen = torch.Generator().manual_seed(1)
    prompts = {
        rid: torch.randint(97, (n,), generator=gen).tolist() for rid, n in ((0, 9), (1, 600))
    }
    executor = with_pieces(ServingExecutor(
        model, num_blocks=48, block_size=16, max_seq_length=640,
        prompt_tokens=lambda rid, start, n: prompts[rid][start : start + n],
    ), max_tokens=700)  # fmt: skip
    assert executor.piecewise.buckets[-3:] == [512, 640, 700]
    sampled: dict[int, list[int]] = {rid: [] for rid in prompts}
    for decodes, chunks, completed in (([], [(0, 0, 9)], [0]), ([0], [(1, 0, 600)], [1]),
                                       ([0, 1], [], [])):  # fmt: skip
        executor(Step(decode=decodes, prefill=chunks))
        for rid in decodes + completed:
            sampled[rid].append(executor.last_token[rid])
    for rid, prompt in prompts.items():
        assert sampled[rid] == greedy(model, prompt, len(sampled[rid])), rid
    assert [r.path for r in executor.records] == ["piecewise"] * 3
    assert executor.piecewise.bucket(601) == 640


def test_a_draft_models_rounds_with_chunks_run_the_target_from_pieces():
    """And the draft model's prefill of the same chunks from its own pieces: its cache must
    hold the prompts, or the drafts it keeps would not be greedy decoding."""
    executor, model, prompts = draft_executor()
    with_pieces(executor, max_tokens=64)
    pieces, prefills = executor.drafter.pieces, []
    run = pieces.run
    pieces.run = lambda token_ids, batch: prefills.append(token_ids.shape[1]) or run(token_ids,
                                                                                   batch)  # fmt: skip
    run_plan(executor)
    assert {r.path for r in executor.records} == {"piecewise"}
    assert prefills == [11, 4, 3]  # the rounds' prompt tokens
    assert_greedy(executor, model, prompts)


def test_an_eagle_heads_rounds_read_the_targets_states_from_pieces():
    """The pieces keep the residual stream after the layers an EAGLE-3 head reads: every round
    (with prompt chunks or without, as this executor has no round graphs) runs from pieces and
    leaves the states the eager forward leaves, so the head drafts, and the target keeps, the
    same tokens."""
    prompts = random_prompts()
    runs = []
    for pieces in (False, True):
        executor, model = speculative_executor(lambda model: EagleHead(model, G), prompts)
        if pieces:
            with_pieces(executor, max_tokens=64)
        states, tokens = [], []
        for decodes, accepted, chunks in PLAN:
            executor(Step(decode=decodes, prefill=chunks, accepted=accepted))
            states.append(model.hidden.clone())
            tokens.append(dict(executor.last_token))
        runs.append((states, tokens, {r.path for r in executor.records}))
    (eager_states, eager_tokens, eager_paths), (states, tokens, paths) = runs
    assert eager_paths == {"eager"} and paths == {"piecewise"}
    assert tokens == eager_tokens
    assert all(s.shape[-1] == 3 * model.spec.hidden_size for s in states)
    for mine, want in zip(states, eager_states, strict=True):
        torch.testing.assert_close(mine, want)
