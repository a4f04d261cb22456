"""The search space: quantization risk labels, --allow-quant, conditional knobs."""

from __future__ import annotations

import optuna
import pytest

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.errors import ConfigError
from tuner.search.choices import KV_SCHEMES, WEIGHT_SCHEMES, parse_allow_quant
from tuner.search.space import SearchSpace


def space(**kw):
    args = dict(
        model=get_model("llama-3.1-8b"),
        hardware=[load_hardware("h100-sxm")],
        gpus=4,
        max_model_len=8192,
    )
    args.update(kw)
    return SearchSpace.build(**args)


def test_risk_labels_are_the_documented_ones():
    risks = {name: scheme.risk for name, scheme in WEIGHT_SCHEMES.items()}
    assert risks == {"bf16": "none", "fp8": "low", "int8": "medium", "int4": "high"}
    assert KV_SCHEMES["fp8"].risk == "low" and KV_SCHEMES["bf16"].risk == "none"
    assert WEIGHT_SCHEMES["int4"].activation_dtype == "bf16"  # weight-only


def test_allow_quant_default_never_searches_risky_schemes():
    weights, kv = parse_allow_quant("bf16,fp8")
    assert weights == ("bf16", "fp8") and kv == ("bf16", "fp8")
    assert parse_allow_quant("bf16") == (("bf16",), ("bf16",))
    assert parse_allow_quant("bf16,kv-fp8") == (("bf16",), ("bf16", "fp8"))
    assert set(parse_allow_quant("all")[0]) == {"bf16", "fp8", "int8", "int4"}
    s = space()
    assert {p.risk for p in s.points()} <= {"none", "low"}


@pytest.mark.parametrize("text", ["bf16,fp4", "kv-fp8", ""])
def test_allow_quant_rejects_unknown_or_empty(text):
    with pytest.raises(ConfigError):
        parse_allow_quant(text)


def test_conditional_knobs_appear_only_when_they_apply():
    s = space(small=True)
    chunked_off = optuna.trial.FixedTrial(
        {
            "tp": 2,
            "pp": 1,
            "replicas": 2,
            "weights": "fp8",
            "kv": "bf16",
            "max_num_seqs": 64,
            "chunked_prefill": False,
            "spec_method": "none",
        }
    )
    point = s.suggest(chunked_off)
    # Without chunked prefill the token budget is pinned to a whole max_model_len prompt.
    assert point.max_num_batched_tokens == s.unchunked_tokens == 8192
    assert point.spec_tokens == 0 and point.num_gpus == 4
    assert "max_num_batched_tokens" not in s.params(point)
    assert "spec_tokens" not in s.params(point)


def test_params_round_trip_and_enumeration_matches_size():
    s = space(small=True)
    points = list(s.points())
    assert len(points) == s.size() == len(set(points))
    for point in points[:: max(1, len(points) // 40)]:
        again = s.suggest(optuna.trial.FixedTrial(s.params(point)))
        assert again == point
        config = s.to_config(point)
        assert config.num_gpus == point.num_gpus <= s.gpus


def test_speculative_methods_need_a_real_drafter():
    s = space()
    assert set(s.spec_methods) == {"none", "eagle", "draft", "ngram"}
    small = get_model("llama-3.2-1b")
    assert "draft" not in space(model=small).spec_methods  # no smaller same-tokenizer model
    assert "eagle" not in space(model=small).spec_methods  # no published EAGLE head
