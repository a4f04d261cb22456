"""The serving simulation against queueing facts and the step model it is built on."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cost.step import StepModel
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.data.workload import Arrival, LengthDist, Workload, get_workload
from simulator.results import percentiles
from simulator.serving.simulate import simulate, weighted_percentiles
from simulator.serving.timeline import write_chrome_trace, write_timeline_csv

MODEL = get_model("llama-3.1-8b")
H100 = load_hardware("h100-sxm")


def fixed(prompt: int, output: int, *, rate: float | None, n: int) -> Workload:
    """Fixed lengths; arrivals nearly evenly spaced (Gamma gaps with cv 0.05) or offline."""
    arrival = (
        Arrival(process="gamma", rate_per_s=rate, cv=0.05) if rate else Arrival(process="offline")
    )
    return Workload(
        name=f"{prompt}/{output}",
        num_requests=n,
        arrival=arrival,
        prompt=LengthDist(mean=prompt),
        output=LengthDist(mean=output),
    )


def test_light_load_ttft_is_the_prefill_and_tpot_the_batch_one_decode():
    """Arrivals 50 s apart, each request alone on the GPU: TTFT is one prefill step of 512
    tokens (same features as StepModel.prefill(1, 512)) and the 63 decode steps write slots
    512..574, so TPOT is the mean of decode(1, 512 + j) for j = 0..62."""
    config = DeploymentConfig()
    result = simulate(MODEL, H100, config, fixed(512, 64, rate=0.02, n=20))
    step = StepModel.build(MODEL, H100, config)
    prefill = float(step.prefill(1, 512).latency_s[0])
    decode = float(step.decode(1, 512 + np.arange(63)).latency_s.mean())
    ttft = result.first_token_s - result.arrival_s
    tpot = (result.finish_s - result.first_token_s) / 63
    np.testing.assert_allclose(ttft, prefill, rtol=1e-9, err_msg="TTFT != prefill(1, 512)")
    np.testing.assert_allclose(tpot, decode, rtol=1e-9, err_msg="TPOT != mean decode(1, ctx)")
    assert result.prediction.queue_s.p99 == 0.0
    assert not result.overloaded


@pytest.mark.parametrize("rate", [3.0, 12.0])
def test_littles_law(rate):
    """Mean number of requests in the system = arrival rate x mean E2E (+-5 %). L is what the
    engine held when each request arrived (routed, not finished): with Poisson arrivals its
    mean is the time average, and it is counted from the engine's state, not from E2E."""
    result = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("chat", rate=rate, num_requests=5000)
    )
    mean_in_system = float(result.in_system_at_arrival.mean())
    e2e = result.prediction.e2e_s.mean
    assert mean_in_system == pytest.approx(rate * e2e, rel=0.05), (mean_in_system, rate * e2e)
    # The same from the request times: the time integral of N(t) over [0, last arrival].
    horizon = float(result.arrival_s.max())
    in_system = np.minimum(result.finish_s, horizon) - np.minimum(result.arrival_s, horizon)
    assert in_system.sum() / horizon == pytest.approx(rate * e2e, rel=0.05)


def test_throughput_never_exceeds_the_step_model():
    """Offline, 64 sequences at most: no step emits more than 64 tokens, and a step of 64
    decodes takes at least decode(64, 128) (contexts are >= 128 and prefills add time), so
    output tokens/s <= 64 / decode(64, 128). Continuous batching should get near it."""
    config = DeploymentConfig(max_num_seqs=64)
    result = simulate(MODEL, H100, config, get_workload("isl128-osl128", num_requests=640))
    step = StepModel.build(MODEL, H100, config)
    bound = 64 / float(step.decode(64, 128).latency_s[0])
    achieved = result.prediction.output_tokens_per_s
    assert achieved <= bound, f"{achieved:.0f} tokens/s > step-model bound {bound:.0f}"
    assert achieved > 0.6 * bound
    assert not result.overloaded, "offline runs measure throughput; they are not overload"


