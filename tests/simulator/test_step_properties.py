"""Properties the step model must keep for any configuration (hypothesis-generated)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simulator.cost.step import StepModel
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig

H100 = load_hardware("h100-sxm", calibration=False)
MODELS = [get_model(name) for name in ("llama-3.1-8b", "llama-3.1-70b", "llama-4-scout-17b-16e")]

schemes = st.sampled_from(
    [("bf16", "bf16"), ("fp8", "fp8"), ("int8", "int8"), ("int4", "bf16"), ("int8", "bf16")]
)


@st.composite
def deployments(draw):
    model = draw(st.sampled_from(MODELS))
    tp = draw(st.sampled_from([1, 2, 4, 8]))
    ep = draw(st.sampled_from([e for e in (1, 2, 4, 8) if e <= tp and tp % e == 0]))
    weights, activations = draw(schemes)
    config = DeploymentConfig(
        tp=tp,
        pp=draw(st.sampled_from([1, 2, 4])),
        cp=draw(st.sampled_from([1, 2])),
        ep=ep if model.is_moe else 1,
        weight_dtype=weights,
        activation_dtype=activations,
        kv_dtype=draw(st.sampled_from(["bf16", "fp8"])),
        attention=draw(st.sampled_from(["flash", "naive"])),
        cuda_graphs=draw(st.booleans()),
        max_model_len=32768,
        max_num_batched_tokens=32768,
    )
    return model, config


FAST = settings(max_examples=40, deadline=None)


@FAST
@given(deployments(), st.integers(1, 512), st.integers(1, 32768), st.integers(1, 64))
def test_time_never_falls_as_batch_or_context_grows(deployment, batch, context, more):
    model, config = deployment
    step = StepModel.build(model, H100, config)
    base = step.decode(batch, context).latency_s[0]
    assert step.decode(batch + more, context).latency_s[0] >= base * (1 - 1e-12)
    assert step.decode(batch, context + more).latency_s[0] >= base * (1 - 1e-12)


@FAST
@given(deployments(), st.integers(1, 8), st.integers(1, 16384), st.integers(1, 512))
def test_time_never_falls_as_prompt_grows(deployment, batch, prompt, more):
    model, config = deployment
    step = StepModel.build(model, H100, config)
    base = step.prefill(batch, prompt).latency_s[0]
    assert step.prefill(batch, prompt + more).latency_s[0] >= base * (1 - 1e-12)


@FAST
@given(deployments(), st.integers(1, 256), st.integers(1, 8192), st.floats(1.01, 4.0))
def test_time_never_rises_with_more_bandwidth_or_peak(deployment, batch, context, factor):
    model, config = deployment
    faster_memory = H100.model_copy(update={"hbm_bytes_per_s": H100.hbm_bytes_per_s * factor})
    faster_compute = H100.model_copy(
        update={
            "peak_flops_per_s": {k: v * factor for k, v in H100.peak_flops_per_s.items()},
            "vector_flops_per_s": H100.vector_flops_per_s * factor,
        }
    )
    for prefill in (False, True):
        times = []
        for hw in (H100, faster_memory, faster_compute):
            step = StepModel.build(model, hw, config)
            run = step.prefill(1, context) if prefill else step.decode(batch, context)
            times.append(run.latency_s[0])
        assert times[1] <= times[0] * (1 + 1e-12) and times[2] <= times[0] * (1 + 1e-12), times


@FAST
@given(st.sampled_from(MODELS), st.integers(1, 256), st.integers(1, 8192))
def test_single_gpu_has_no_communication(model, batch, context):
    step = StepModel.build(model, H100, DeploymentConfig())
    for run in (step.decode(batch, context), step.prefill(1, context)):
        comm = [j for j, kind in enumerate(step.table.kinds) if kind == "communication"]
        assert np.all(run.ops.time_s[0, comm] == 0.0), dict(
            zip(step.table.names, run.ops.time_s[0], strict=True)
        )


@FAST
@given(deployments(), st.integers(2, 4096), st.integers(1, 32768))
def test_fits_at_batch_implies_fits_at_batch_minus_one(deployment, batch, tokens):
    model, config = deployment
    step = StepModel.build(model, H100, config)
    if step.fits(batch, tokens)[0]:
        assert step.fits(batch - 1, tokens)[0]


@FAST
@given(st.lists(deployments(), min_size=2, max_size=6), st.integers(1, 256), st.integers(1, 8192))
def test_vectorized_equals_scalar(deployments_list, batch, context):
    model = deployments_list[0][0]
    configs = [
        config if model.is_moe or config.ep == 1 else config.model_copy(update={"ep": 1})
        for _, config in deployments_list
    ]
    together = StepModel.build(model, H100, configs)
    joint_decode = together.decode(batch, context).latency_s
    joint_prefill = together.prefill(2, context).latency_s
    for i, config in enumerate(configs):
        alone = StepModel.build(model, H100, config)
        np.testing.assert_allclose(
            joint_decode[i], alone.decode(batch, context).latency_s[0], rtol=1e-12
        )
        np.testing.assert_allclose(
            joint_prefill[i], alone.prefill(2, context).latency_s[0], rtol=1e-12
        )
        assert together.memory.kv_tokens[i] == alone.memory.kv_tokens[0]


def test_gemm_tail_lengthens_multi_row_gemms_only():
    """``gemm_tail_s`` is paid by every GEMM launch of more than one row, on its memory-bound
    side: a one-token step (GEMVs) is unchanged, and a 16-token TP 4 step, whose GEMMs all
    stream their weights, is longer by exactly the tail times its GEMM launches."""
    from simulator.cost.optable import EFF_GEMM
    from simulator.cost.shapes import decode_features

    tail = 4e-6
    tailed = H100.model_copy(
        update={"efficiency": H100.efficiency.model_copy(update={"gemm_tail_s": tail})}
    )
    model, config = get_model("llama-3.1-8b"), DeploymentConfig(tp=4)
    plain, with_tail = (StepModel.build(model, hw, config) for hw in (H100, tailed))
    assert with_tail.decode(1, 1024).latency_s[0] == plain.decode(1, 1024).latency_s[0]
    launches = plain.table.apply("kernels", decode_features(16, 1024)[None])[0]
    gemm_launches = launches[plain.table.eff_class == EFF_GEMM].sum()
    assert gemm_launches >= 4 * model.num_hidden_layers  # q/k/v, output, gate/up, down
    extra = with_tail.decode(16, 1024).latency_s[0] - plain.decode(16, 1024).latency_s[0]
    assert extra == pytest.approx(tail * gemm_launches, rel=1e-9)
