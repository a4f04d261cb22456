"""A search, set up from names: what ``tune plan`` and every ``tune worker`` build first.

A study stores its *spec* (model, GPUs, workload, SLOs, allowed quantization, budget...) as plain
names and numbers, so that any process can rebuild the same search from it: ``build_search``
loads the model and GPU profiles, samples the workload once for its length statistics, builds
the ``SearchSpace``, runs the pruning pass and bounds every candidate (``tuner.search.candidates``).
Every bad name or value fails here with one ``RooftuneError`` line, before anything is written.
``run_search`` then runs the branch and bound of ``tuner.search.cheapest`` over the candidates.

The question depends on the traffic: with an open-loop rate it is the cheapest deployment that
serves that rate within the SLOs; with offline or closed-loop traffic (no rate) it is the
deployment on the GPU budget that serves the highest rate within the SLOs.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from tuner.search.prune import PruneResult, TrafficStats
from tuner.search.space import SearchSpace

__all__ = [
    "Search",
    "build_search",
    "run_search",
    "traffic_stats",
    "max_model_len_for",
    "OBJECTIVES",
]

# What a deployment costs: its GPUs at their list price per hour, or just its GPU count.
OBJECTIVES = ("cost", "gpus")


def traffic_stats(workload: Any, requests: Any = None) -> TrafficStats:
    """Mean and median lengths of the workload's sampled requests, and its arrival rate."""
    from simulator.data.workload import sample_requests

    requests = requests if requests is not None else sample_requests(workload)
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
    from simulator.data.workload import sample_requests

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
    """Everything one process needs to run a study's search, rebuilt from its ``spec``."""

    spec: dict[str, Any]
    space: SearchSpace
    workload: Any
    slos: list
    traffic: TrafficStats
    shape: Any  # simulator.serving.bounds.TrafficShape
    pruned: PruneResult
    table: Any  # tuner.search.candidates.CandidateTable
    priced: bool  # costs in $/h (else in GPUs)
    prune_s: float
    bound_s: float

    @property
    def seed(self) -> int:
        return int(self.spec.get("seed", 0))

    @property
    def rate(self) -> float | None:
        """Requests/s to serve; None for traffic without a rate (offline, closed loop)."""
        return None if math.isinf(self.traffic.rate) else self.traffic.rate

    @property
    def metric_names(self) -> list[str]:
        if self.rate is None:
            return ["output_tokens_per_s_per_gpu", "tpot_p99_s"]
        return ["cost_per_hour" if self.priced else "gpus", "tpot_p99_s"]

    @property
    def directions(self) -> list[str]:
        return ["maximize" if self.rate is None else "minimize", "minimize"]


def build_search(spec: dict[str, Any]) -> Search:
    """Models, GPUs, workload and SLOs from names; the space; the pruning pass; the bounds.
    Bad names raise one-line RooftuneErrors before anything is written."""
    from simulator.data.hardware import load_hardware
    from simulator.data.models import get_model
    from simulator.data.policies import DEFAULT_GPU_MEMORY_UTILIZATION
    from simulator.data.slo import parse_slo
    from simulator.data.workload import get_workload, sample_requests
    from simulator.errors import ConfigError
    from simulator.serving.bounds import TrafficShape
    from tuner.engines import ENGINE_ADMISSION
    from tuner.search.candidates import build_candidates
    from tuner.search.prune import prune

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
    objective = spec.get("objective", "cost")
    if objective not in OBJECTIVES:
        raise ConfigError(f"unknown objective {objective!r}; known: {', '.join(OBJECTIVES)}")
    requests = sample_requests(workload)
    max_model_len = spec.get("max_model_len") or max_model_len_for(workload, model, requests)
    space = SearchSpace.build(
        model=model,
        hardware=hardware,
        gpus=int(spec["gpus"]),
        max_model_len=int(max_model_len),
        allow_quant=spec.get("allow_quant", "bf16,fp8"),
        speculative=spec.get("speculative", True),
        small=spec.get("small", False),
        only={knob: spec[knob] for knob in ("tp", "pp", "ep") if spec.get(knob)},
        spec_methods=spec.get("spec_methods"),
        admission=ENGINE_ADMISSION[spec.get("engine", "vllm")],
        gpu_memory_utilization=spec.get("gpu_memory_utilization")
        or DEFAULT_GPU_MEMORY_UTILIZATION,
    )
    traffic = traffic_stats(workload, requests)
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
    search = Search(
        spec=spec,
        space=space,
        workload=workload,
        slos=slos,
        traffic=traffic,
        shape=TrafficShape.from_requests(
            requests.prompt_tokens, requests.output_tokens, prefix_sharing=workload.prefix_sharing
        ),
        pruned=pruned,
        table=None,
        priced=objective == "cost" and all(h.price_per_hour for h in hardware),
        prune_s=prune_s,
        bound_s=0.0,
    )
    start = time.perf_counter()
    search.table = build_candidates(search, priced=search.priced)
    search.bound_s = time.perf_counter() - start
    return search


def run_search(
    search: Search,
    prober: Any,
    *,
    exhaustive: bool = False,
    admissible: Any = None,
    max_simulations: int | None = None,
    deadline_s: float | None = None,
    on_progress: Any = None,
) -> Any:
    """The branch and bound for the search's question (see the module docstring)."""
    from tuner.search.cheapest import cheapest, most_capacity

    common = dict(
        admissible=admissible or (lambda candidate: None),
        exhaustive=exhaustive,
        max_simulations=max_simulations,
        deadline_s=deadline_s,
        on_progress=on_progress,
    )
    if search.rate is None:
        return most_capacity(search.table, prober, budget=search.space.gpus, **common)
    return cheapest(search.table, prober, rate=search.rate, budget=search.space.gpus, **common)