def test_overload_is_reported_and_the_queue_grows():
    over = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("chat", rate=60, num_requests=2000)
    )
    assert over.overloaded and over.prediction.overloaded
    queue = over.admit_s - over.arrival_s
    order = np.argsort(over.arrival_s)
    assert queue[order[-200:]].mean() > 10 * queue[order[:200]].mean() + 1.0
    assert over.prediction.requests_per_s < 0.6 * 60
    light = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("chat", rate=4, num_requests=2000)
    )
    assert not light.overloaded


def test_continuous_batching_beats_static_batching():
    config = dict(max_num_seqs=64)
    offline = get_workload("chat", rate="inf", num_requests=640)
    continuous = simulate(MODEL, H100, DeploymentConfig(**config), offline).prediction
    static = simulate(
        MODEL, H100, DeploymentConfig(scheduling="static", **config), offline
    ).prediction
    assert continuous.output_tokens_per_s > 1.5 * static.output_tokens_per_s
    traffic = get_workload("chat", rate=3, num_requests=600)
    continuous = simulate(MODEL, H100, DeploymentConfig(**config), traffic).prediction
    static = simulate(
        MODEL, H100, DeploymentConfig(scheduling="static", **config), traffic
    ).prediction
    assert continuous.e2e_s.p99 < static.e2e_s.p99
    assert continuous.ttft_s.p99 < static.ttft_s.p99


def test_chunked_prefill_lowers_tail_tpot_under_mixed_traffic():
    """Long prompts arriving among running decodes: without chunking a 6k-token prefill stalls
    every decode for the whole prefill; a 512-token budget caps each step."""
    workload = get_workload("summarization", rate=1.5, num_requests=400)
    chunked = simulate(
        MODEL, H100, DeploymentConfig(max_model_len=16384, max_num_batched_tokens=512), workload
    ).prediction
    whole = simulate(
        MODEL,
        H100,
        DeploymentConfig(
            max_model_len=16384, max_num_batched_tokens=16384, enable_chunked_prefill=False
        ),
        workload,
    ).prediction
    assert chunked.tpot_s.p99 < whole.tpot_s.p99
    assert chunked.itl_s.p99 < 0.5 * whole.itl_s.p99


def test_same_seed_same_result():
    workload = get_workload("chat", rate=10, num_requests=500)
    a = simulate(MODEL, H100, DeploymentConfig(), workload, seed=5)
    b = simulate(MODEL, H100, DeploymentConfig(), workload, seed=5)
    c = simulate(MODEL, H100, DeploymentConfig(), workload, seed=6)
    assert a.prediction.model_dump() == b.prediction.model_dump()
    assert np.array_equal(a.finish_s, b.finish_s)
    assert not np.array_equal(a.finish_s, c.finish_s)


def test_preemption_when_blocks_run_out():
    """A KV cache of a few thousand tokens under heavy traffic: sequences are preempted and
    recomputed, yet every request finishes with all its tokens and the cache never overflows."""
    config = DeploymentConfig(gpu_memory_utilization=0.25)
    result = simulate(MODEL, H100, config, get_workload("chat", rate=20, num_requests=800))
    assert result.preemptions > 0
    assert np.isfinite(result.finish_s).all()
    assert (result.finish_s >= result.first_token_s).all()
    assert (result.first_token_s > result.arrival_s).all()
    assert result.prediction.kv_utilization_peak <= 1.0


def test_data_parallel_replicas_and_routers():
    workload = get_workload("isl128-osl128", num_requests=400)
    one = simulate(MODEL, H100, DeploymentConfig(), workload).prediction
    two = simulate(MODEL, H100, DeploymentConfig(dp=2), workload).prediction
    assert two.num_gpus == 2
    assert two.requests_per_s == pytest.approx(2 * one.requests_per_s, rel=0.1)
    rr = simulate(
        MODEL,
        H100,
        DeploymentConfig(dp=4),
        get_workload("chat", rate=8, num_requests=400),
        router="round_robin",
    )
    assert np.bincount(rr.replica).tolist() == [100, 100, 100, 100]


