"""No plan is memory-infeasible under the engine's budget rule.

Every replica configuration that survives pruning must render for vLLM (the default engine)
with a KV cache at least as large as the plan needs (``max_num_seqs`` mean requests, or one
``max_model_len`` sequence), and within HBM. A plan is only ever built from survivors, and
``render_engines`` refuses the chosen engine otherwise; this checks the two agree everywhere.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.predict import predict
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from tuner.engines import EngineInputs, EngineSection, kv_cache_bytes_given, total_bytes_used
from tuner.handover.sections import render_engines
from tuner.plan_memory import memory_plan
from tuner.search.prune import TrafficStats, prune
from tuner.search.space import Point, SearchSpace

CHAT = TrafficStats(mean_prompt=770, mean_output=260, median_prompt=540, rate=8.0)


@pytest.mark.parametrize("model, gpu, gpus", [("llama-3.1-70b", "h100-sxm", 8),
                                              ("llama-3.1-8b", "a100-sxm-80gb", 2)])  # fmt: skip
def test_every_survivor_launches_under_each_engine_rule(model, gpu, gpus):
    space = SearchSpace.build(model=get_model(model), hardware=[load_hardware(gpu)], gpus=gpus,
                              max_model_len=8192, allow_quant="all")  # fmt: skip
    result = prune(space, CHAT)
    survivors = result.survivors()
    rng = np.random.default_rng(0)
    for i in rng.choice(survivors, size=min(40, survivors.size), replace=False):
        point = Point.from_key(result.keys[i], 1)
        seqs = point.max_num_seqs
        config = space.to_config(point)
        hardware = space.hardware_spec(point.hardware)
        memory = predict(space.model, hardware, config, batch=seqs, prompt=770, context=1030)
        need = max(seqs * -(-CHAT.mean_length // 16) * 16, 8192)
        plan_memory = memory_plan(memory=memory.memory, hardware=hardware,
                                  gpu_memory_utilization=0.9, kv_tokens_needed=float(need))  # fmt: skip
        sections = render_engines(config=config, model=space.model, hardware=hardware,
                                  memory=plan_memory, chosen="vllm", model_id="m")  # fmt: skip
        device = hardware.memory_reported_bytes  # what the engines' fractions multiply
        inputs = EngineInputs(config=config, model_id="m", hbm_bytes=device,
                              weights_bytes=plan_memory.weights_bytes,
                              activation_bytes=plan_memory.activation_bytes,
                              reserved_bytes=plan_memory.reserved_bytes,
                              kv_cache_bytes=plan_memory.kv_cache_bytes)  # fmt: skip
        for engine, fraction in plan_memory.engine_fractions.items():
            assert isinstance(sections[engine], EngineSection)
            given = kv_cache_bytes_given(engine, inputs, fraction)
            assert given >= need * plan_memory.kv_bytes_per_token, (engine, point)
            assert total_bytes_used(engine, inputs, fraction) <= device
