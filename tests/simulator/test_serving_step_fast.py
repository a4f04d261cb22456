"""The one-configuration fast step model reproduces ``StepModel.step`` (to 1e-9 relative)."""

from __future__ import annotations

import bisect

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cost.shapes import decode_features, feature_vector, step_features
from simulator.cost.step import StepModel
from simulator.cost.step_fast import FastStep
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig

CASES = {
    "8b": ("llama-3.1-8b", "h100-sxm", DeploymentConfig()),
    "8b-eager-pp2": ("llama-3.1-8b", "h100-sxm", DeploymentConfig(pp=2, cuda_graphs=False)),
    "70b-tp4-fp8": (
        "llama-3.1-70b",
        "h100-sxm",
        DeploymentConfig(tp=4, weight_dtype="fp8", activation_dtype="fp8", kv_dtype="fp8"),
    ),
    "70b-int4-naive": (
        "llama-3.1-70b",
        "a100-sxm-80gb",
        DeploymentConfig(tp=2, weight_dtype="int4", attention="naive"),
    ),
    "scout-ep": ("llama-4-scout-17b-16e", "h200-sxm", DeploymentConfig(tp=8, ep=8, pp=2)),
}
_BUILT: dict[str, tuple[StepModel, FastStep]] = {}


def built(case: str) -> tuple[StepModel, FastStep]:
    if case not in _BUILT:
        name, gpu, config = CASES[case]
        step = StepModel.build(get_model(name), load_hardware(gpu), config)
        _BUILT[case] = (step, FastStep(step))
    return _BUILT[case]


shapes = st.fixed_dictionaries(
    {
        "prefill_tokens": st.integers(0, 20_000),
        "chunks": st.integers(1, 8),
        "past": st.integers(0, 30_000),
        "decodes": st.integers(0, 512),
        "context": st.integers(1, 20_000),
        "query": st.sampled_from([1, 2, 5]),
    }
)


def aggregate(shape: dict, model) -> dict:
    """Aggregate sums for ``chunks`` equal prefill chunks on ``past`` cached tokens plus
    ``decodes`` sequences at ``context`` with ``query`` tokens each."""
    chunks = shape["chunks"] if shape["prefill_tokens"] else 0
    c = shape["prefill_tokens"] / max(chunks, 1)
    p, b, ctx, q = shape["past"], shape["decodes"], shape["context"], shape["query"]
    return dict(
        prefill_tokens=float(shape["prefill_tokens"]),
        prefill_pairs=chunks * (c * p + c * (c + 1) / 2),
        prefill_kv=chunks * (p + c),
        naive_scores=chunks * c * (p + c),
        prefill_logits=float(chunks),
        decode_tokens=float(b * q),
        decode_kv=float(b * ctx),
        decode_pairs=float(b * q * ctx),
        experts=model.num_local_experts,
        experts_per_token=model.num_experts_per_tok,
    )


@pytest.mark.parametrize("case", list(CASES))
@settings(max_examples=60, deadline=None)
@given(shape=shapes)
def test_fast_step_equals_step_model(case, shape):
    step, fast = built(case)
    sums = aggregate(shape, step.model)
    x = step_features(**sums)
    assert np.array_equal(feature_vector(**sums), x), "hand-built features == shapes.py"
    if x[0] == 0:
        return  # an empty step
    reference = step.step(x[None])
    latency, stage = fast.time(x)
    assert latency == pytest.approx(float(reference.latency_s[0]), rel=1e-9)
    assert stage == pytest.approx(float(reference.stage_s[0]), rel=1e-9)


@pytest.mark.parametrize("case", list(CASES))
def test_decode_runs_equal_step_by_step(case):
    """A run of k decode steps (contexts growing by one per sequence per step) equals k calls,
    both through ``run_decode`` and through the piecewise-linear ``decode_segments``."""
    step, fast = built(case)
    model = step.model
    moe = dict(experts=model.num_local_experts, experts_per_token=model.num_experts_per_tok)
    for batch, context in ((1, 100), (24, 3000), (256, 9000)):
        k = 50
        x0 = decode_features(batch, context, **moe)
        latency, stage = fast.run_decode(x0, batch, k)
        reference = step.decode(batch, context + np.arange(k))
        np.testing.assert_allclose(latency, reference.latency_s, rtol=1e-9)
        np.testing.assert_allclose(stage, reference.stage_s, rtol=1e-9)
        breaks, intercepts, slopes = fast.decode_segments(decode_features(batch, 0, **moe))
        for total in batch * (context + np.arange(k)):
            i = bisect.bisect_right(breaks, total)
            expected = float(step.decode(batch, total / batch).latency_s[0])
            assert intercepts[i] + slopes[i] * total == pytest.approx(expected, rel=1e-9)


