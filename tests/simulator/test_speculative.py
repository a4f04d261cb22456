"""Speculative decoding: the accepted-token law, its Monte Carlo, costs and where it pays."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.step import StepModel
from simulator.cost.step_fast import FastStep
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.data.workload import Arrival, LengthDist, Workload
from simulator.serving.simulate import simulate
from simulator.serving.speculative import (
    SpeculativeModel,
    expected_tokens_per_round,
    speedup_table,
)

H100 = load_hardware("h100-sxm")
MODEL = get_model("llama-3.1-8b")


def spec_model(model, config) -> SpeculativeModel:
    step = StepModel.build(model, H100, config)
    return SpeculativeModel(
        model=model, hardware=H100, config=config, target=FastStep(step), seed=0
    )


def speculative(method: str, g: int = 4, a: float = 0.7, **config) -> DeploymentConfig:
    draft = "llama-3.2-1b" if method == "draft" else None
    return DeploymentConfig(
        speculative=SpeculativeConfig(
            method=method, draft_model=draft, num_speculative_tokens=g, acceptance_rate=a
        ),
        **config,
    )


@pytest.mark.parametrize(
    "g, a, expected",
    [
        (4, 0.7, (1 - 0.7**5) / 0.3),  # 1 + .7 + .49 + .343 + .2401 = 2.7731
        (1, 0.5, 1.5),  # one draft: kept half the time, plus the target's token
        (3, 0.9, 1 + 0.9 + 0.81 + 0.729),
    ],
)
def test_expected_tokens_per_round(g, a, expected):
    assert expected_tokens_per_round(g, a) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("g, a", [(1, 0.3), (4, 0.7), (8, 0.9), (16, 0.5)])
def test_sampled_rounds_match_the_law(g, a):
    model = spec_model(MODEL, speculative("ngram", g, a))
    tokens = np.concatenate([model.sample(256) for _ in range(200)])  # 51,200 rounds
    assert tokens.min() >= 1 and tokens.max() <= g + 1
    assert tokens.mean() == pytest.approx(expected_tokens_per_round(g, a), rel=0.02)
    # Leading accepted drafts: P(at least i) = a^i.
    assert (tokens >= 2).mean() == pytest.approx(a, rel=0.03)


def test_simulation_monte_carlo_matches_the_law():
    workload = Workload(
        name="long-output",
        num_requests=200,
        arrival=Arrival(process="offline"),
        prompt=LengthDist(mean=256),
        output=LengthDist(mean=600),
    )
    result = simulate(MODEL, H100, speculative("eagle", 4, 0.7), workload)
    stats = result.prediction.speculative
    assert stats["sequence_rounds"] > 20_000
    assert stats["simulated_tokens_per_round"] == pytest.approx(
        stats["expected_tokens_per_round"], rel=0.02
    )
    assert stats["expected_tokens_per_round"] == pytest.approx(2.7731, rel=1e-4)


def test_speculation_lowers_light_load_tpot():
    workload = Workload(
        name="light",
        num_requests=40,
        arrival=Arrival(process="poisson", rate_per_s=0.5),
        prompt=LengthDist(mean=512),
        output=LengthDist(mean=256),
    )
    plain = simulate(MODEL, H100, DeploymentConfig(), workload).prediction
    for method in ("draft", "eagle", "ngram"):
        fast = simulate(MODEL, H100, speculative(method), workload).prediction
        assert fast.tpot_s.mean < 0.8 * plain.tpot_s.mean, method


def test_where_speculation_stops_paying():
    """70B (tp 4) with a 1B draft: at batch 1 the verify of 5 tokens costs about one
    memory-bound decode step, so the speed-up approaches E[tokens] / (1 + draft cost); at
    batch 512 the verify of 2,560 tokens is compute-bound and the drafts cost on top."""
    rows = speedup_table(
        spec_model(get_model("llama-3.1-70b"), speculative("draft", tp=4, max_num_seqs=512)),
        context=1024,
    )
    by_batch = {row.batch: row.speedup for row in rows}
    assert by_batch[1] > 1.5
    assert by_batch[512] < 1.0
    # From batch 2 on it pays less as the batch grows. Batch 1 may trail batch 2 by a few
    # percent: its plain step is a one-token GEMV, free of the fixed tail of a multi-row GEMM
    # (``gemm_tail_s``) that its 5-token verify pays.
    speedups = [row.speedup for row in rows if row.batch >= 2]
    assert speedups == sorted(speedups, reverse=True), "pays less as the batch grows"
    assert by_batch[1] > 0.9 * by_batch[2]


def test_draft_model_takes_kv_memory():
    workload = Workload(
        name="w",
        num_requests=5,
        arrival=Arrival(process="offline"),
        prompt=LengthDist(mean=128),
        output=LengthDist(mean=8),
    )
    plain = simulate(MODEL, H100, DeploymentConfig(), workload).prediction
    drafted = simulate(MODEL, H100, speculative("draft"), workload).prediction
    head = simulate(MODEL, H100, speculative("ngram"), workload).prediction
    # 1B draft: ~2.5 GB of bf16 weights and 32 KiB of KV per token beside the 8B's 128 KiB.
    assert drafted.kv_blocks < 0.8 * plain.kv_blocks
    assert head.kv_blocks == plain.kv_blocks


def test_an_eagle_draft_costs_its_matrices_against_a_target_layer():
    """The head's bf16 fc (3h -> h), its layer with 2h-wide q/k/v and its 32,000-token lm_head
    (849 MB for the 8B) over a decode step's bytes per layer (436 MB of bf16 weights and 33 of
    the lm_head's): 1.81 layers; beside FP8 weights the head still streams bf16, so about
    twice that; and the draft time follows, g tokens at that many layers of the decode step."""
    bf16 = spec_model(MODEL, speculative("eagle", 2))
    fp8 = spec_model(MODEL, speculative("eagle", 2, weight_dtype="fp8"))
    assert bf16.eagle_layers == pytest.approx(849.4 / 469.1, rel=1e-3)
    assert 1.8 < fp8.eagle_layers / bf16.eagle_layers < 1.9
    # per layer, not per pipeline stage: two stages (each holding half the layers) change nothing
    staged = spec_model(MODEL, speculative("eagle", 2, pp=2))
    assert staged.eagle_layers == pytest.approx(bf16.eagle_layers)
    step = bf16.target.decode_latencies(1, np.array([1024.0]))[0]
    assert bf16.draft_time(1, 1024.0) == pytest.approx(2 * step / 32 * bf16.eagle_layers)
