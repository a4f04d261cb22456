"""Hand-derived goldens for the step and memory model. Each failure message shows the expected
value, the actual one and how the expected value was derived."""

from __future__ import annotations

import math

import numpy as np
import pytest

from simulator.cost.predict import predict
from simulator.cost.step import StepModel
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model, parameter_counts
from simulator.data.specs import DeploymentConfig, Efficiency

H100 = load_hardware("h100-sxm", calibration=False)
LLAMA_8B = get_model("llama-3.1-8b")
LLAMA_70B = get_model("llama-3.1-70b")


def ideal_hardware(hardware=H100):
    """The datasheet alone: every efficiency 1, no launch or host overhead."""
    ideal = Efficiency(
        hbm=1.0,
        gemm_tokens=(1.0,),
        gemm_efficiency=(1.0,),
        low_precision_gemm_factor=1.0,
        attention_seq=(1.0,),
        attention_efficiency=(1.0,),
        decode_attention_hbm=1.0,
        decode_attention_compute=1.0,
        link=1.0,
        network=1.0,
        collective_latency_s=0.0,
        collective_latency_per_rank_s=0.0,
        network_latency_s=0.0,
        kernel_launch_s=0.0,
        kernel_graph_s=0.0,
        step_overhead_s=0.0,
    )
    return hardware.model_copy(update={"efficiency": ideal})


def test_weight_bytes_8b_bf16_equal_parameters_times_two():
    step = StepModel.build(LLAMA_8B, H100, DeploymentConfig())
    expected = parameter_counts(LLAMA_8B).total * 2
    actual = step.memory.weights_bytes[0]
    assert actual == expected, (
        f"expected {expected:,} B = 8,030,261,248 parameters x 2 B (bf16), got {actual:,.0f}"
    )


