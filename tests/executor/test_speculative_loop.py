"""Speculative rounds in the serving loop on a tiny model (CPU).

A draft model with the target's own weights proposes exactly the target's greedy tokens, so
whatever number of drafts the scheduler lets a sequence keep, the tokens it ends up with must be
plain greedy decoding: that checks the verify (several tokens per sequence, each attending
causally over the paged cache), the kept-token bookkeeping, and the draft's own cache, which
after a round that kept every draft is one token behind.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.serving_loop import ServingExecutor, Step  # noqa: E402
from executor.speculative import DraftModel, EagleHead, PromptLookup  # noqa: E402
from simulator.data.hardware import load_hardware  # noqa: E402
from simulator.data.specs import DeploymentConfig, SpeculativeConfig  # noqa: E402
from simulator.data.workload import get_workload  # noqa: E402
from simulator.serving.simulate import simulate  # noqa: E402
from tests.executor.test_serving_loop import TINY, greedy, tiny_model  # noqa: E402

G = 3


# (decodes, their kept drafts, prompt chunks): every count from none to all g, a sequence
# keeping all g twice in a row, prompt chunks beside rounds.
PLAN = [
    ([], None, [(0, 0, 6), (1, 0, 5)]),
    ([1], [3], [(0, 6, 4)]),
    ([0, 1], [0, 3], []),
    ([1, 0], [2, 3], [(2, 0, 3)]),
    ([0, 1, 2], [1, 0, 3], []),
    ([2, 0, 1], [3, 3, 1], []),
]
PROMPTS = {0: 10, 1: 5, 2: 3}


def run_plan(executor, plan=PLAN):
    for decodes, accepted, chunks in plan:
        executor(Step(decode=decodes, prefill=chunks, accepted=accepted))


def random_prompts() -> dict[int, list[int]]:
    """The prompts of ``PROMPTS``' lengths, the same random tokens every time."""
    gen = torch.Generator().manual_seed(0)
    return {rid: torch.randint(97, (n,), generator=gen).tolist() for rid, n in PROMPTS.items()}


def speculative_executor(make_drafter, prompts: dict[int, list[int]]):
    """(An executor over a fresh tiny target whose drafter is ``make_drafter(target)``, fed
    ``prompts``; the target). Random drafter weights are seeded alike every time."""
    model = tiny_model()
    torch.manual_seed(3)
    executor = ServingExecutor(model, num_blocks=48, block_size=4, max_seq_length=64,
                               prompt_tokens=lambda rid, s, n: prompts[rid][s : s + n],
                               drafter=make_drafter(model))  # fmt: skip
    return executor, model


def draft_executor() -> tuple[ServingExecutor, torch.nn.Module, dict[int, list[int]]]:
    """(An executor whose drafter is a draft model, its target, the random prompts of
    ``PROMPTS`` it is fed)."""
    prompts = random_prompts()
    executor, model = speculative_executor(lambda model: DraftModel(tiny_model(), G), prompts)
    return executor, model, prompts


def assert_greedy(executor: ServingExecutor, model, prompts: dict[int, list[int]]) -> None:
    """Each sequence's last token is plain greedy decoding's at its length."""
    for rid, prompt in prompts.items():
        made = executor.lengths[rid] - len(prompt)
        assert executor.last_token[rid] == greedy(model, prompt, made + 1)[made], rid


def test_a_draft_with_the_targets_weights_leaves_greedy_decoding_whatever_is_kept():
    executor, model, prompts = draft_executor()
    run_plan(executor)
    # Each round adds its kept drafts and one token to the prompt's length.
    assert executor.lengths == {0: 10 + 1 + 4 + 2 + 4, 1: 5 + 4 + 4 + 3 + 1 + 2, 2: 3 + 4 + 4}
    assert_greedy(executor, model, prompts)


def test_rounds_without_a_draft_model_keep_what_the_scheduler_says():
    """Prompt lookup and an EAGLE-style head: the rounds run and each sequence advances by the
    kept drafts plus one, its blocks covering what it kept."""
    for make in (lambda model: PromptLookup(G), lambda model: EagleHead(model, G)):
        model = tiny_model()
        executor = ServingExecutor(model, num_blocks=48, block_size=4, max_seq_length=64,
                                   drafter=make(model))  # fmt: skip
        run_plan(executor)
        assert executor.lengths == {0: 21, 1: 19, 2: 11}
        for rid, length in executor.lengths.items():
            assert len(executor.tables[rid]) * 4 >= length


