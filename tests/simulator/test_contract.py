"""One contract suite over every hardware profile and every model preset."""

from __future__ import annotations

import json
import math

import pytest

from simulator.cost.predict import predict
from simulator.data.hardware import list_hardware, load_hardware
from simulator.data.models import get_model, list_models
from simulator.data.specs import DeploymentConfig

CONTRACT_KEYS = {
    "model",
    "hardware",
    "config",
    "fits",
    "reason",
    "prefill",
    "decode",
    "memory",
    "ops",
    "ttft_s",
    "tpot_s",
    "output_tokens_per_s",
    "requests_per_s",
    "goodput_requests_per_s",
}
MEMORY_KEYS = {
    "weights_bytes",
    "kv_cache_bytes",
    "activation_bytes",
    "reserved_bytes",
    "capacity_bytes",
    "kv_bytes_per_token",
}
OP_KEYS = {"name", "phase", "flops", "bytes", "time_s", "bound", "source"}


def smallest_tp_that_fits(model, hardware):
    for tp in (1, 2, 4, 8):
        if model.num_attention_heads % tp:
            continue
        config = DeploymentConfig(
            tp=tp,
            max_model_len=4096,
            activation_dtype="bf16" if "bf16" in hardware.peak_flops_per_s else "fp16",
            weight_dtype="bf16" if "bf16" in hardware.peak_flops_per_s else "fp16",
        )
        prediction = predict(model, hardware, config, batch=4, prompt=1024, context=2048)
        if prediction.fits:
            return config, prediction
    return config, prediction


@pytest.mark.parametrize("hardware_name", list_hardware())
@pytest.mark.parametrize("model_name", list_models())
def test_prediction_contract(model_name, hardware_name):
    model, hardware = get_model(model_name), load_hardware(hardware_name)
    config, prediction = smallest_tp_that_fits(model, hardware)
    document = json.loads(prediction.model_dump_json())
    assert CONTRACT_KEYS <= set(document)
    assert MEMORY_KEYS <= set(document["memory"])
    assert document["model"] == model.name and document["hardware"] == hardware.name
    if not prediction.fits:
        assert prediction.reason and "\n" not in prediction.reason
        return
    assert prediction.reason is None
    for phase in (prediction.prefill, prediction.decode):
        assert math.isfinite(phase.time_s) and phase.time_s > 0
        assert phase.bound in ("compute", "memory", "communication", "overhead")
    assert prediction.prefill.time_s > prediction.decode.time_s
    shares = sum(op.share for op in prediction.ops if op.phase == "decode")
    assert shares == pytest.approx(1.0, rel=1e-9)
    for op in document["ops"]:
        assert OP_KEYS <= set(op)
        assert op["time_s"] >= 0 and op["bytes"] >= 0 and op["flops"] >= 0
    memory = prediction.memory
    used = (
        memory.weights_bytes
        + memory.activation_bytes
        + memory.reserved_bytes
        + memory.required_kv_bytes
    )
    assert used <= memory.capacity_bytes <= hardware.hbm_bytes
    # The decode step reads every weight but the embedding table (and, for MoE, the routed
    # experts no token picked), so it cannot beat reading the rest once.
    embedding = model.vocab_size * model.hidden_size * 2 / config.tp
    experts = (
        model.num_moe_layers
        * model.num_local_experts
        * 3
        * model.hidden_size
        * model.moe_intermediate_size
        * 2
        / config.tp
    )
    floor = (memory.weights_bytes - embedding - experts) / hardware.hbm_bytes_per_s
    assert prediction.decode.time_s >= floor
