"""Three more families, each only a description (``simulator/data/architecture.py``) and a preset.

Qwen2.5 adds q/k/v biases, Qwen3 a per-head RMSNorm on queries and keys, Mixtral experts in every
layer without a shared one, DeepSeek-V3 multi-head latent attention over a compressed KV cache
and 256 routed experts plus a shared one after three dense layers. The goldens below are the
published totals, and KV bytes per token derived by hand beside each.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from simulator.cost.configs import ConfigArrays
from simulator.cost.memory import memory_per_gpu
from simulator.cost.predict import predict
from simulator.data.architecture import architecture_of
from simulator.data.hardware import load_hardware
from simulator.data.hf_config import from_hf_config
from simulator.data.models import PRESETS, parameter_counts
from simulator.data.specs import DeploymentConfig

# Published totals: the model cards and the checkpoints' safetensors index.
PUBLISHED = {
    "qwen2.5-7b": 7_615_616_512,  # Qwen2.5-7B: "7.61B"; the safetensors total
    "qwen3-8b": 8_190_735_360,  # Qwen3-8B: "8.2B (6.95B non-embedding)"
    "mixtral-8x7b": 46_702_792_704,  # Mixtral-8x7B-v0.1: "46.7B"
    # DeepSeek-V3: "671B total" for the main model (685B with the multi-token-prediction
    # module). The routers' score-correction biases (58 layers x 256) are not counted here.
    "deepseek-v3": 671_026_404_352 + 58 * 256,
}


@pytest.mark.parametrize("name, published", list(PUBLISHED.items()))
def test_parameter_counts_match_the_published_totals(name, published):
    total = parameter_counts(PRESETS[name]).total
    assert abs(total - published) / published < 0.005, f"{total:,} against {published:,}"


def test_active_parameters_count_the_routed_experts_only():
    # Mixtral: two of eight experts per token -> "12.9B active"; DeepSeek-V3: "37B activated".
    assert parameter_counts(PRESETS["mixtral-8x7b"]).active_per_token == pytest.approx(
        12.9e9, rel=0.005
    )
    assert parameter_counts(PRESETS["deepseek-v3"]).active_per_token == pytest.approx(
        37.5e9, rel=0.02
    )


def test_qwen2_counts_its_biases_and_qwen3_its_qk_norm():
    qwen2 = parameter_counts(PRESETS["qwen2.5-7b"])
    # q (28 x 128) + k and v (4 x 128 each) projections of 3584 inputs, plus their biases.
    assert qwen2.attention_per_layer == 3584 * (3584 + 2 * 512) + (3584 + 2 * 512) + 3584 * 3584
    qwen3 = parameter_counts(PRESETS["qwen3-8b"])
    # Two RMSNorms per layer over 4096, QK-norm's two over head_dim 128, and the final one.
    assert qwen3.norms == 36 * (2 * 4096 + 2 * 128) + 4096
    assert qwen3.total - qwen3.embedding - qwen3.lm_head == pytest.approx(6.95e9, rel=0.005)


KV_PER_TOKEN_BF16 = {
    "qwen2.5-7b": 2 * 28 * 4 * 128 * 2,  # K and V x 28 layers x 4 KV heads x 128 x 2 bytes
    "qwen3-8b": 2 * 36 * 8 * 128 * 2,
    "mixtral-8x7b": 2 * 32 * 8 * 128 * 2,
    # One latent per token and layer: kv_lora_rank 512 + 64 rotated dims, not heads x head_dim
    # (that would be 2 x 61 x 128 x 192 x 2 = 6.0 MB).
    "deepseek-v3": 61 * (512 + 64) * 2,
}


@pytest.mark.parametrize("name, expected", list(KV_PER_TOKEN_BF16.items()))
def test_kv_bytes_per_token(name, expected):
    memory = memory_per_gpu(
        PRESETS[name], load_hardware("h200-sxm"), ConfigArrays.from_arrays(size=1)
    )
    assert memory.kv_bytes_per_token[0] == expected


def test_the_latent_cache_is_whole_on_every_gpu():
    """Tensor parallelism splits GQA's KV heads but not MLA's latent: every GPU keeps it."""
    model = PRESETS["deepseek-v3"]
    configs = ConfigArrays.from_arrays(tp=np.array([1, 8]), ep=np.array([1, 8]))
    per_gpu = memory_per_gpu(model, load_hardware("h200-sxm"), configs).kv_bytes_per_token
    assert per_gpu[0] == per_gpu[1] == 61 * 576 * 2
    gqa = memory_per_gpu(PRESETS["qwen3-8b"], load_hardware("h200-sxm"), configs)
    assert gqa.kv_bytes_per_token[1] == gqa.kv_bytes_per_token[0] / 8


def test_deepseek_decode_attention_reads_the_latent():
    """Decoding attends in the latent space: per cached token and layer, 576 elements read
    (bf16), and per GPU 2 x 128 / 8 heads x (576 + 512) FLOPs (scores over the latent and its
    rotated part, values over the latent)."""
    config = DeploymentConfig(tp=8, ep=8, weight_dtype="fp8", activation_dtype="fp8")
    step = predict(PRESETS["deepseek-v3"], load_hardware("h200-sxm"), config,
                   batch=16, prompt=1024, context=4096)  # fmt: skip
    assert step.fits, step.reason
    attention = next(op for op in step.ops if op.name == "attention_decode")
    cached = 16 * 4096
    assert attention.bytes >= cached * 61 * 576 * 2
    assert attention.flops == pytest.approx(cached * 61 * 2 * 128 / 8 * (576 + 512), rel=0.01)


@pytest.mark.parametrize("name", list(PUBLISHED))
def test_every_family_loads_from_its_config_json(name, tmp_path):
    from simulator.data.hf_config import to_hf_config

    file = tmp_path / name / "config.json"
    file.parent.mkdir()
    file.write_text(json.dumps(to_hf_config(PRESETS[name])))
    loaded = from_hf_config(file, name=name)
    assert loaded == PRESETS[name].model_copy(update={"source": str(file)})
    assert architecture_of(loaded).ops == architecture_of(PRESETS[name]).ops
