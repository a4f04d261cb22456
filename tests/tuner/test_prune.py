"""The pruning pass: invalid, memory and SLO floors, before any simulation."""

from __future__ import annotations

import numpy as np

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.slo import parse_slo
from tuner.search.prune import STATUS, TrafficStats, hopeless_reason, prune
from tuner.search.space import Point, SearchSpace

CHAT = TrafficStats(mean_prompt=770, mean_output=260, median_prompt=540, rate=8.0)


def space70(**kw):
    args = dict(
        model=get_model("llama-3.1-70b"),
        hardware=[load_hardware("h100-sxm")],
        gpus=8,
        max_model_len=8192,
    )
    args.update(kw)
    return SearchSpace.build(**args)


def test_70b_bf16_on_one_h100_is_memory_infeasible():
    result = prune(space70(), CHAT)
    point = Point(
        hardware="h100-sxm",
        tp=1,
        pp=1,
        ep=1,
        replicas=1,
        weights="bf16",
        kv="bf16",
        max_num_seqs=64,
        chunked_prefill=True,
        max_num_batched_tokens=8192,
    )
    row = result.index(point)
    assert STATUS[result.status[row]] == "memory"
    assert result.fit_violation[row] > 0
    assert "KV cache holds" in result.reasons[row]


def test_survivors_hold_their_batch_of_mean_requests():
    result = prune(space70(), CHAT)
    ok = result.survivors()
    assert ok.size > 0
    need = np.array([result.keys[i].max_num_seqs for i in ok]) * CHAT.mean_length
    assert np.all(result.kv_tokens[ok] >= need)
    assert np.all(result.fit_violation[ok] <= 0)


def test_slo_floor_prunes_hopeless_latency_targets():
    result = prune(space70(), CHAT, tpot_target_s=1e-4)
    assert result.counts()["ok"] == 0 and result.counts()["slo"] > 0
    reason = hopeless_reason(result, [parse_slo("tpot_p99=0.1ms")])
    assert "can meet the SLOs" in reason and "ms per token" in reason
