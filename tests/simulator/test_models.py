"""Model presets, the config.json loader and parameter counts, against hand-derived goldens.

The dense totals are the parameter counts published for the checkpoints (sum of the tensor sizes
in their safetensors files); each assertion message shows the arithmetic that produces them.
"""

from __future__ import annotations

import dataclasses
import json
import re
from pathlib import Path

import pytest

from simulator.data.hf_config import from_hf_config, to_hf_config
from simulator.data.models import (
    PRESETS,
    describe_model,
    get_model,
    list_models,
    parameter_counts,
)
from simulator.errors import ConfigError, UnknownModelError

CONFIGS = Path(__file__).resolve().parent.parent / "data" / "configs"

# (preset, published total, derivation: embed + layers x (attn + mlp + 2 norms) + final norm
# + lm_head, where attn = hidden x (q + k + v + o widths)).
DENSE_GOLDENS = [
    ("llama-3.2-1b", 1_235_814_400,
     "embed 128256x2048 + 16 x (attn 2048x(2048+2x512+2048) + mlp 3x2048x8192 + norms 2x2048)"
     " + final 2048 + lm_head 0 (tied)"),
    ("llama-3.2-3b", 3_212_749_824,
     "embed 128256x3072 + 28 x (attn 3072x(3072+2x1024+3072) + mlp 3x3072x8192 + norms 2x3072)"
     " + final 3072 + lm_head 0 (tied)"),
    ("llama-3.1-8b", 8_030_261_248,
     "embed 128256x4096 + 32 x (attn 4096x(4096+2x1024+4096) + mlp 3x4096x14336"
     " + norms 2x4096) + final 4096 + lm_head 128256x4096"),
    ("llama-3.1-70b", 70_553_706_496,
     "embed 128256x8192 + 80 x (attn 8192x(8192+2x1024+8192) + mlp 3x8192x28672"
     " + norms 2x8192) + final 8192 + lm_head 128256x8192"),
    ("llama-3.3-70b", 70_553_706_496, "same architecture as llama-3.1-70b"),
    ("llama-3.1-405b", 405_853_388_800,
     "embed 128256x16384 + 126 x (attn 16384x(16384+2x1024+16384) + mlp 3x16384x53248"
     " + norms 2x16384) + final 16384 + lm_head 128256x16384 (published: 405.85e9)"),
]  # fmt: skip

# Llama 4, text decoder only. attn = 5120x(5120+2x1024+5120) = 62,914,560 per layer;
# one expert = 3x5120x8192 = 125,829,120; embed = lm_head = 202048x5120 = 1,034,485,760.
SCOUT_TOTAL = 107_769_861_120
SCOUT_DERIVATION = (
    "2 x 202048x5120 (embed, lm_head) + 48 x (attn 62,914,560 + router 5120x16"
    " + 16 routed experts x 125,829,120 + 1 shared x 125,829,120 + norms 2x5120) + final 5120"
)
MAVERICK_TOTAL = 400_711_848_960
MAVERICK_DERIVATION = (
    "2 x 202048x5120 + 24 dense x (attn 62,914,560 + mlp 3x5120x16384 + norms 2x5120)"
    " + 24 MoE x (attn 62,914,560 + router 5120x128 + 128 x 125,829,120 + shared 125,829,120"
    " + norms 2x5120) + final 5120"
)

# Meta publishes Llama 4 sizes rounded to the billion (Scout 109B, Maverick 400B; 17B active)
# and counts the vision encoder (34 layers of width 1408 plus projector, about 0.9e9) in the
# totals. Text-only counts must therefore sit within rounding (0.5e9) + vision (0.9e9) of them.
LLAMA4_TOTAL_TOLERANCE = 1.5e9
LLAMA4_ACTIVE_TOLERANCE = 0.5e9  # rounding of "17B" only: the active figure is text-side


@pytest.mark.parametrize(("name", "expected", "derivation"), DENSE_GOLDENS)
def test_dense_totals_match_published(name: str, expected: int, derivation: str) -> None:
    counts = parameter_counts(PRESETS[name])
    assert counts.total == expected, (
        f"{name}: expected {expected:,}, got {counts.total:,}; {derivation}"
    )
    assert counts.active_per_token == counts.total, "a dense model uses every weight per token"


def test_tied_models_have_no_lm_head() -> None:
    for name in ("llama-3.2-1b", "llama-3.2-3b"):
        counts = parameter_counts(PRESETS[name])
        assert counts.lm_head == 0 and counts.embedding == 128256 * PRESETS[name].hidden_size
    assert parameter_counts(PRESETS["llama-3.1-8b"]).lm_head == 128256 * 4096