def test_invalid_configuration_is_infinitely_slow():
    step = StepModel.build(
        get_model("llama-3.1-8b"), load_hardware("h100-sxm"), DeploymentConfig(tp=3)
    )
    fast = FastStep(step)
    assert fast.time(decode_features(1, 100)) == (float("inf"), float("inf"))


@pytest.mark.parametrize("case", ["8b", "70b-int4-naive"])
def test_decode_latencies_equal_the_steps(case):
    """A drafter's g steps: contexts total c, c + b, ..., c + (g - 1) b over b sequences."""
    step, fast = built(case)
    batch, context, g = 8, 8 * 700.0, 5
    expected = float(step.decode(batch, (context + batch * np.arange(g)) / batch).latency_s.sum())
    got = fast.decode_latencies(batch, np.array([context, context]), g)
    np.testing.assert_allclose(got, expected, rtol=1e-9)
    # A speculative verify: g + 1 query tokens per sequence against each context.
    contexts = batch * np.array([100.0, 2000.0, 30000.0])
    verify = fast.decode_latencies(batch, contexts, query=g + 1)
    reference = step.decode(batch, contexts / batch, query_tokens=g + 1).latency_s
    np.testing.assert_allclose(verify, reference, rtol=1e-9)


def test_host_time_per_token_grows_with_the_batch_in_both_step_models():
    """``token_overhead_s`` is host time per token an iteration emits (sampling, detokenizing,
    streaming): a decode step of B sequences takes B x that more, in the step model and in the
    serving loop's fast one alike."""
    base = load_hardware("h100-sxm")
    per_token = 20e-6
    busy = base.model_copy(update={
        "efficiency": base.efficiency.model_copy(update={"token_overhead_s": per_token})
    })  # fmt: skip
    model = get_model("llama-3.1-8b")
    for batch in (1, 64, 256):
        x = decode_features(batch, 1024)
        slow = [StepModel.build(model, h, DeploymentConfig()) for h in (base, busy)]
        fast = [FastStep(step).time(x)[0] for step in slow]
        grown = float(slow[1].step(x).latency_s[0] - slow[0].step(x).latency_s[0])
        assert grown == pytest.approx(batch * per_token, rel=1e-6)
        assert fast[1] - fast[0] == pytest.approx(batch * per_token, rel=1e-6)


def test_eager_pytorch_pays_its_measured_cost_per_kernel():
    """With no CUDA graph at all, a batch-1 decode step is host-bound: each of its kernels costs
    what eager PyTorch spends around a launch (``eager_kernel_s``, measured: ~56 us on the H200
    host, studies/executor-h200/model-eager.json), not a bare launch. Graph configurations and
    steps too large for a graph keep the bare launch cost."""
    base = load_hardware("h100-sxm")
    eager = base.model_copy(update={
        "efficiency": base.efficiency.model_copy(update={"eager_kernel_s": 50e-6})
    })  # fmt: skip
    model = get_model("llama-3.1-8b")
    x = decode_features(1, 1024)
    no_graph = StepModel.build(model, eager, DeploymentConfig(cuda_graphs=False))
    kernels = float(no_graph.step(x).ops.kernels[0].sum())
    latency = float(no_graph.step(x).latency_s[0])
    assert latency >= kernels * 50e-6
    assert FastStep(no_graph).time(x)[0] == pytest.approx(latency, rel=1e-9)
    with_graph = [StepModel.build(model, h, DeploymentConfig()) for h in (base, eager)]
    assert float(with_graph[0].step(x).latency_s[0]) == float(with_graph[1].step(x).latency_s[0])