def test_weight_bytes_70b_tp8_per_gpu():
    step = StepModel.build(LLAMA_70B, H100, DeploymentConfig(tp=8))
    attention = 8192 * (8 * 128 + 2 * 1 * 128) + 8 * 128 * 8192  # 64/8 q heads, 8/8 kv heads
    mlp = 3 * 8192 * 28672 // 8
    norms = 80 * 2 * 8192 + 8192  # replicated on every GPU
    vocab = 2 * (128256 // 8) * 8192  # vocab-parallel embedding + untied lm_head
    expected = (80 * (attention + mlp) + norms + vocab) * 2
    actual = step.memory.weights_bytes[0]
    assert actual == expected, (
        f"expected {expected:,} B = (80 x (attn {attention:,} + mlp {mlp:,}) + norms {norms:,} "
        f"+ vocab {vocab:,}) x 2 B, got {actual:,.0f}"
    )


@pytest.mark.parametrize(
    ("model", "tp", "kv_dtype", "expected", "derivation"),
    [
        (LLAMA_8B, 1, "bf16", 131_072, "2 (K,V) x 32 layers x 8 kv heads x 128 x 2 B"),
        (LLAMA_70B, 1, "bf16", 327_680, "2 x 80 layers x 8 kv heads x 128 x 2 B"),
        (LLAMA_70B, 8, "bf16", 40_960, "2 x 80 x (8 / 8) kv heads x 128 x 2 B"),
        (LLAMA_70B, 8, "fp8", 20_480, "2 x 80 x 1 kv head x 128 x 1 B"),
        (
            LLAMA_8B,
            16,
            "bf16",
            16_384,
            "tp 16 > 8 kv heads: 1 head replicated; 2 x 32 x 1 x 128 x 2",
        ),
    ],
)
def test_kv_bytes_per_token(model, tp, kv_dtype, expected, derivation):
    if model.num_attention_heads % tp:
        pytest.skip("tp does not divide heads")
    step = StepModel.build(model, H100, DeploymentConfig(tp=tp, kv_dtype=kv_dtype))
    actual = step.memory.kv_bytes_per_token[0]
    assert actual == expected, f"expected {expected:,} B/token = {derivation}, got {actual:,.0f}"


def test_decode_step_never_below_weight_bytes_over_bandwidth():
    for batch, context in [(1, 16), (1, 1024), (32, 4096), (256, 8192)]:
        step = StepModel.build(LLAMA_8B, ideal_hardware(), DeploymentConfig())
        # Every weight is read once per step except the embedding table, of which a decode
        # gathers only `batch` rows.
        embedding = 128256 * 4096 * 2
        floor = (step.memory.weights_bytes[0] - embedding) / H100.hbm_bytes_per_s
        actual = step.decode(batch, context).latency_s[0]
        assert actual >= floor, (
            f"decode batch {batch} ctx {context}: {actual * 1e3:.3f} ms is below the floor "
            f"{floor * 1e3:.3f} ms = (16.06 GB weights - 1.05 GB embedding) / 3.35 TB/s"
        )


def test_prefill_flops_with_causal_attention():
    prompt = 4096
    step = StepModel.build(LLAMA_8B, H100, DeploymentConfig(max_model_len=prompt))
    times = step.prefill(1, prompt)
    kinds = step.table.kinds
    tensor_flops = sum(
        times.ops.flops[0, j] for j, kind in enumerate(kinds) if kind in ("gemm", "attention")
    )
    linear_params = 32 * (4096 * (4096 + 2 * 1024) + 4096 * 4096 + 3 * 4096 * 14336)
    linears = 2 * prompt * linear_params
    attention = 4 * 32 * 128 * 32 * (prompt * (prompt + 1) // 2)  # 4 h d L x causal pairs
    lm_head = 2 * 1 * 4096 * 128256  # logits for the last prompt token only
    expected = linears + attention + lm_head
    assert math.isclose(tensor_flops, expected, rel_tol=1e-12), (
        f"expected {expected:.6e} FLOPs = linears 2 x 4096 x {linear_params:,} + causal attention "
        f"4 x 32 heads x 128 x 32 layers x 4096 x 4097 / 2 + lm_head 2 x 4096 x 128256, "
        f"got {tensor_flops:.6e}"
    )


def test_critical_batch_of_a_dense_layer():
    ridge = H100.peak("bf16") / H100.hbm_bytes_per_s
    assert abs(ridge - 295.3) < 0.5, f"ridge {ridge:.1f}: 989.4e12 FLOP/s / 3.35e12 B/s = 295.3"
    # gate_up of Llama-3.1-8B (K=4096, N=2x14336) with activation traffic counted as well turns
    # compute-bound at M = 1 / (B/P - (K + N)/(K N)) = 321.8 tokens: just above the ridge.
    hw = ideal_hardware()
    k, n = 4096, 2 * 14336
    crossover = 1.0 / (1.0 / ridge - (k + n) / (k * n))
    step = StepModel.build(LLAMA_8B, hw, DeploymentConfig(max_num_batched_tokens=8192))
    j = step.table.names.index("gate_up_proj")
    for batch, bound in [(int(crossover) - 5, "memory"), (int(crossover) + 5, "compute")]:
        ops = step.decode(batch, 1).ops
        actual = "compute" if ops.compute_s[0, j] > ops.memory_s[0, j] else "memory"
        assert actual == bound, (
            f"gate_up at M={batch}: expected {bound}-bound (crossover {crossover:.1f} tokens), "
            f"compute {ops.compute_s[0, j]:.3e} s vs memory {ops.memory_s[0, j]:.3e} s"
        )


def test_llama_8b_decode_memory_bound_and_8k_prefill_compute_bound():
    prediction = predict(LLAMA_8B, H100, DeploymentConfig(), batch=1, prompt=8192, context=1024)
    assert prediction.decode.bound == "memory", prediction.decode.bound_shares
    assert prediction.prefill.bound == "compute", prediction.prefill.bound_shares


def test_405b_bf16_does_not_fit_one_h100():
    prediction = predict(
        get_model("llama-3.1-405b"),
        H100,
        DeploymentConfig(max_model_len=2048),
        batch=1,
        prompt=1024,
        context=1024,
    )
    assert not prediction.fits
    assert prediction.reason.startswith("does not fit: needs 8"), prediction.reason
    # 0.90 of the 81,559 MiB the driver reports, not of the datasheet's 80 GB
    assert "has 77.0 GB (81,559 MiB x 0.90" in prediction.reason, prediction.reason


def test_tp_that_does_not_divide_heads_is_infeasible_not_an_exception():
    prediction = predict(LLAMA_8B, H100, DeploymentConfig(tp=3))
    assert not prediction.fits and "does not divide num_attention_heads=32" in prediction.reason


def test_weight_only_int4_reads_a_quarter_of_the_bytes_plus_scales():
    bf16 = StepModel.build(LLAMA_70B, H100, DeploymentConfig(tp=4))
    int4 = StepModel.build(
        LLAMA_70B, H100, DeploymentConfig(tp=4, weight_dtype="int4", activation_dtype="bf16")
    )
    j = bf16.table.names.index("gate_up_proj")
    ratio = int4.decode(1, 16).ops.bytes[0, j] / bf16.decode(1, 16).ops.bytes[0, j]
    expected = (0.5 + 2 / 128) / 2  # int4 nibble + one bf16 scale per 128 weights, over bf16
    assert abs(ratio - expected) < 1e-3, f"bytes ratio {ratio:.4f}, expected {expected:.4f}"


def test_fp8_w8a8_runs_at_twice_the_bf16_peak():
    ideal = ideal_hardware()
    bf16 = StepModel.build(LLAMA_8B, ideal, DeploymentConfig())
    fp8 = StepModel.build(
        LLAMA_8B, ideal, DeploymentConfig(weight_dtype="fp8", activation_dtype="fp8")
    )
    j = bf16.table.names.index("gate_up_proj")
    ratio = bf16.prefill(1, 8192).ops.compute_s[0, j] / fp8.prefill(1, 8192).ops.compute_s[0, j]
    expected = H100.peak("fp8") / H100.peak("bf16")
    assert abs(ratio - expected) < 1e-9, (
        f"fp8 compute should be 1978.9/989.4 = {expected} x faster, got {ratio}"
    )


def test_naive_attention_costs_score_matrix_bytes():
    flash = StepModel.build(LLAMA_8B, H100, DeploymentConfig(max_model_len=4096))
    naive = StepModel.build(
        LLAMA_8B, H100, DeploymentConfig(max_model_len=4096, attention="naive")
    )
    j = flash.table.names.index("attention_prefill")
    extra = naive.prefill(1, 4096).ops.bytes[0, j] - flash.prefill(1, 4096).ops.bytes[0, j]
    expected = 4 * 32 * 2 * 4096 * 4096 * 32  # 4 passes x heads x 2 B x scores x layers
    assert extra == expected, f"extra {extra:.4e} B, expected {expected:.4e}"
    assert naive.memory.activation_bytes[0] > flash.memory.activation_bytes[0]


def test_moe_reads_only_touched_experts_at_small_batch():
    scout = get_model("llama-4-scout-17b-16e")
    step = StepModel.build(scout, H100, DeploymentConfig(tp=8))
    j = step.table.names.index("experts_gate_up")
    one = step.decode(1, 1024).ops.bytes[0, j]
    many = step.decode(256, 1024).ops.bytes[0, j]
    # top-1 of 16 experts: one token touches 1/16 of the expert weights; 256 tokens touch
    # 1 - (15/16)^256 of them (all, in practice).
    weights_all = 48 * 16 * 5120 * 2 * 8192 / 8 * 2
    assert abs(one - weights_all / 16) / one < 0.01, (one, weights_all / 16)
    assert many > 0.99 * weights_all, (many, weights_all)


def test_vectorized_configs_match_one_by_one():
    configs = [
        DeploymentConfig(tp=tp, weight_dtype=w, activation_dtype=a, kv_dtype=kv)
        for tp in (1, 2, 8)
        for (w, a) in (("bf16", "bf16"), ("fp8", "fp8"), ("int4", "bf16"))
        for kv in ("bf16", "fp8")
    ]
    together = StepModel.build(LLAMA_70B, H100, configs)
    batch = np.arange(1, len(configs) + 1) * 7
    context = np.arange(1, len(configs) + 1) * 300
    joint = together.decode(batch, context).latency_s
    for i, config in enumerate(configs):
        alone = StepModel.build(LLAMA_70B, H100, config).decode(batch[i], context[i]).latency_s[0]
        assert joint[i] == pytest.approx(alone, rel=1e-12), (config, joint[i], alone)


def test_tp_allreduce_bytes_and_calls_70b_tp8_decode():
    step = StepModel.build(LLAMA_70B, H100, DeploymentConfig(tp=8))
    ops = step.decode(64, 4096).ops
    j = step.table.names.index("tp_allreduce")
    calls = 80 + 80 + 1  # after attention and after the MLP in each layer, and the embedding
    expected_bytes = calls * 2 * 7 / 8 * 64 * 8192 * 2  # ring: 2 (n-1)/n of each message
    assert ops.kernels[0, j] == calls, (
        f"expected {calls} all-reduce calls, got {ops.kernels[0, j]}"
    )
    assert ops.bytes[0, j] == pytest.approx(expected_bytes, rel=1e-12), (
        f"expected {expected_bytes:.4e} B = 161 calls x 2 x 7/8 x 64 tokens x 8192 x 2 B"
    )
    eff = H100.efficiency
    latency = eff.collective_latency_s + 7 * eff.collective_latency_per_rank_s
    expected_time = calls * latency + expected_bytes / (H100.scale_up_bytes_per_s * eff.link)
    assert ops.time_s[0, j] == pytest.approx(expected_time, rel=1e-12)


def test_pipeline_stage_time_and_p2p():
    one = StepModel.build(LLAMA_70B, H100, DeploymentConfig(tp=4))
    two = StepModel.build(LLAMA_70B, H100, DeploymentConfig(tp=4, pp=2))
    a, b = one.decode(32, 2048), two.decode(32, 2048)
    send = b.ops.time_s[0, two.table.names.index("pp_send")]
    assert send > 0 and a.ops.time_s[0, one.table.names.index("pp_send")] == 0
    # Same per-GPU work along the path plus one boundary crossing; each stage does half.
    assert b.latency_s[0] == pytest.approx(a.latency_s[0] + send, rel=1e-9)
    assert b.stage_s[0] == pytest.approx((a.latency_s[0]) / 2 + send, rel=1e-9)


def test_context_parallel_splits_prefill_and_adds_kv_exchange():
    one = StepModel.build(
        LLAMA_8B, H100, DeploymentConfig(max_model_len=65536, max_num_batched_tokens=65536)
    )
    two = StepModel.build(
        LLAMA_8B, H100, DeploymentConfig(cp=2, max_model_len=65536, max_num_batched_tokens=65536)
    )
    a, b = one.prefill(1, 65536), two.prefill(1, 65536)
    j = one.table.names.index("attention_prefill")
    assert b.ops.flops[0, j] == pytest.approx(a.ops.flops[0, j] / 2, rel=1e-12)
    assert b.ops.time_s[0, two.table.names.index("cp_kv_exchange")] > 0
    assert b.latency_s[0] < a.latency_s[0]
    assert two.memory.kv_bytes_per_token[0] == one.memory.kv_bytes_per_token[0] / 2


def test_mixed_step_reads_weights_once():
    from simulator.cost.shapes import step_features

    step = StepModel.build(LLAMA_8B, H100, DeploymentConfig())
    chunk, cached, decodes, context = 512, 1024, 32, 2048
    mixed = step_features(
        prefill_tokens=chunk,
        prefill_pairs=chunk * cached + chunk * (chunk + 1) / 2,
        prefill_kv=cached + chunk,
        naive_scores=chunk * (cached + chunk),
        prefill_logits=1,
        decode_tokens=decodes,
        decode_kv=decodes * context,
        decode_pairs=decodes * context,
    )
    together = step.step(mixed).latency_s[0]
    apart = (
        step.prefill(1, chunk, cached=cached).latency_s[0]
        + step.decode(decodes, context).latency_s[0]
    )
    assert (
        max(
            step.prefill(1, chunk, cached=cached).latency_s[0],
            step.decode(decodes, context).latency_s[0],
        )
        < together
        < apart
    )


@pytest.mark.parametrize("kv_dtype", ["bf16", "fp8"])
@pytest.mark.parametrize("calibrated", [False, True])
def test_decode_attention_is_memory_bound_for_70b_tp2(kv_dtype, calibrated):
    """Decode attention streams the KV cache: 2 x (query heads / KV heads) / KV bytes FLOP per
    byte, 8 for Llama-3.1-70B in bf16 and 16 in FP8, against a ridge of ~295 on an H100. Priced
    at the prefill curve's first point (0.038 of peak on the H100 calibration) it came out
    compute-bound with an FP8 cache: 9.1 ms of math against 7.4 ms of bytes at batch 64, 4k."""
    from simulator.cost.roofline import BOUNDS

    hardware = load_hardware("h100-sxm", calibration=calibrated)
    model = StepModel.build(LLAMA_70B, hardware, DeploymentConfig(tp=2, kv_dtype=kv_dtype))
    ops = model.decode(64, 4096).ops
    i = model.table.names.index("attention_decode")
    assert BOUNDS[int(ops.bound[0, i])] == "memory", (ops.compute_s[0, i], ops.memory_s[0, i])
    # and by a wide margin: the math is a small fraction of the streaming time
    assert ops.compute_s[0, i] < 0.2 * ops.memory_s[0, i], (
        ops.compute_s[0, i],
        ops.memory_s[0, i],
    )
