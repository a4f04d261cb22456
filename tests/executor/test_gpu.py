"""GPU detection (name -> profile, refusal on mismatch) and the GPU-only checks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.gpu import profile_for_name, require_profile  # noqa: E402
from simulator.errors import GpuError  # noqa: E402


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_profile_for_name(name, profile):
    assert profile_for_name(name) == profile


def test_refuses_calibration_for_another_gpu():
    with pytest.raises(GpuError, match="refusing to write a calibration for h100-sxm"):
        require_profile("h100-sxm", gpu_name="NVIDIA H200")
    assert require_profile("h200", gpu_name="NVIDIA H200") == "h200-sxm"


def test_unknown_gpu_gets_a_clear_message():
    with pytest.raises(GpuError, match="matches no hardware profile"):
        require_profile(gpu_name="NVIDIA GeForce RTX 4090")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_decode_matches_eager_on_gpu():
    from executor.engine import DecodeGraphs, build_model
    from tests.executor.conftest import tiny_spec

    spec = tiny_spec(
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=512,
        vocab_size=512,
    )
    model = build_model(spec, device="cuda", dtype=torch.bfloat16, fused_kernels=False)
    tokens = torch.randint(0, spec.vocab_size, (2, 9), device="cuda")
    full = model(tokens)
    model.setup_caches(max_batch=2, max_seq_length=16)
    model(tokens[:, :8], torch.arange(8, device="cuda"))
    graphs = DecodeGraphs(model)
    graphs.capture(2, position=8, fixed_position=True)
    graphs.static_tokens[2].copy_(tokens[:, 8:])
    graphs.replay(2)
    torch.testing.assert_close(
        graphs.logits[2][:, 0].float(), full[:, 8].float(), rtol=2e-2, atol=2e-2
    )
