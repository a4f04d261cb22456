"""Capacity bounds: above what the simulation serves, exact where derived by hand, monotone.

The search is only as cheap as its bounds are true: a bound below a configuration's real
capacity would rule out a plan that works. ``test_the_bound_holds_above_the_simulated_capacity``
checks the steady-state bound against the simulation's bracketed capacity on configurations of
every kind the search offers (dense and pipelined, bf16 and FP8, each speculative drafter, a
mixture of experts); ``benchmarks/bench_search.py`` checks it on every configuration of whole
search spaces.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.configs import ConfigArrays
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.data.workload import get_workload, parse_slo, sample_requests
from simulator.serving.bounds import (
    BOUND_SLACK,
    Drafter,
    TrafficShape,
    capacity_bounds,
    tpot_at,
    tpot_floor,
)
from simulator.serving.capacity import find_capacity

H100 = load_hardware("h100-sxm")
SLOS = (parse_slo("ttft_p99=2s"), parse_slo("tpot_p99=50ms"))
CHAT = get_workload("chat", num_requests=400, seed=0)
SHAPE = TrafficShape.from_requests(
    sample_requests(CHAT).prompt_tokens, sample_requests(CHAT).output_tokens
)


def bound(model: str, config: DeploymentConfig, slos=SLOS, shape=SHAPE) -> float:
    spec = config.speculative
    drafter = (
        None
        if spec is None
        else Drafter(
            method=spec.method,
            tokens=spec.num_speculative_tokens,
            acceptance=spec.acceptance_rate,
            draft_model=get_model(spec.draft_model) if spec.method == "draft" else None,
        )
    )
    result = capacity_bounds(
        get_model(model), H100, ConfigArrays.from_configs([config]), shape, slos,
        drafters=[drafter],
    )  # fmt: skip
    return float(result.rate_per_s[0])


def spec(method: str, tokens: int = 3, draft: str | None = None) -> SpeculativeConfig:
    acceptance = {"eagle": 0.75, "draft": 0.65, "ngram": 0.35}[method]
    return SpeculativeConfig(method=method, num_speculative_tokens=tokens,
                             acceptance_rate=acceptance, draft_model=draft)  # fmt: skip


CONFIGS = [
    ("llama-3.1-8b", DeploymentConfig(max_num_seqs=64, max_model_len=8192)),
    (
        "llama-3.1-8b",
        DeploymentConfig(
            weight_dtype="fp8",
            activation_dtype="fp8",
            kv_dtype="fp8",
            max_num_seqs=256,
            max_model_len=8192,
            speculative=spec("eagle", 2, "eagle-head"),
        ),
    ),  # fmt: skip
    (
        "llama-3.1-70b",
        DeploymentConfig(
            tp=4,
            weight_dtype="fp8",
            activation_dtype="fp8",
            max_num_seqs=128,
            max_num_batched_tokens=2048,
            max_model_len=8192,
        ),
    ),  # fmt: skip
    (
        "llama-3.1-70b",
        DeploymentConfig(
            tp=2,
            pp=2,
            weight_dtype="fp8",
            activation_dtype="fp8",
            max_num_seqs=64,
            max_model_len=8192,
            speculative=spec("draft", 4, "llama-3.2-1b"),
        ),
    ),  # fmt: skip
    (
        "llama-3.1-70b",
        DeploymentConfig(
            tp=4,
            max_num_seqs=32,
            enable_chunked_prefill=False,
            max_num_batched_tokens=8192,
            max_model_len=8192,
            speculative=spec("ngram", 3),
        ),
    ),  # fmt: skip
    (
        "llama-4-scout-17b-16e",
        DeploymentConfig(
            tp=4,
            ep=4,
            weight_dtype="fp8",
            activation_dtype="fp8",
            max_num_seqs=128,
            max_model_len=8192,
        ),
    ),  # fmt: skip
]


@pytest.mark.slow
@pytest.mark.parametrize("model, config", CONFIGS, ids=lambda v: getattr(v, "tp", v))
def test_the_bound_holds_above_the_simulated_capacity(model, config):
    capacity = find_capacity(get_model(model), H100, config, CHAT, SLOS, seed=0)
    upper = bound(model, config)
    assert capacity.rate <= upper, (
        f"simulated capacity {capacity.rate:.3f} req/s above the bound {upper:.3f}"
    )
    steady = upper / BOUND_SLACK  # the steady state, before the slack for finite runs
    assert capacity.rate > 0.5 * steady, "the steady state should be within 2x of the capacity"


def test_the_traffic_shape_by_hand():
    # Two requests: prompts 100 and 300, outputs 11 and 1 (10 and 0 decode tokens).
    shape = TrafficShape.from_requests([100, 300], [11, 1])
    assert shape.prompt == 200 and shape.new_prompt == 200 and shape.decodes == 5.0
    # Only the first request decodes: its contexts run 100..109, mean 104.5.
    assert shape.context == pytest.approx((10 * 100 + 10 * 9 / 2) / 10)
    assert shape.pairs == pytest.approx((100 * 101 / 2 + 300 * 301 / 2) / 2)
    # Prefix sharing in whole blocks of 16: 50 % of 100 -> 48 cached, 52 computed.
    cached = TrafficShape.from_requests([100], [11], prefix_sharing=0.5, block_size=16)
    assert cached.new_prompt == 52 and cached.pairs == pytest.approx(52 * 48 + 52 * 53 / 2)


def test_no_rate_meets_a_target_below_one_requests_own_decode():
    config = DeploymentConfig(max_model_len=8192)
    assert bound("llama-3.1-8b", config, slos=(parse_slo("tpot_p99=1ms"),)) == 0.0
    assert bound("llama-3.1-8b", config, slos=(parse_slo("ttft_p99=1ms"),)) == 0.0


def test_looser_slos_bound_higher():
    config = DeploymentConfig(tp=2, weight_dtype="fp8", activation_dtype="fp8", max_num_seqs=256,
                              max_model_len=8192)  # fmt: skip
    tight = bound("llama-3.1-70b", config, slos=(parse_slo("tpot_p99=30ms"),))
    loose = bound("llama-3.1-70b", config, slos=(parse_slo("tpot_p99=60ms"),))
    free = bound("llama-3.1-70b", config, slos=())
    assert 0 < tight < loose <= free


def test_many_configurations_at_once_equal_each_alone():
    configs = [
        DeploymentConfig(tp=tp, weight_dtype=w, activation_dtype=w, max_num_seqs=seqs,
                         max_num_batched_tokens=tokens, max_model_len=8192)
        for tp in (1, 2) for w in ("bf16", "fp8") for seqs in (32, 256) for tokens in (2048, 8192)
    ]  # fmt: skip
    model = get_model("llama-3.1-8b")
    together = capacity_bounds(model, H100, ConfigArrays.from_configs(configs), SHAPE, SLOS)
    alone = [bound("llama-3.1-8b", c) for c in configs]
    np.testing.assert_allclose(together.rate_per_s, alone, rtol=1e-9)


def test_the_tpot_floor_is_below_the_tpot_at_every_rate():
    """Each kind of configuration (pipelined, FP8, every drafter, experts): the floor that
    orders the cost-latency front never exceeds ``tpot_at``, from a trickle to past capacity."""
    for model_name, config in CONFIGS:
        model = get_model(model_name)
        spec = config.speculative
        drafter = None if spec is None else Drafter(
            method=spec.method, tokens=spec.num_speculative_tokens,
            acceptance=spec.acceptance_rate,
            draft_model=get_model(spec.draft_model) if spec.method == "draft" else None,
        )  # fmt: skip
        shares = np.array([0.001, 0.1, 0.3, 0.5, 0.7, 0.9, 1.0, 3.0])
        arrays = ConfigArrays.from_configs([config] * len(shares))
        rates = shares * bound(model_name, config)
        common = dict(drafters=[drafter])
        floor = tpot_floor(model, H100, arrays, SHAPE, rates, **common)
        at = tpot_at(model, H100, arrays, SHAPE, rates, **common)
        assert np.all(np.isfinite(floor)), model_name
        assert np.all(floor <= at * (1 + 1e-12)), (model_name, floor, at)
        assert np.all(np.diff(floor) >= 0), model_name  # more traffic, longer rounds
        assert at[0] == pytest.approx(floor[0], rel=0.05)  # a trickle is nearly the floor
