"""Quantized linears against their bf16/float32 originals, within stated tolerances."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.quant import (  # noqa: E402
    Fp8Linear,
    Int8WeightOnlyLinear,
    calibrate_static_scales,
    quantize_fp8,
    quantize_model,
)


def _scaled_mm_runs_here() -> tuple[bool, str]:
    try:
        a = torch.randn(16, 32).to(torch.float8_e4m3fn)
        b = torch.randn(16, 32).to(torch.float8_e4m3fn)
        one = torch.ones(())
        torch._scaled_mm(a, b.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16)
    except (RuntimeError, NotImplementedError) as error:
        return False, f"torch._scaled_mm does not run on this CPU build: {str(error)[:80]}"
    return True, ""


SCALED_MM, WHY_NOT = _scaled_mm_runs_here()
needs_scaled_mm = pytest.mark.skipif(not SCALED_MM, reason=WHY_NOT)

# e4m3 keeps 3 mantissa bits: one rounding is at most 2^-4 relative; weight and activation each
# round once, so a dot product of random data lands near 2^-4 / sqrt(3) ~ 4% relative error in
# the worst case and ~3% typically. 6% leaves room without hiding a wrong scale (which is 100%+).
FP8_TOLERANCE = 0.06


def _relative(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def test_quantize_fp8_round_trip():
    x = torch.randn(8, 64) * 3
    for granularity in ("per_tensor", "rowwise"):
        x_fp8, scale = quantize_fp8(x, granularity=granularity)
        assert x_fp8.dtype == torch.float8_e4m3fn
        assert _relative(x_fp8.float() * scale, x) < 0.04


@needs_scaled_mm
@pytest.mark.parametrize("granularity", ["per_tensor", "rowwise"])
@pytest.mark.parametrize("scaling", ["dynamic", "static"])
def test_fp8_linear_close_to_bf16(granularity, scaling):
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128, bias=False).to(torch.bfloat16)
    x = torch.randn(4, 7, 256, dtype=torch.bfloat16)
    ref = linear(x)
    fp8 = Fp8Linear(linear.weight.data, granularity=granularity, scaling=scaling)
    if scaling == "static":
        calibrate_static_scales(fp8, lambda: fp8(x))
    out = fp8(x)
    assert out.shape == ref.shape and out.dtype == torch.bfloat16
    error = _relative(out, ref)
    assert error < FP8_TOLERANCE, f"fp8 {granularity}/{scaling}: relative error {error:.3f}"


def test_int8_weight_only_close_to_float():
    torch.manual_seed(0)
    linear = torch.nn.Linear(256, 128, bias=False)
    x = torch.randn(3, 256)
    out = Int8WeightOnlyLinear(linear.weight.data)(x)
    # 127 levels per channel: rounding error <= half a step of amax/127, ~0.5% relative.
    assert _relative(out, linear(x)) < 0.01


def test_quantize_model_swaps_linears(model):
    tokens = torch.randint(0, model.spec.vocab_size, (2, 5))
    ref = model(tokens)
    quantize_model(model, weights="int8")
    kinds = {type(m).__name__ for m in model.modules()}
    assert "Int8WeightOnlyLinear" in kinds
    assert isinstance(model.lm_head, torch.nn.Linear)  # lm_head stays unless asked
    assert _relative(model(tokens), ref) < 0.02


def test_fp8_kv_cache_close_to_bf16(model):
    tokens = torch.randint(0, model.spec.vocab_size, (2, 9))
    full = model(tokens)
    model.setup_caches(max_batch=2, max_seq_length=16, kv_dtype=torch.float8_e4m3fn)
    model(tokens[:, :8], torch.arange(8))
    step = model(tokens[:, 8:], torch.tensor([8]))
    assert _relative(step, full[:, 8:]) < FP8_TOLERANCE


@needs_scaled_mm
def test_fp8_model_static_scales_hand_over_fp8_between_kernels(model):
    """With static per-tensor scales the norms and SwiGLU write FP8 for the next GEMM; the
    result stays within the FP8 tolerance of the unquantized model, dynamic scaling too."""
    tokens = torch.randint(0, model.spec.vocab_size, (2, 6))
    model.to(torch.bfloat16)
    ref = model(tokens)
    quantize_model(model, weights="fp8", scaling="static", include_lm_head=True)
    calibrate_static_scales(model, lambda: model(tokens))
    assert model.layers[0].mlp.w_down.static_input_scale() is not None
    static = model(tokens)
    for layer in model.modules():
        if isinstance(layer, Fp8Linear):
            layer.scaling = "dynamic"
    dynamic = model(tokens)
    assert _relative(static, ref) < 2 * FP8_TOLERANCE
    assert _relative(dynamic, ref) < 2 * FP8_TOLERANCE