def test_closed_loop_keeps_at_most_n_users_in_flight():
    result = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("chat:concurrency=8", num_requests=300)
    )
    times = np.concatenate([result.arrival_s, result.finish_s])
    change = np.concatenate([np.ones(300), -np.ones(300)])
    order = np.lexsort((change, times))  # finishes before arrivals at the same instant
    assert np.cumsum(change[order]).max() == 8
    single = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("chat:concurrency=1", num_requests=20)
    )
    np.testing.assert_allclose(single.arrival_s[1:], single.finish_s[:-1])


def test_prefix_sharing_skips_prefill_compute():
    base = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("code:prefix=0", num_requests=400)
    ).prediction
    shared = simulate(
        MODEL, H100, DeploymentConfig(), get_workload("code:prefix=0.8", num_requests=400)
    ).prediction
    assert shared.ttft_s.mean < 0.6 * base.ttft_s.mean
    assert shared.workload["cached_prompt_fraction"] > 0.7


def test_pipeline_parallel_lone_request_pays_every_stage():
    workload = fixed(2048, 16, rate=0.05, n=5)
    one = simulate(MODEL, H100, DeploymentConfig(), workload).prediction
    two = simulate(MODEL, H100, DeploymentConfig(pp=2), workload).prediction
    assert two.ttft_s.mean >= one.ttft_s.mean, "one micro-batch crosses both stages"


def test_configurations_that_cannot_run_are_values_not_errors():
    big = simulate(
        get_model("llama-3.1-405b"),
        H100,
        DeploymentConfig(),
        get_workload("chat", num_requests=10),
    )
    assert not big.fits and "does not fit" in big.prediction.reason
    short = simulate(
        MODEL,
        H100,
        DeploymentConfig(max_model_len=1024),
        get_workload("isl2048-osl128", num_requests=4),
    )
    assert not short.fits and "max_model_len=1024" in short.prediction.reason


def test_weighted_percentiles_equal_repeated_samples():
    rng = np.random.default_rng(0)
    values, counts = rng.random(300), rng.integers(0, 20, 300)
    expected = percentiles(np.repeat(values, counts))
    got = weighted_percentiles(values, counts)
    for key in ("mean", "p50", "p90", "p99"):
        assert getattr(got, key) == pytest.approx(getattr(expected, key), rel=1e-12)


def test_prediction_contract_and_exports(tmp_path, capsys):
    result = simulate(
        MODEL,
        H100,
        DeploymentConfig(),
        get_workload("chat", rate=5, num_requests=50, slos=("ttft_p99=2s", "tpot_p90=1ms")),
        progress=True,
    )
    p = result.prediction
    for field in ("ttft_s", "tpot_s", "itl_s", "e2e_s", "queue_s"):
        stats = getattr(p, field)
        assert stats.p50 <= stats.p90 <= stats.p99
    assert p.output_tokens_per_s_per_gpu == p.output_tokens_per_s
    # 8B on one H100 at its listed price: $ per million output tokens = price / (tokens/s x 3600)
    # x 1e6.
    price = H100.price_per_hour
    assert p.cost_per_million_tokens == pytest.approx(price / (p.output_tokens_per_s * 3600) * 1e6)
    assert [s["met"] for s in p.slos] == [True, False]
    assert p.goodput_requests_per_s == 0.0, "no request meets a 1 ms TPOT"
    json.dumps(p.model_dump(mode="json"))
    rows = list(csv.DictReader(write_timeline_csv(result, tmp_path / "t.csv").open()))
    assert len(rows) == 50 and float(rows[0]["arrival_s"]) == 0.0
    trace = json.loads(write_chrome_trace(result, tmp_path / "t.json").read_text())
    assert sum(e["name"] == "decode" for e in trace["traceEvents"]) == 50