def test_eight_b_components() -> None:
    counts = parameter_counts(PRESETS["llama-3.1-8b"])
    assert counts.attention_per_layer == 4096 * (4096 + 2 * 1024 + 4096)
    assert counts.dense_mlp_per_layer == 3 * 4096 * 14336
    assert counts.norms == (2 * 32 + 1) * 4096
    assert counts.router_per_layer == counts.expert_each == 0


@pytest.mark.parametrize(
    ("name", "expected", "derivation", "published_total"),
    [
        ("llama-4-scout-17b-16e", SCOUT_TOTAL, SCOUT_DERIVATION, 109e9),
        ("llama-4-maverick-17b-128e", MAVERICK_TOTAL, MAVERICK_DERIVATION, 400e9),
    ],
)
def test_llama4_totals(name: str, expected: int, derivation: str, published_total: float) -> None:
    counts = parameter_counts(PRESETS[name])
    assert counts.total == expected, f"{name}: expected {expected:,}, got {counts.total:,}; " + (
        derivation
    )
    gap = abs(counts.total - published_total)
    assert gap < LLAMA4_TOTAL_TOLERANCE, (
        f"{name}: text-only {counts.total:,} is {gap:,.0f} from the published "
        f"{published_total:,.0f} (which includes the vision encoder)"
    )
    assert abs(counts.active_per_token - 17e9) < LLAMA4_ACTIVE_TOLERANCE, (
        f"{name}: active {counts.active_per_token:,} should be about 17e9: embed + lm_head + "
        "every layer's attention + (dense MLP | router + 1 routed + 1 shared expert)"
    )


def test_llama4_components() -> None:
    scout, maverick = PRESETS["llama-4-scout-17b-16e"], PRESETS["llama-4-maverick-17b-128e"]
    assert (scout.num_moe_layers, maverick.num_moe_layers) == (48, 24)
    counts = parameter_counts(maverick)
    assert counts.expert_each == counts.shared_experts_per_moe_layer == 3 * 5120 * 8192
    assert counts.router_per_layer == 5120 * 128
    assert counts.dense_mlp_per_layer == 3 * 5120 * 16384
    assert parameter_counts(scout).active_per_token == 17_172_894_720, (
        "2 x 202048x5120 + 48 x (62,914,560 + 5120x16 + 2 x 125,829,120 + 2x5120) + 5120"
    )


def _kv_row(name: str) -> str:
    return dict(describe_model(PRESETS[name]))["KV cache per token (bf16)"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("llama-3.1-8b", "131,072 B"), ("llama-3.1-70b", "327,680 B")],
)
def test_kv_bytes_per_token(name: str, expected: str) -> None:
    model = PRESETS[name]
    row = _kv_row(name)
    assert row.startswith(expected), (
        f"{name}: expected {expected} = 2 (K,V) x {model.num_hidden_layers} layers x "
        f"{model.num_key_value_heads} kv heads x {model.head_dim} head_dim x 2 B; got {row}"
    )


def test_describe_model_rows() -> None:
    rows = dict(describe_model(PRESETS["llama-3.1-8b"]))
    assert rows["parameters"].startswith("8.03 B")
    assert rows["layers"] == "32"
    assert rows["source"].startswith("https://huggingface.co/")
    moe_rows = dict(describe_model(PRESETS["llama-4-scout-17b-16e"]))
    assert moe_rows["MoE layers"] == "48 of 48"
    assert "16 routed (top 1)" in moe_rows["experts"]


def test_every_preset_cites_its_config() -> None:
    assert list_models() == list(PRESETS)
    for name, model in PRESETS.items():
        assert model.name == name
        # meta-llama's checkpoints, and the other families' (Qwen, Mistral, DeepSeek) own.
        assert re.fullmatch(r"https://huggingface.co/[\w.-]+/[\w.-]+/blob/main/config.json",
                            model.source), model.source  # fmt: skip


@pytest.mark.parametrize("name", list(PRESETS))
def test_round_trip_through_config_json(name: str, tmp_path: Path) -> None:
    model = PRESETS[name]
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.json").write_text(json.dumps(to_hf_config(model), indent=2))
    loaded = from_hf_config(directory)
    assert loaded.source == str(directory / "config.json")
    assert loaded.model_copy(update={"source": model.source}) == model


def test_llama4_config_with_text_config_loads() -> None:
    model = from_hf_config(CONFIGS / "llama4-tiny.json")
    assert model.name == "llama4-tiny"
    assert model.intermediate_size == 256, "dense width comes from intermediate_size_mlp"
    assert model.moe_intermediate_size == 64, "expert width comes from intermediate_size"
    assert (model.num_local_experts, model.num_experts_per_tok) == (4, 1)
    assert (model.num_shared_experts, model.moe_layer_step, model.num_moe_layers) == (1, 2, 2)
    assert model.torch_dtype == "bfloat16", "dtype is taken from the top level"
    assert model.rope_scaling is not None and model.rope_scaling["factor"] == 16.0


