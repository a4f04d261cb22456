"""Workloads: arrival processes, length distributions, presets, traces and SLO parsing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.data.workload import (
    LengthDist,
    Slo,
    get_workload,
    list_workloads,
    parse_slo,
    sample_requests,
)
from simulator.errors import WorkloadError

TRACES = Path(__file__).resolve().parent.parent / "data" / "traces"


def test_presets_cover_the_shapes_and_the_benchmark_pairs():
    names = list_workloads()
    for name in (
        "chat",
        "summarization",
        "code",
        "isl128-osl128",
        "isl128-osl2048",
        "isl2048-osl128",
        "isl5000-osl500",
        "isl20000-osl2000",
    ):
        assert name in names
    requests = sample_requests(get_workload("isl5000-osl500", num_requests=10), 0)
    assert (requests.prompt_tokens == 5000).all() and (requests.output_tokens == 500).all()
    assert (requests.arrival_s == 0).all(), "benchmark pairs run offline: all queued at 0"


def test_same_seed_same_requests_other_seed_other_requests():
    workload = get_workload("chat", num_requests=200)
    a, b, c = (sample_requests(workload, s) for s in (3, 3, 4))
    assert np.array_equal(a.arrival_s, b.arrival_s)
    assert np.array_equal(a.prompt_tokens, b.prompt_tokens)
    assert not np.array_equal(a.prompt_tokens, c.prompt_tokens)


def test_poisson_rate_and_gamma_burstiness():
    poisson = sample_requests(get_workload("chat", rate=5, num_requests=20_000), 0)
    gaps = np.diff(poisson.arrival_s)
    # Exponential gaps: mean 1/rate, coefficient of variation 1 (+-3 % at 20k samples).
    assert gaps.mean() == pytest.approx(0.2, rel=0.03)
    assert gaps.std() / gaps.mean() == pytest.approx(1.0, rel=0.03)
    bursty = sample_requests(get_workload("chat:cv=3", rate=5, num_requests=20_000), 0)
    gaps = np.diff(bursty.arrival_s)
    assert gaps.mean() == pytest.approx(0.2, rel=0.06)
    assert gaps.std() / gaps.mean() == pytest.approx(3.0, rel=0.06)


def test_rates_share_random_numbers():
    """Gaps are drawn for a unit rate and divided by the rate: doubling the rate halves every
    arrival time (what lets a bisection on the rate compare like with like)."""
    slow = sample_requests(get_workload("chat", rate=2, num_requests=300), 7)
    fast = sample_requests(get_workload("chat", rate=4, num_requests=300), 7)
    np.testing.assert_allclose(fast.arrival_s, slow.arrival_s / 2, rtol=1e-12)
    assert np.array_equal(fast.prompt_tokens, slow.prompt_tokens)


def test_closed_loop_and_offline():
    closed = get_workload("chat:concurrency=16,think=0.5")
    assert closed.arrival.process == "closed" and closed.arrival.concurrency == 16
    assert closed.arrival.think_s == 0.5
    offline = get_workload("chat", rate="inf")
    assert offline.arrival.process == "offline"
    assert (sample_requests(offline, 0).arrival_s == 0).all()
    with pytest.raises(WorkloadError, match="closed-loop"):
        get_workload("chat:concurrency=4", rate=3)


@pytest.mark.parametrize(
    "dist, mean, std",
    [
        (LengthDist(kind="lognormal", mean=800, std=400), 800, 400),
        (LengthDist(kind="normal", mean=300, std=50), 300, 50),
        # Uniform on 100..300 inclusive: mean 200, variance ((201)^2 - 1) / 12.
        (LengthDist(kind="uniform", low=100, high=300), 200, ((201**2 - 1) / 12) ** 0.5),
    ],
)
def test_length_distributions_have_their_moments(dist, mean, std):
    x = dist.sample(np.random.default_rng(0), 50_000)
    assert x.mean() == pytest.approx(mean, rel=0.02)
    assert x.std() == pytest.approx(std, rel=0.03)


def test_empirical_lengths_follow_their_weights():
    dist = LengthDist(kind="empirical", values=(10, 20, 30), weights=(1, 2, 1))
    x = dist.sample(np.random.default_rng(1), 40_000)
    assert set(np.unique(x)) == {10, 20, 30}
    assert (x == 20).mean() == pytest.approx(0.5, abs=0.01)


@settings(max_examples=40, deadline=None)
@given(
    mean=st.floats(2, 5000),
    std=st.floats(0, 5000),
    low=st.integers(1, 50),
    span=st.integers(0, 3000),
)
def test_lengths_are_integers_within_bounds(mean, std, low, span):
    dist = LengthDist(kind="lognormal", mean=mean, std=std, min=low, max=low + span)
    x = dist.sample(np.random.default_rng(0), 200)
    assert x.dtype.kind == "i" and x.min() >= low and x.max() <= low + span


@pytest.mark.parametrize("name", ["small.jsonl", "small.csv"])
def test_trace_replay(name):
    workload = get_workload(str(TRACES / name))
    requests = sample_requests(workload, 0)
    assert requests.prompt_tokens.tolist() == [512, 1024, 256, 2048]
    assert requests.output_tokens.tolist() == [64, 128, 32, 16]
    assert requests.arrival_s.tolist() == [0.0, 0.5, 1.0, 2.0]
    # A rate rescales the time axis: 4 requests at 3 req/s span (4 - 1) / 3 = 1 s.
    faster = sample_requests(get_workload(str(TRACES / name), rate=3), 0)
    np.testing.assert_allclose(faster.arrival_s, [0.0, 0.25, 0.5, 1.0])


@pytest.mark.parametrize(
    "name, message",
    [
        ("empty.jsonl", "holds no requests"),
        ("garbled.jsonl", "line 2: not valid JSON"),
        ("bad_tokens.csv", "line 3: prompt_tokens must be a positive integer"),
        ("missing.jsonl", "not found"),
    ],
)
def test_bad_traces_fail_in_one_line(name, message):
    with pytest.raises(WorkloadError, match=message) as error:
        get_workload(str(TRACES / name))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("rate", [-1, 0, "0", "nan", "fast"])
def test_bad_rates(rate):
    with pytest.raises(WorkloadError):
        get_workload("chat", rate=rate)


def test_bad_names_and_options():
    with pytest.raises(WorkloadError, match="unknown workload 'chats'"):
        get_workload("chats")
    with pytest.raises(WorkloadError, match="workload option"):
        get_workload("chat:speed=3")
    with pytest.raises(WorkloadError, match="prefix_sharing"):
        get_workload("chat:prefix=1.5")


@pytest.mark.parametrize(
    "text, metric, percentile, target",
    [
        ("ttft_p99=2s", "ttft", 99, 2.0),
        ("tpot_p90=50ms", "tpot", 90, 0.05),
        ("E2E_p50 <= 30s", "e2e", 50, 30.0),
        ("itl_p99.9=200ms", "itl", 99.9, 0.2),
    ],
)
def test_parse_slo(text, metric, percentile, target):
    assert parse_slo(text) == Slo(metric=metric, percentile=percentile, target_s=target)


@pytest.mark.parametrize(
    "text",
    [
        "ttft=2s",
        "ttft_p99",
        "ttft_p0=1s",
        "ttft_p150=1s",
        "ttft_p99=0s",
        "latency_p99=1s",
        "ttft_p99=soon",
    ],
)
def test_bad_slos(text):
    with pytest.raises(WorkloadError):
        parse_slo(text)


def test_trace_without_arrival_times_is_offline_or_poisson_at_a_rate(tmp_path):
    """Lengths only: offline as given, and Poisson at the rate when one is given. (It used to
    keep every request at t = 0 whatever the rate.)"""
    lengths = tmp_path / "lengths.jsonl"
    lengths.write_text(
        "".join(f'{{"prompt_tokens": {100 + i}, "output_tokens": 10}}\n' for i in range(400))
    )
    offline = get_workload(str(lengths))
    assert offline.arrival.process == "offline"
    assert not sample_requests(offline, 0).arrival_s.any()
    poisson = get_workload(str(lengths), rate=4.0)
    assert poisson.arrival.process == "poisson"
    requests = sample_requests(poisson, 0)
    assert requests.prompt_tokens.tolist() == list(range(100, 500))  # the trace's lengths
    gaps = np.diff(requests.arrival_s)
    assert (gaps >= 0).all() and gaps.mean() == pytest.approx(1 / 4.0, rel=0.15)
    assert np.std(gaps) / gaps.mean() == pytest.approx(1.0, abs=0.15)  # exponential gaps


def test_fixed_lengths_as_options():
    workload = get_workload("chat:isl=1000,osl=200", rate=2.0)
    requests = sample_requests(workload, 0)
    assert set(requests.prompt_tokens.tolist()) == {1000}
    assert set(requests.output_tokens.tolist()) == {200}
    assert workload.arrival.rate_per_s == 2.0
    pair = get_workload("isl3000-osl150")  # any pair, not only the presets
    assert pair.arrival.process == "offline"
    assert sample_requests(pair, 0).prompt_tokens[0] == 3000
    for bad in ("chat:isl=0", "chat:osl=ten"):
        with pytest.raises(WorkloadError, match="workload"):
            get_workload(bad)


@pytest.mark.parametrize("text", ["tpot_p99=50", "ttft_p90=2", "e2e_p50=1.5"])
def test_an_slo_target_without_a_unit_is_refused(text):
    """``tpot_p99=50`` used to be read as 50 seconds and reported as met."""
    from simulator.data.slo import parse_slo

    with pytest.raises(WorkloadError, match="needs a unit"):
        parse_slo(text)
    assert parse_slo(text + "ms").target_s == pytest.approx(float(text.split("=")[1]) / 1000)


@pytest.mark.parametrize("spelling", ["chat:requests=1000000000", None])
def test_an_unbounded_request_count_is_refused(spelling):
    """``--requests 1000000000`` grew to 24 GB before it was killed: refused in one line."""
    with pytest.raises(WorkloadError, match="1,?000,?000"):
        if spelling:
            get_workload(spelling)
        else:
            get_workload("chat", num_requests=10**9)
