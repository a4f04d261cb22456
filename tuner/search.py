"""A search, set up from names: what ``tune plan`` and every ``tune worker`` build first.

A study stores its *spec* (model, GPUs, workload, SLOs, allowed quantization, budget...) as plain
names and numbers, so that any process can rebuild the same search from it: ``build_search``
loads the model and GPU profiles, samples the workload once for its length statistics, builds
the ``SearchSpace`` and runs the pruning pass, and wraps it all in an ``Evaluator``. Every bad
name or value fails here with one ``RooftuneError`` line, before anything is written.
``seed_baselines`` then queues the known starting points of a new study.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.objective import OBJECTIVES, Evaluator
from tuner.prune import PruneResult, TrafficStats
from tuner.space import SearchSpace

__all__ = ["Search", "build_search", "traffic_stats", "max_model_len_for", "seed_baselines"]


def traffic_stats(workload: Any) -> TrafficStats:
    """Mean and median lengths of the workload's sampled requests, and its arrival rate."""
    from simulator.workload import sample_requests

    requests = sample_requests(workload)
    rate = workload.arrival.rate_per_s
    if workload.arrival.process in ("offline", "closed") or rate is None:
        rate = math.inf
    return TrafficStats(
        mean_prompt=float(requests.prompt_tokens.mean()),
        mean_output=float(requests.output_tokens.mean()),
        median_prompt=float(np.median(requests.prompt_tokens)),
        rate=float(rate),
    )


def max_model_len_for(workload: Any, model: Any, requests: Any = None) -> int:
    """The longest prompt + output the workload can send, rounded up to 1024 tokens (capped at
    the model's context): the engine must accept every request it will see."""
    from simulator.workload import sample_requests

    lengths = []
    if workload.prompt is not None and workload.output is not None:
        if workload.prompt.max and workload.output.max:
            lengths.append(workload.prompt.max + workload.output.max)
    requests = requests if requests is not None else sample_requests(workload)
    lengths.append(int((requests.prompt_tokens + requests.output_tokens).max()))
    longest = max(lengths)
    return int(min(-(-longest // 1024) * 1024, model.max_position_embeddings))


@dataclass
class Search:
    """Everything one process needs to run trials of a study, rebuilt from its ``spec``."""

    spec: dict[str, Any]
    space: SearchSpace
    workload: Any
    slos: list
    traffic: TrafficStats
    pruned: PruneResult
    evaluator: Evaluator
    prune_s: float

    @property
    def metric_names(self) -> list[str]:
        return [name for name, _ in OBJECTIVES[self.spec["objective"]]]

    @property
    def directions(self) -> list[str]:
        return [direction for _, direction in OBJECTIVES[self.spec["objective"]]]


def build_search(spec: dict[str, Any]) -> Search:
    """Models, GPUs, workload and SLOs from names; the space; the pruning pass. Bad names raise
    one-line RooftuneErrors before anything is written."""
    from simulator.errors import ConfigError
    from simulator.hardware import load_hardware
    from simulator.models import get_model
    from simulator.slo import parse_slo
    from simulator.workload import get_workload
    from tuner.prune import prune

    model = get_model(spec["model"])
    hardware = [
        load_hardware(name, calibration=spec.get("calibration", True)) for name in spec["hardware"]
    ]
    if len({h.name for h in hardware}) != len(hardware):
        raise ConfigError("--hardware lists the same GPU twice")
    slos = [parse_slo(text) for text in spec["slos"]]
    if len({s.name for s in slos}) != len(slos):
        raise ConfigError("two --slo flags name the same metric and percentile")
    workload = get_workload(
        spec["workload"],
        rate=spec.get("rate"),
        num_requests=spec.get("requests"),
        seed=spec.get("seed", 0),
        slos=slos,
    )
    if spec["objective"] not in OBJECTIVES:
        raise ConfigError(
            f"unknown objective {spec['objective']!r}; known: {', '.join(OBJECTIVES)}"
        )
    if spec["objective"] == "cost":
        unpriced = [h.name for h in hardware if h.price_per_hour is None]
        if unpriced:
            raise ConfigError(
                f"--objective cost needs a price per hour; none for "
                f"{', '.join(unpriced)} (add price_per_hour to its profile)"
            )
    max_model_len = spec.get("max_model_len") or max_model_len_for(workload, model)
    space = SearchSpace.build(
        model=model,
        hardware=hardware,
        gpus=int(spec["gpus"]),
        max_model_len=int(max_model_len),
        allow_quant=spec.get("allow_quant", "bf16,fp8"),
        speculative=spec.get("speculative", True),
        small=spec.get("small", False),
    )
    traffic = traffic_stats(workload)
    targets: dict[str, float] = {}
    for slo in slos:  # the tightest target per metric bounds every percentile of it
        targets[slo.metric] = min(slo.target_s, targets.get(slo.metric, math.inf))
    start = time.perf_counter()
    pruned = prune(
        space,
        traffic,
        ttft_target_s=targets.get("ttft"),
        tpot_target_s=min(filter(None, (targets.get("tpot"), targets.get("itl"))), default=None),
    )
    prune_s = time.perf_counter() - start
    evaluator = Evaluator(
        space=space,
        pruned=pruned,
        workload=workload,
        slos=slos,
        traffic=traffic,
        objective=spec["objective"],
        seed=int(spec.get("seed", 0)),
    )
    return Search(
        spec=spec,
        space=space,
        workload=workload,
        slos=slos,
        traffic=traffic,
        pruned=pruned,
        evaluator=evaluator,
        prune_s=prune_s,
    )


def seed_baselines(study: Any, search: Any, *, limit: int) -> None:
    """Known starting points: each GPU's smallest TP that fits with the engine's defaults, then
    the best configurations by the step model's estimate."""
    from tuner.space import Point

    space, pruned = search.space, search.pruned
    seen: set = set()
    points = []
    for hardware in space.hardware_names:
        for seqs in (256, 128, 64, 32):
            found = None
            for tp in space.tp:
                point = Point(
                    hardware=hardware,
                    tp=tp,
                    pp=1,
                    ep=1,
                    replicas=space.max_replicas(tp, 1),
                    weights=space.weights[0],
                    kv=space.kv[0],
                    max_num_seqs=seqs,
                    chunked_prefill=True,
                    max_num_batched_tokens=8192,
                )
                if (
                    pruned.has(point)
                    and seqs in space.max_num_seqs
                    and 8192 in space.max_num_batched_tokens
                    and pruned.status[pruned.index(point)] == 0
                ):
                    found = point
                    break
            if found:
                points.append(found)
                break
    slo_tpot = next((s.target_s for s in search.slos if s.metric == "tpot"), None)
    for index, replicas, _ in pruned.ranked(search.traffic, slo_tpot, limit):
        points.append(Point.from_key(pruned.keys[index], replicas))
    for point in points:
        if point not in seen:
            seen.add(point)
            study.enqueue_trial(space.params(point), user_attrs={"seeded": True})