def test_defaults_for_head_dim_and_kv_heads() -> None:
    model = get_model(str(CONFIGS / "llama-tiny.json"))
    assert model.head_dim == 256 // 8
    assert model.num_key_value_heads == 8, "no num_key_value_heads means multi-head attention"
    assert model.tie_word_embeddings and model.torch_dtype == "float16"
    assert model.rope_theta == 10000.0 and model.rope_scaling is None


def test_directory_name_is_the_default_name(tmp_path: Path) -> None:
    directory = tmp_path / "my-llama"
    directory.mkdir()
    (directory / "config.json").write_text((CONFIGS / "llama-tiny.json").read_text())
    assert get_model(str(directory)).name == "my-llama"
    assert from_hf_config(directory, name="renamed").name == "renamed"


def _one_line(err: pytest.ExceptionInfo[BaseException]) -> str:
    message = str(err.value)
    assert "\n" not in message, f"error must be one line: {message!r}"
    return message


def test_non_llama_config_is_refused() -> None:
    with pytest.raises(ConfigError) as err:
        from_hf_config(CONFIGS / "bert-base.json")
    message = _one_line(err)
    assert "bert-base.json is a bert model" in message
    assert "llama, mistral, qwen2, llama4" in message


def test_missing_key_names_file_and_key(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "llama-tiny.json").read_text())
    del config["vocab_size"]
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        from_hf_config(file)
    message = _one_line(err)
    assert str(file) in message and "'vocab_size'" in message


def test_unreadable_json_and_missing_file(tmp_path: Path) -> None:
    broken = tmp_path / "config.json"
    broken.write_text('{"model_type": "llama",')
    with pytest.raises(ConfigError) as err:
        from_hf_config(broken)
    assert str(broken) in _one_line(err)
    with pytest.raises(UnknownModelError) as err:
        from_hf_config(tmp_path / "absent")
    assert "absent" in _one_line(err)


def test_invalid_architecture_is_one_line(tmp_path: Path) -> None:
    config = json.loads((CONFIGS / "llama-tiny.json").read_text())
    config["num_key_value_heads"] = 3  # 8 query heads cannot be grouped over 3
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        from_hf_config(file)
    assert str(file) in _one_line(err)


def test_unknown_name_suggests_the_close_one() -> None:
    with pytest.raises(UnknownModelError) as err:
        get_model("llama-3.1-8")
    message = _one_line(err)
    assert "unknown model 'llama-3.1-8'" in message
    assert "did you mean llama-3.1-8b" in message
    assert "config.json" in message


@pytest.mark.parametrize(
    ("given", "preset"),
    [
        ("llama-3.1-8b", "llama-3.1-8b"),
        ("LLAMA-3.1-8B", "llama-3.1-8b"),
        ("Llama-3.1-8B", "llama-3.1-8b"),
        ("meta-llama/Llama-3.1-8B-Instruct", "llama-3.1-8b"),
        ("meta-llama/Meta-Llama-3.1-70B-Instruct", "llama-3.1-70b"),
        ("meta-llama/Llama-3.3-70B-Instruct", "llama-3.3-70b"),
        ("meta-llama/Llama-3.2-1B-Instruct", "llama-3.2-1b"),
        ("Llama-3.1-405B-hf", "llama-3.1-405b"),
        ("meta-llama/Llama-4-Scout-17B-16E-Instruct", "llama-4-scout-17b-16e"),
        ("meta-llama/Llama-4-Maverick-17B-128E-Instruct", "llama-4-maverick-17b-128e"),
    ],
)
def test_hf_ids_normalize_to_presets(given: str, preset: str) -> None:
    assert get_model(given) is PRESETS[preset]


def test_parameter_counts_are_frozen() -> None:
    counts = parameter_counts(PRESETS["llama-3.2-1b"])
    with pytest.raises(dataclasses.FrozenInstanceError):
        counts.total = 0  # type: ignore[misc]


def test_heads_that_do_not_divide_the_hidden_size_are_refused(tmp_path: Path) -> None:
    """7 heads over a hidden size of 256 used to give head_dim 36 (4 dimensions lost)."""
    config = json.loads((CONFIGS / "llama-tiny.json").read_text())
    config.update(hidden_size=256, num_attention_heads=7, num_key_value_heads=7)
    config.pop("head_dim", None)
    file = tmp_path / "config.json"
    file.write_text(json.dumps(config))
    with pytest.raises(ConfigError) as err:
        from_hf_config(file)
    assert "not a multiple of num_attention_heads 7" in _one_line(err)
