"""The serving loop on a GPU: iterations replayed from CUDA graphs (decode buckets, piecewise
graphs, a draft model's rounds) sample what the same iterations run eagerly do."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")


def _loop_samples(graphs: int, piecewise: int, steps, draft: int = 0) -> tuple[dict, set]:
    """Each request's sampled tokens, and the paths its iterations took, when a float32 tiny
    model (GEMMs that a row count cannot tip across a near tie) serves ``steps`` (lists of
    decoding requests beside prompt chunks) through the serving loop on this GPU: decode graphs
    up to ``graphs`` sequences, piecewise graphs up to ``piecewise`` tokens (0: eager).
    ``draft``: rounds of that many drafts from a draft model of the same weights, request
    ``rid`` keeping ``rid % (draft + 1)`` of them."""
    from executor.engine import build_model
    from executor.serving_loop import ServingExecutor, Step
    from executor.speculative import DraftModel
    from tests.executor.conftest import tiny_spec

    spec = tiny_spec(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, head_dim=64,
                     intermediate_size=512, vocab_size=97, max_position_embeddings=1024)  # fmt: skip
    generator = torch.Generator().manual_seed(0)
    lengths = torch.randint(3, 60, (20,), generator=generator).tolist()
    prompts = {rid: torch.randint(97, (n,), generator=generator).tolist()
               for rid, n in enumerate(lengths)}  # fmt: skip

    def tokens_of(rid: int) -> list[int]:  # the warm-up's own requests (rid < 0): any tokens
        return prompts.get(rid, [1] * 256)

    def model():
        return build_model(spec, device="cuda", dtype=torch.float32, seed=1, fused_kernels=True)

    executor = ServingExecutor(model(), num_blocks=256, block_size=16, max_seq_length=512,
                               prompt_tokens=lambda rid, start, n: tokens_of(rid)[start : start + n],
                               graphs_up_to=graphs, piecewise_up_to=piecewise, token_budget=128,
                               drafter=DraftModel(model(), draft) if draft else None)  # fmt: skip
    executor.warm_up()
    sampled: dict[int, list[int]] = {}
    for rid, prompt in list(prompts.items())[:10]:  # half of them first, alone
        executor(Step([], [(rid, 0, len(prompt))]))
        sampled[rid] = [executor.last_token[rid]]
    for decodes, chunk in steps:  # then the other half's prompts beside the decodes
        prefill = [] if chunk is None else [(chunk, 0, len(prompts[chunk]))]
        kept = [rid % (draft + 1) for rid in decodes] if draft else None
        executor(Step(decodes, prefill, accepted=kept))
        for rid in decodes:
            sampled[rid].append(executor.last_token[rid])
        if chunk is not None:
            sampled[chunk] = [executor.last_token[chunk]]
    return sampled, {record.path for record in executor.records}


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graphs_of_every_bucket_sample_what_eager_iterations_do_on_gpu():
    """The serving loop's iterations replayed from graphs sample the tokens that the same
    iterations run eagerly do: decodes at vLLM's capture sizes (one memory pool shared by every
    bucket, each batch padded to its bucket, the buckets replayed in no particular order), and
    prompt chunks beside decodes from piecewise graphs (attention between the pieces)."""
    from executor.serving_graphs import capture_sizes

    assert capture_sizes(20) == [1, 2, 4, 8, 16, 20]
    # Decode-only batches of 3, 11, 1, 13 and 17 (buckets 4, 16, 1, 16, 20); a prompt beside
    # the decodes, each request decoding from the step after its prompt.
    steps = [([0, 1, 2], None), (list(range(9)), 10), (list(range(11)), None),
             (list(range(5)), 11), (list(range(12)), 12), ([0], None),
             (list(range(13)), None), (list(range(2)), 13), (list(range(14)), 14),
             (list(range(15)), 15), (list(range(16)), 16), (list(range(17)), None)]  # fmt: skip
    graphed, paths = _loop_samples(20, 128, steps)
    assert {"graph", "piecewise"} <= paths, paths
    eager, paths = _loop_samples(0, 0, steps)
    assert paths == {"eager"}, paths
    assert graphed == eager


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_speculative_rounds_from_graphs_sample_what_eager_rounds_do_on_gpu():
    """A draft model's rounds from graphs: without prompt chunks the round graphs (drafts and
    verify in one), with chunks the propose graphs (the drafts alone) and the verify from the
    piecewise graphs; the same tokens as the same rounds run eagerly."""
    steps = [([0, 1, 2], None), (list(range(9)), 10), (list(range(5)), 11), ([0], None),
             (list(range(2)), 13), (list(range(11)), None)]  # fmt: skip
    graphed, paths = _loop_samples(20, 128, steps, draft=3)
    assert {"graph", "piecewise"} <= paths, paths
    eager, paths = _loop_samples(0, 0, steps, draft=3)
    assert paths == {"eager"}, paths
    assert graphed == eager
