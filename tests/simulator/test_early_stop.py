"""A probe's run stops at a certain SLO miss, and only then: the verdict is the full run's.

The search's speed comes from refuting configurations early; its answer stays exact only if a
stopped run would really have missed. These tests run the same workloads both ways, over
configurations that pass, that miss on TTFT (a queue that grows), on TPOT (slow tokens) and on
E2E, with a speculative drafter and with pipeline stages.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.data.workload import get_workload, parse_slo
from simulator.serving.capacity import at_rate, meets
from simulator.serving.early_stop import needed_above
from simulator.serving.simulate import simulate

H100 = load_hardware("h100-sxm")
EAGLE = SpeculativeConfig(method="eagle", num_speculative_tokens=3, acceptance_rate=0.75)
CASES = [  # model, config, SLOs
    ("llama-3.1-8b", DeploymentConfig(max_num_seqs=128), ("ttft_p99=500ms", "tpot_p99=15ms")),
    ("llama-3.1-8b", DeploymentConfig(tp=1, pp=2), ("ttft_p90=1s", "tpot_p99=12ms")),
    ("llama-3.1-70b", DeploymentConfig(tp=4, weight_dtype="fp8", activation_dtype="fp8",
                                       speculative=EAGLE), ("ttft_p99=2s", "tpot_p99=30ms")),
    ("llama-3.1-8b", DeploymentConfig(max_num_seqs=64), ("e2e_p95=8s",)),
]  # fmt: skip


def test_needed_above_forces_the_percentile_over_the_target():
    rng = np.random.default_rng(0)
    for _ in range(2000):
        n = int(rng.integers(1, 400))
        percentile = float(rng.choice([50, 90, 95, 99, 99.9, 100]))
        needed = needed_above(n, percentile)
        assert 1 <= needed <= n
        values = rng.uniform(0, 1, size=n)
        values[:needed] = rng.uniform(1.0 + 1e-9, 2.0, size=needed)  # exactly these above 1
        values[needed:] = rng.uniform(0, 1, size=n - needed)
        assert np.percentile(values, percentile) > 1.0


@pytest.mark.parametrize("model, config, slos", CASES, ids=lambda v: getattr(v, "tp", None))
def test_a_stopped_run_misses_as_the_full_run_does(model, config, slos):
    spec, slos = get_model(model), tuple(parse_slo(s) for s in slos)
    workload = get_workload("chat", num_requests=300, seed=3)
    full_capacity = simulate(spec, H100, config, workload, seed=3, slos=slos)
    base = full_capacity.prediction.requests_per_s or 1.0
    stopped_any = False
    for share in (0.2, 0.6, 0.9, 1.2, 2.0, 4.0):
        traffic = at_rate(workload, base * share)
        full = simulate(spec, H100, config, traffic, seed=3, slos=slos)
        fast = simulate(spec, H100, config, traffic, seed=3, slos=slos, stop_on_miss=True)
        assert meets(fast) == meets(full), share
        if fast.stopped is None:  # not stopped: the very same run
            assert fast.prediction == full.prediction
            continue
        stopped_any = True
        (check,) = fast.slo_checks
        missed = {c.slo: c for c in full.slo_checks}[check.slo]
        assert not missed.met and missed.value_s >= check.value_s > check.slo.target_s
        assert check.slo.name in fast.stopped and "stopped there" in fast.stopped
        # The peaks so far are within the full run's: a candidate that shares them shares
        # the schedule up to the stop.
        assert fast.limits.peak_running <= full.limits.peak_running
        assert fast.limits.peak_blocks <= full.limits.peak_blocks
    assert stopped_any, "some rate of each case is refuted early"


def test_runs_that_are_not_probes_never_stop():
    spec = get_model("llama-3.1-8b")
    traffic = at_rate(get_workload("chat", num_requests=200), 200.0)  # far past capacity
    slos = (parse_slo("ttft_p99=100ms"),)
    assert simulate(spec, H100, DeploymentConfig(), traffic, slos=slos).stopped is None
    steady = traffic.model_copy(update={"steady_state": True})
    assert simulate(spec, H100, DeploymentConfig(), steady, slos=slos,
                    stop_on_miss=True).stopped is None  # fmt: skip
    stopped = simulate(spec, H100, DeploymentConfig(), traffic, slos=slos, stop_on_miss=True)
    assert stopped.stopped is not None and not meets(stopped)
