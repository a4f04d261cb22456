"""The engines' admission policies (simulator/serving/admission.py) in the one scheduler."""

from __future__ import annotations

import numpy as np
import pytest

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig, SpeculativeConfig
from simulator.data.workload import Arrival, LengthDist, Workload, get_workload
from simulator.serving.admission import policy_for
from simulator.serving.simulate import simulate

MODEL = get_model("llama-3.1-8b")
H100 = load_hardware("h100-sxm")


def most_running(result) -> int:
    """The most requests between admission and completion at once (from the request log;
    with no preemption, the most running at once)."""
    events = np.concatenate([result.admit_s, result.finish_s])
    steps = np.concatenate([np.ones(len(result.admit_s)), -np.ones(len(result.finish_s))])
    order = np.lexsort((steps, events))  # a finish before an admission at the same instant
    return int(np.cumsum(steps[order]).max())


def offline_benchmark(admission: str, n: int = 300):
    config = DeploymentConfig(admission=admission, gpu_memory_utilization=0.3, max_num_seqs=512)
    return simulate(MODEL, H100, config, get_workload("isl1000-osl1000", num_requests=n))


def test_trtllm_no_evict_worked_example():
    """An offline benchmark of 1,000 + 1,000 tokens under TensorRT-LLM's GUARANTEED_NO_EVICT:
    a request starts only when every block of its sequence (prompt and whole output) is free
    beside what the running ones will still need. With 16-token blocks each request takes
    ceil(2000 / 16) = 125 blocks, so a cache of B blocks runs floor(B / 125) at once, and
    nothing is ever preempted. vLLM's rule, on the same cache, admits on the prompt alone,
    runs twice as many and preempts."""
    trt = offline_benchmark("trtllm-no-evict")
    blocks = trt.prediction.kv_blocks
    assert trt.preemptions == 0
    assert most_running(trt) == blocks // 125, (most_running(trt), blocks)
    vllm = offline_benchmark("vllm")
    assert vllm.preemptions > 0
    assert most_running(vllm) > 1.5 * most_running(trt)


def test_max_utilization_is_vllms_rule():
    a, b = offline_benchmark("trtllm-max-utilization"), offline_benchmark("vllm")
    assert a.prediction.ttft_s == b.prediction.ttft_s and a.preemptions == b.preemptions


def test_sglang_sits_between_and_its_ratio_moves():
    """SGLang keeps the new-token ratio (0.7 at first) of the running requests' output free:
    fewer running than vLLM, more than the no-evict rule, and retractions reset the ratio."""
    sglang = offline_benchmark("sglang")
    trt, vllm = offline_benchmark("trtllm-no-evict"), offline_benchmark("vllm")
    running = [r.limits.peak_running for r in (trt, sglang, vllm)]  # at an admission
    assert running[0] < running[1] < running[2], running
    policy = policy_for("sglang")
    policy.iterations(10_000)
    assert policy.ratio == pytest.approx(0.7 * 0.14)
    policy.retracted(decoded=500, output=1000, running=5)
    assert policy.ratio == pytest.approx((500 + 20 * 5) / 1001)
    policy.idle()
    assert policy.ratio == 0.7


def test_no_evict_holds_under_speculation_and_open_traffic():
    """Speculative rounds allocate ahead; the reservation still covers every sequence."""
    workload = Workload(
        name="mix",
        arrival=Arrival(process="poisson", rate_per_s=40.0),
        prompt=LengthDist(kind="lognormal", mean=800, std=600, min=16, max=4000),
        output=LengthDist(kind="lognormal", mean=400, std=300, min=8, max=2000),
        num_requests=400,
    )
    spec = SpeculativeConfig(method="ngram", num_speculative_tokens=3, acceptance_rate=0.6)
    for speculative in (None, spec):
        config = DeploymentConfig(
            admission="trtllm-no-evict", gpu_memory_utilization=0.25, speculative=speculative
        )
        result = simulate(MODEL, H100, config, workload)
        assert result.preemptions == 0
        assert np.isfinite(result.finish_s).all()


def test_steady_state_leaves_out_the_closed_loop_burst_and_the_drain():
    """64 users all send at t = 0: the first TTFTs queue behind 64 prefills. The steady-state
    window drops the first and last 10 % of requests (and the ramp and drain from the
    throughput), so its TTFT p99 is the loaded server's, not the start-up burst's."""
    base = get_workload("chat:concurrency=64", num_requests=600)
    config = DeploymentConfig()
    whole = simulate(MODEL, H100, config, base).prediction
    steady = simulate(MODEL, H100, config, base.model_copy(update={"steady_state": True}))
    steady = steady.prediction
    assert steady.workload["steady_state"] and not whole.workload["steady_state"]
    assert steady.ttft_s.p99 < 0.5 * whole.ttft_s.p99
    assert steady.output_tokens_per_s > whole.output_tokens_per_s
    assert steady.tpot_s.p50 == pytest.approx(whole.tpot_s.p50, rel=0.05)


def test_sglang_runs_prefills_alone_and_decodes_wait_for_them():
    """SGLang's default batches are unmixed: a prefill batch whenever one can be formed, the
    running decodes waiting. A decode's gap then holds a whole prompt's prefill (here 4,000
    tokens, ~60 ms on an H100), which vLLM's mixed steps spread as chunks under the budget."""
    from simulator.cost.step import StepModel

    workload = Workload(
        name="long prompts",
        arrival=Arrival(process="poisson", rate_per_s=2.0),
        prompt=LengthDist(mean=4000),
        output=LengthDist(mean=300),
        num_requests=120,
    )
    prefill_s = float(
        StepModel.build(MODEL, H100, DeploymentConfig()).prefill(1, 4000).latency_s[0]
    )
    itl = {}
    for admission in ("sglang", "vllm"):
        config = DeploymentConfig(admission=admission, max_num_batched_tokens=2048)
        itl[admission] = simulate(MODEL, H100, config, workload).prediction.itl_s
    assert itl["sglang"].p99 >= 0.9 * prefill_s > itl["vllm"].p99, (itl, prefill_s)


def test_trtllm_bench_picks_its_limits_as_its_rule_says():
    """trtllm-bench's own limits, worked by hand. Llama-3.1-8B bf16 on one H100 (81,559 MiB =
    79.65 GiB): weights 8,030,261,248 x 2 B = 14.96 GiB, 64.69 GiB left, 0.90 of it for KV at
    2 x 32 x 8 x 128 x 2 B = 128 KiB a token: 238.5 requests of 1,000 + 1,000 tokens. Batch
    238.5 < 256 -> 32 x ceil(238.5 / 32) = 256; tokens 238.5 x 2 = 477 < 4,096 -> floor 2,048.
    70B FP8 (KV FP8) at TP 4, 128 + 2,048: 685.4 requests -> 128 x 6 = 768 and 2,048."""
    from simulator.serving.bench_limits import trtllm_bench_limits

    assert trtllm_bench_limits(MODEL, H100, DeploymentConfig(), isl=1000, osl=1000) == (256, 2048)
    fp8 = DeploymentConfig(tp=4, weight_dtype="fp8", activation_dtype="fp8", kv_dtype="fp8")
    assert trtllm_bench_limits(get_model("llama-3.1-70b"), H100, fp8, isl=128, osl=2048) == (
        768,
        2048,
    )
    # past 1,024 requests the batch rounds to 256s, and a long prompt raises the token budget
    big = trtllm_bench_limits(MODEL, load_hardware("h200-sxm"), fp8, isl=2048, osl=128)
    assert big[0] % 256 == 0 and big[1] > 8192