@settings(max_examples=25, deadline=None)
@given(
    max_num_seqs=st.sampled_from([4, 32, 256]),
    budget=st.sampled_from([256, 2048, 8192]),
    chunked=st.booleans(),
    block_size=st.sampled_from([16, 32]),
    memory=st.sampled_from([0.28, 0.9]),
    pp=st.sampled_from([1, 2]),
    dp=st.sampled_from([1, 2]),
    spec=st.sampled_from([None, "ngram"]),
    static=st.booleans(),
    seed=st.integers(0, 3),
)
def test_every_request_finishes_in_order(
    max_num_seqs, budget, chunked, block_size, memory, pp, dp, spec, static, seed
):
    """Whatever the knobs: every request is admitted after it arrives, gets its first token
    after admission and finishes after that; the KV cache never overflows; a rerun is equal."""
    if static and spec:
        return
    config = DeploymentConfig(
        max_num_seqs=max_num_seqs,
        max_num_batched_tokens=max(budget, max_num_seqs) if chunked else 8192,
        enable_chunked_prefill=chunked,
        block_size=block_size,
        gpu_memory_utilization=memory,
        pp=pp,
        dp=dp,
        scheduling="static" if static else "continuous",
        speculative=SpeculativeConfig(method="ngram", num_speculative_tokens=3) if spec else None,
    )
    workload = get_workload("chat", rate=30, num_requests=60)
    result = simulate(MODEL, H100, config, workload, seed=seed)
    assert result.fits, result.prediction.reason
    assert (result.admit_s >= result.arrival_s).all()
    assert (result.first_token_s > result.admit_s).all()
    assert (result.finish_s >= result.first_token_s).all()
    assert result.prediction.kv_utilization_peak <= 1.0
    again = simulate(MODEL, H100, config, workload, seed=seed)
    assert np.array_equal(result.finish_s, again.finish_s)


def _run(config: DeploymentConfig, rate: float, n: int = 300):
    from simulator.serving.capacity import at_rate

    return simulate(MODEL, H100, config, at_rate(get_workload("chat", num_requests=n), rate),
                    seed=0)  # fmt: skip


@pytest.mark.parametrize("rate", [4.0, 12.0])
def test_a_run_no_limit_shaped_is_the_run_under_larger_limits(rate):
    """The schedule depends on max_num_seqs, the token budget and the KV blocks only where one
    of them said no; a run none of them shaped is exactly the run under larger ones."""
    base = DeploymentConfig(max_num_seqs=128, max_num_batched_tokens=8192, max_model_len=8192)
    run = _run(base, rate)
    assert not run.limits.bound_by, run.limits
    for seqs, tokens, chunked in ((256, 16384, True), (512, 8192, False)):
        other = _run(base.model_copy(update=dict(max_num_seqs=seqs, enable_chunked_prefill=chunked,
                                                 max_num_batched_tokens=tokens)), rate)  # fmt: skip
        assert run.limits.same_schedule(max_num_seqs=seqs, token_budget=tokens,
                                        kv_blocks=other.limits.kv_blocks)  # fmt: skip
        for name in ("ttft_s", "tpot_s", "e2e_s"):
            mine, theirs = getattr(run.prediction, name), getattr(other.prediction, name)
            assert theirs.p99 == pytest.approx(mine.p99, rel=1e-9), name
            assert theirs.mean == pytest.approx(mine.mean, rel=1e-9), name


def test_a_limit_that_said_no_is_named():
    run = _run(DeploymentConfig(max_num_seqs=4, max_num_batched_tokens=2048, max_model_len=8192),
               12.0)  # fmt: skip
    assert {"max_num_seqs", "token_budget"} <= run.limits.bound_by
    assert not run.limits.same_schedule(max_num_seqs=8, token_budget=2048,
                                        kv_blocks=run.limits.kv_blocks)  # fmt: skip


def test_a_run_that_never_settles_is_overloaded():
    """150 requests at 100 req/s all fit a batch of 512: nobody waits, but arrivals outpace
    completions the whole run, so it proves no capacity."""
    config = DeploymentConfig(max_num_seqs=512, max_model_len=8192)
    assert _run(config, 100.0, n=150).overloaded
    assert not _run(config, 5.0, n=150).overloaded
