"""Tiny float32 Llama configs so every executor test runs in about a second on a CPU."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from simulator.specs import ModelSpec  # noqa: E402


def tiny_spec(**overrides) -> ModelSpec:
    values = dict(
        name="tiny-llama",
        num_hidden_layers=2,
        hidden_size=64,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=8,
        intermediate_size=128,
        vocab_size=96,
        max_position_embeddings=256,
        rope_theta=500000.0,
        rope_scaling={
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 32,
            "rope_type": "llama3",
        },
    )
    values.update(overrides)
    return ModelSpec(**values)


@pytest.fixture
def spec() -> ModelSpec:
    return tiny_spec()


@pytest.fixture
def model(spec):
    from executor.engine import build_model

    return build_model(spec, device="cpu", dtype=torch.float32, seed=0, fused_kernels=False)
