"""Capacity search: the highest rate meeting the SLOs, and a clear answer when none does."""

from __future__ import annotations

import math

import pytest

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig
from simulator.data.workload import get_workload, parse_slo
from simulator.errors import WorkloadError
from simulator.serving.capacity import (
    RATE_STEP,
    at_rate,
    find_capacity,
    grid_index,
    grid_rate,
    highest_rate,
    meets,
)
from simulator.serving.simulate import simulate

MODEL = get_model("llama-3.1-8b")
H100 = load_hardware("h100-sxm")
SLOS = (parse_slo("ttft_p99=500ms"), parse_slo("tpot_p99=15ms"))


def test_capacity_meets_the_slos_and_a_bit_more_does_not():
    workload = get_workload("chat", num_requests=600)
    result = find_capacity(MODEL, H100, DeploymentConfig(), workload, SLOS, seed=0)
    assert result.feasible and result.prediction is not None
    assert 0 < result.rate < result.max_throughput_rps
    assert all(check["met"] for check in result.prediction.slos)
    # The bisection stops within 2 %: 5 % more load breaks an SLO (or overloads).
    above = simulate(
        MODEL, H100, DeploymentConfig(), at_rate(workload, result.rate * 1.05), seed=0, slos=SLOS
    )
    assert not meets(above)


def test_faster_deployment_has_more_capacity():
    workload = get_workload("chat", num_requests=400)
    one = find_capacity(MODEL, H100, DeploymentConfig(), workload, SLOS)
    two = find_capacity(MODEL, H100, DeploymentConfig(tp=2), workload, SLOS)
    assert two.rate > one.rate


def test_unmeetable_slo_gives_rate_zero_with_the_reason():
    result = find_capacity(
        MODEL,
        H100,
        DeploymentConfig(),
        get_workload("chat", num_requests=200),
        [parse_slo("ttft_p99=1ms")],
    )
    assert result.rate == 0 and result.prediction is None
    assert "no arrival rate meets the SLOs" in result.reason and "ttft_p99" in result.reason


def test_capacity_of_an_infeasible_config_says_why():
    result = find_capacity(
        get_model("llama-3.1-405b"),
        H100,
        DeploymentConfig(),
        get_workload("chat", num_requests=20),
        SLOS,
    )
    assert result.rate == 0 and "does not fit" in result.reason


def test_closed_loop_has_no_rate_to_search():
    with pytest.raises(WorkloadError, match="open-loop"):
        find_capacity(
            MODEL,
            H100,
            DeploymentConfig(),
            get_workload("chat:concurrency=4", num_requests=20),
            SLOS,
        )


@pytest.mark.parametrize("threshold", [0.37, 1.0, 7.3, 211.0])
def test_grid_bisection_finds_the_highest_grid_rate_served(threshold):
    asked = []

    def meets_at(rate: float) -> bool:
        asked.append(rate)
        return rate <= threshold

    rate, probes = highest_rate(meets_at, low=threshold / 50, high=threshold * 3)
    assert rate == grid_rate(grid_index(threshold)) <= threshold < rate * RATE_STEP
    assert probes == len(asked) <= 2 + math.ceil(math.log2(math.log(150) / math.log(RATE_STEP)))


def test_grid_bisection_says_none_when_the_floor_fails():
    rate, probes = highest_rate(lambda r: False, low=2.0, high=10.0)
    assert rate is None and probes == 1


def test_a_ceiling_and_floor_bracket_the_search():
    workload = get_workload("chat", num_requests=300)
    free = find_capacity(MODEL, H100, DeploymentConfig(), workload, SLOS, seed=0)
    bracketed = find_capacity(MODEL, H100, DeploymentConfig(), workload, SLOS, seed=0,
                              ceiling=free.rate * 1.3, floor=free.rate * 0.8)  # fmt: skip
    assert bracketed.rate == free.rate and len(bracketed.probes) < len(free.probes)
    above = find_capacity(MODEL, H100, DeploymentConfig(), workload, SLOS, seed=0,
                          floor=free.rate * 1.2)  # fmt: skip
    assert above.rate == 0 and above.reason.startswith("below")
