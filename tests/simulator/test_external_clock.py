"""One scheduler, two clocks: the serving simulation driven by an external clock (what the
executor's serving loop is: it runs each iteration on the GPU and returns the time taken).
With a fake clock that returns the step model's own time, the run must be the simulation's
exactly: the same iterations, the same requests in each, the same preemptions and latencies."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.data.workload import Arrival, LengthDist, Workload, get_workload
from simulator.serving.simulate import simulate

MODEL = get_model("llama-3.1-8b")
H100 = load_hardware("h100-sxm")


@pytest.mark.parametrize(
    ("workload", "config"),
    [
        (get_workload("chat", num_requests=300), DeploymentConfig()),
        # a tight cache: preemptions, chunked prefill of long prompts
        (
            Workload(
                name="long",
                arrival=Arrival(process="poisson", rate_per_s=6.0),
                prompt=LengthDist(kind="lognormal", mean=3000, std=2000, min=64, max=12000),
                output=LengthDist(kind="lognormal", mean=300, std=300, min=4, max=2000),
                num_requests=200,
            ),  # fmt: skip
            DeploymentConfig(gpu_memory_utilization=0.3, max_num_batched_tokens=2048),
        ),
        (
            get_workload("chat:concurrency=32", num_requests=200),
            DeploymentConfig(admission="sglang"),
        ),  # fmt: skip
        # speculative rounds: many at once in the simulation, one by one on the clock, the
        # same acceptances drawn (each round the executor runs keeps what the model assumed)
        (
            get_workload("chat", num_requests=200),
            DeploymentConfig(
                speculative=SpeculativeConfig(
                    method="draft",
                    draft_model="llama-3.2-1b",
                    num_speculative_tokens=3,
                    acceptance_rate=0.7,
                )
            ),
        ),  # fmt: skip
        (
            get_workload("chat", num_requests=200),
            DeploymentConfig(speculative=SpeculativeConfig(method="eagle", acceptance_rate=0.6)),
        ),
    ],
)
def test_a_fake_clock_reproduces_the_simulated_timeline(workload, config):
    simulated = simulate(MODEL, H100, config, workload)
    driven = simulate(MODEL, H100, config, workload, clock=lambda it: it.predicted_s)
    for name in ("arrival_s", "admit_s", "first_token_s", "finish_s"):
        np.testing.assert_allclose(getattr(driven, name), getattr(simulated, name), rtol=1e-9)
    assert driven.preemptions == simulated.preemptions
    np.testing.assert_array_equal(driven.request_preemptions, simulated.request_preemptions)


def test_the_clock_sees_every_iteration_and_sets_its_length():
    """Every iteration goes to the clock with what it must run; a clock twice as slow doubles
    every latency of a lightly loaded server."""
    workload = get_workload("chat", rate=0.5, num_requests=60)
    seen = []

    def clock(iteration):
        seen.append(iteration)
        return 2 * iteration.predicted_s

    result = simulate(MODEL, H100, DeploymentConfig(), workload, clock=clock)
    assert seen and all(it.prefill or it.decode for it in seen)
    emitted = sum(len(it.decode) for it in seen) + sum(
        1 for it in seen for rid, done, chunk in it.prefill
        if done + chunk == int(result.prompt_tokens[rid])
    )  # fmt: skip
    assert emitted == int(result.output_tokens.sum())  # one token per decode, one per prefill end
    assert sum(it.emitting for it in seen) == emitted  # what each iteration tells the clock
    released = [rid for it in seen for rid in it.released]
    assert len(released) == len(set(released)) and set(released) <= set(range(60))
    base = simulate(MODEL, H100, DeploymentConfig(), workload)
    assert result.prediction.tpot_s.p50 == pytest.approx(2 * base.prediction.tpot_s.p50, rel=0.1)