def test_the_scheduler_drives_speculative_rounds_through_a_workload():
    """The simulator's scheduler with a speculative configuration: it draws the kept drafts
    before each round and the executor keeps exactly those (its lengths are the scheduler's)."""
    speculative = SpeculativeConfig(method="draft", draft_model="llama-3.2-1b",
                                    num_speculative_tokens=G, acceptance_rate=0.6)  # fmt: skip
    config = DeploymentConfig(max_num_seqs=8, max_num_batched_tokens=96, max_model_len=512,
                              block_size=4, speculative=speculative)  # fmt: skip
    workload = get_workload("chat:isl=40,osl=12", num_requests=16, rate=2000.0, seed=2)
    hardware = load_hardware("h100-sxm")
    model = tiny_model()
    executor = ServingExecutor(model, num_blocks=16 * (60 // 4 + 1), block_size=4,
                               max_seq_length=512, drafter=DraftModel(tiny_model(), G))  # fmt: skip
    kept: list[int] = []

    def clock(iteration):
        seconds = executor(iteration)
        kept.extend(iteration.accepted or [])
        return seconds

    measured = simulate(TINY, hardware, config, workload, clock=clock)
    assert measured.prediction.fits and len(measured.finish_s) == 16
    assert kept and 0 < sum(kept) < G * len(kept)  # some drafts kept, not all
    assert all(0 <= k <= G for k in kept)
    assert len(executor.records) == measured.prediction.iterations


def test_rounds_with_prompt_chunks_draft_from_graphs_as_eagerly(monkeypatch):
    """A round outside the round graphs (here, with prompt chunks or not) takes its drafts from
    the bucket's propose graph (a stand-in
    that reruns the captured function on its static buffers, padded to the bucket): the same
    tokens, round by round, as drafting eagerly, for a draft model (still greedy decoding)
    and for an EAGLE-3 head (its drafts random, so only the same as eager)."""
    from executor import speculative_graphs
    from tests.executor.conftest import rerun_capture

    monkeypatch.setattr(speculative_graphs, "capture_graph", rerun_capture)
    replays = []
    run = speculative_graphs.ProposeGraphs.run
    monkeypatch.setattr(speculative_graphs.ProposeGraphs, "run",
                        lambda self, *args: replays.append(len(args[1])) or run(self, *args))  # fmt: skip
    prompts = random_prompts()
    for make in (lambda model: DraftModel(tiny_model(), G), lambda model: EagleHead(model, G)):
        tokens = []
        for graphs in (False, True):
            executor, model = speculative_executor(make, prompts)
            if graphs:
                executor.proposals = speculative_graphs.ProposeGraphs(executor, max_batch=4)
                executor.proposals.capture()
            rounds = []
            for decodes, accepted, chunks in PLAN:
                executor(Step(decode=decodes, prefill=chunks, accepted=accepted))
                rounds.append(sorted(executor.last_token.items()))
            tokens.append(rounds)
        assert tokens[0] == tokens[1]
        if isinstance(executor.drafter, DraftModel):
            assert_greedy(executor, model, prompts)
    # Every round with decodes (this executor has no round graphs), padded to buckets 1, 2, 4.
    assert replays == [1, 2, 2, 3, 3] * 2


TRITON_ROUNDS = """
    import torch
    from executor import decode_attention as attention
    from executor import decode_splits
    from executor.engine import build_model
    from executor.fused import Kernels
    from executor.serving_loop import ServingExecutor
    from executor.speculative import DraftModel
    from simulator.data.specs import ModelSpec
    from tests.executor.test_speculative_loop import PLAN, Step

    spec = ModelSpec(name="tiny", num_hidden_layers=2, hidden_size=64, num_attention_heads=4,
                     num_key_value_heads=2, head_dim=32, intermediate_size=128, vocab_size=97,
                     max_position_embeddings=512)
    decode_splits.MIN_KEYS_PER_SPLIT = 8
    gen = torch.Generator().manual_seed(0)
    prompts = {rid: torch.randint(97, (n,), generator=gen).tolist()
               for rid, n in {0: 10, 1: 5, 2: 3}.items()}
    outputs = []
    for triton in (False, True):
        def model():
            m = build_model(spec, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)
            if triton:  # decodes, draft steps and verifies through the paged kernel
                m.kernels = Kernels(decode_attention=attention.decode_attention,
                                    decode_attention_mode="triton")
            return m
        ex = ServingExecutor(model(), num_blocks=48, block_size=4, max_seq_length=64,
                             prompt_tokens=lambda rid, s, n: prompts[rid][s : s + n],
                             drafter=DraftModel(model(), 3))
        out = []
        for decodes, accepted, chunks in PLAN:
            ex(Step(decode=decodes, prefill=chunks, accepted=accepted))
            out.append(sorted(ex.last_token.items()))
        outputs.append(out)
    print(int(outputs[0] == outputs[1]), outputs[1][-1])
"""


def test_speculative_rounds_through_the_paged_kernel_sample_as_sdpa_does():
    """The draft's two-token first step, its one-token steps and the target's verify through
    the Triton kernel (its CPU interpreter): the tokens of the SDPA path."""
    from tests.executor.conftest import run_in_interpreter

    same, _ = run_in_interpreter(TRITON_ROUNDS).split(" ", 1)
    assert same == "1"


def test_rounds_replayed_from_graphs_leave_greedy_decoding(monkeypatch):
    """Rounds with no prompt chunk replay a captured round per batch bucket (here a stand-in
    graph that reruns the captured function on its static buffers, as a replay does): padded
    to the bucket, the tokens are still plain greedy decoding."""
    from executor import speculative_graphs
    from tests.executor.conftest import rerun_capture

    monkeypatch.setattr(speculative_graphs, "capture_graph", rerun_capture)
    executor, model, prompts = draft_executor()
    executor.graphs = speculative_graphs.RoundGraphs(executor, max_batch=4)
    executor.graphs.capture()
    run_plan(executor)
    assert sum(r.path == "graph" for r in executor.records) == 3  # the three rounds with no chunk
    assert executor.lengths == {0: 21, 1: 19, 2: 11}
    assert_greedy(executor, model, prompts)
    # An EAGLE-3 head's rounds replay too, its states carried out of the graph.
    model = tiny_model()
    executor = ServingExecutor(model, num_blocks=48, block_size=4, max_seq_length=64,
                               drafter=EagleHead(model, G))  # fmt: skip
    executor.graphs = speculative_graphs.RoundGraphs(executor, max_batch=4)
    executor.graphs.capture()
    run_plan(executor)
    assert sum(r.path == "graph" for r in executor.records) == 3
    assert executor.lengths == {0: 21, 1: 19, 2: 11}
