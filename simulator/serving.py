"""Request-level serving simulation: traffic through a router onto engine replicas.

``simulate(model, hardware, config, workload)`` samples the workload's requests, routes each
arrival to one of ``dp`` replicas (round-robin, or the replica with the fewest outstanding
requests), runs every replica iteration by iteration (``scheduler.py``, or
``static_batching.py``) with each iteration timed by the step model, and reports what the
requests saw: TTFT, TPOT, ITL, E2E and queueing percentiles, throughputs, goodput under the
SLOs, KV-cache utilization and preemptions, in the ``Prediction`` contract.

The replicas are stepped in time order (always the one whose next iteration starts first), so
a router decision sees every replica as it is at the arrival time, and closed-loop users
(whose next request is sent when the previous one finishes) stay causal.

Overload: with open-loop arrivals the queue of waiting requests is sampled at every arrival;
when it grows over the second half of the run by more than 5 % of the requests that arrived
in it, arrivals outpace service and the result says so (``overloaded``): its latencies then
depend on how long the run was, not on the deployment.
"""

from __future__ import annotations

import heapq
import math
import sys
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from .results import Percentiles, Prediction, percentiles
from .scheduler import ContinuousEngine
from .slo import SloCheck, check_slos, requests_meeting_slos
from .specs import DeploymentConfig, HardwareSpec, ModelSpec
from .static_batching import StaticEngine
from .step import StepModel
from .step_fast import F, FastStep
from .workload import Requests, Workload, sample_requests

__all__ = ["simulate", "ServingResult", "Router", "weighted_percentiles"]

Router = Literal["least_outstanding", "round_robin"]


@dataclass
class ServingResult:
    """A run's ``prediction`` plus what each request saw (arrays ``[num_requests]``, seconds)."""

    prediction: Prediction
    arrival_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    admit_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    first_token_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    finish_s: np.ndarray = field(default_factory=lambda: np.zeros(0))
    prompt_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    output_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    cached_tokens: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    request_preemptions: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    replica: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=np.int64))
    overloaded: bool = False
    kv_utilization: float = 0.0
    preemptions: int = 0
    slo_checks: list[SloCheck] = field(default_factory=list)

    @property
    def fits(self) -> bool:
        return self.prediction.fits


class Run:
    """Shared state of one simulation: request lengths, per-request results, the step model."""

    def __init__(self, *, model: ModelSpec, config: DeploymentConfig, fast: FastStep,
                 requests: Requests, cached: np.ndarray, total_blocks: int,
                 shared_prefix_blocks: int, spec, on_finish):
        n = len(requests)
        self.config = config
        self.fast = fast
        self.spec = spec
        self.experts = model.num_local_experts
        self.experts_per_token = model.num_experts_per_tok
        self.decode_kv_index = F["decode_kv"]
        self.decode_pairs_index = F["decode_pairs"]
        self.total_blocks = total_blocks
        self.shared_prefix_blocks = shared_prefix_blocks
        # Python lists: the engines index them one request at a time.
        self.prompt = requests.prompt_tokens.tolist()
        self.output = requests.output_tokens.tolist()
        self.cached = cached.tolist()
        self.emitted = [0] * n
        self.preemptions = [0] * n
        self.admit_s = [math.nan] * n
        self.first_s = [math.nan] * n
        self.finish_s = [math.nan] * n
        self.last_emit_s = [math.nan] * n
        # Decode iterations as runs (first duration, growth per step, steps, sequences
        # emitting in each): step j of a run took ``first + growth x j``.
        self.itl_runs: list[tuple[float, float, int, int]] = []
        self.itl_extra: list[float] = []  # gaps across a preemption
        self.on_finish = on_finish


def _kv_blocks(step: StepModel, config: DeploymentConfig, spec) -> int:
    """KV blocks of one replica (the draft model's weights and KV come out of the budget)."""
    memory = step.memory
    if spec is None or spec.draft is None:
        return int(memory.kv_tokens[0] // config.block_size)
    free = float(memory.kv_cache_bytes[0]) - spec.draft_weights_bytes
    per_block = (float(memory.kv_bytes_per_token[0]) + spec.draft_kv_bytes_per_token) \
        * config.block_size
    return max(int(free // per_block), 0)


def _unfit(model, hardware, config, reason: str) -> ServingResult:
    return ServingResult(prediction=Prediction(
        model=model.name, hardware=hardware.name, config=config.model_dump(mode="json"),
        fits=False, reason=reason, num_gpus=config.num_gpus))


def simulate(model: ModelSpec, hardware: HardwareSpec, config: DeploymentConfig,
             workload: Workload, *, seed: int | None = None, slos=(), progress: bool = False,
             step_model: StepModel | None = None,
             router: Router = "least_outstanding") -> ServingResult:
    """Simulate ``workload`` on ``config``; an infeasible configuration comes back with
    ``prediction.fits = False`` and a one-line ``reason`` (nothing raises for it)."""
    from .predict import fit_reason

    seed = workload.seed if seed is None else seed
    slos = tuple(slos) or workload.slos
    step = step_model or StepModel.build(model, hardware, config)
    reason = fit_reason(step, 0, batch=1, tokens_per_sequence=config.max_model_len)
    if reason is not None:
        return _unfit(model, hardware, config, reason)
    requests = sample_requests(workload, seed)
    longest = int((requests.prompt_tokens + requests.output_tokens).max())
    if longest > config.max_model_len:
        return _unfit(model, hardware, config,
                      f"a request of {longest} tokens (prompt + output) exceeds "
                      f"max_model_len={config.max_model_len}")
    fast = FastStep(step)
    spec = None
    if config.speculative is not None:
        from .speculative import SpeculativeModel

        spec = SpeculativeModel(model=model, hardware=hardware, config=config, target=fast,
                                seed=seed + 1)
    total_blocks = _kv_blocks(step, config, spec)
    block = config.block_size
    prompt = requests.prompt_tokens
    # Prefix hits in whole blocks, always leaving the last prompt token to compute.
    cached = np.minimum(np.floor(workload.prefix_sharing * prompt / block) * block,
                        (prompt - 1) // block * block).astype(np.int64)
    shared_blocks = int(cached.max() // block) if cached.size else 0
    slots = requests.output_tokens + prompt - 1 + (0 if spec is None else spec.g + 1)
    needed = int((-(-slots.max() // block)))
    if needed > total_blocks - shared_blocks:
        return _unfit(model, hardware, config,
                      f"the KV cache holds {total_blocks} blocks of {block} tokens; the longest "
                      f"request needs {needed}")

    n = len(requests)
    closed = workload.arrival.process == "closed"
    pending: list[tuple[float, int]] = []  # (arrival time, request) heap
    if closed:
        users = min(workload.arrival.concurrency, n)
        pending = [(0.0, rid) for rid in range(users)]
    else:
        pending = list(zip(requests.arrival_s.tolist(), range(n), strict=True))
    heapq.heapify(pending)
    issued = [len(pending)]
    bar = _progress_bar(n) if progress else None
    think = workload.arrival.think_s

    def on_finish(rid: int, end: float) -> None:
        if closed and issued[0] < n:
            heapq.heappush(pending, (end + think, issued[0]))
            issued[0] += 1
        if bar is not None:
            bar.update(1)

    run = Run(model=model, config=config, fast=fast, requests=requests, cached=cached,
              total_blocks=total_blocks, shared_prefix_blocks=shared_blocks, spec=spec,
              on_finish=on_finish)
    engine_type = StaticEngine if config.scheduling == "static" else ContinuousEngine
    engines = [engine_type(run, r) for r in range(config.dp)]
    arrival = np.full(n, np.nan)
    replica = np.zeros(n, dtype=np.int64)
    queue_at_arrival = np.zeros(n)
    routed = 0
    try:
        while True:
            next_arrival = pending[0][0] if pending else math.inf
            engine = None
            for candidate in engines:
                if candidate.has_work and (engine is None or candidate.clock < engine.clock):
                    engine = candidate
            if engine is None and not pending:
                break
            if engine is None or next_arrival <= engine.clock:
                time_s, rid = heapq.heappop(pending)
                if len(engines) == 1:
                    target = 0
                elif router == "round_robin":
                    target = routed % len(engines)
                else:
                    loads = [e.outstanding(time_s) for e in engines]
                    target = loads.index(min(loads))
                arrival[rid] = time_s
                replica[rid] = target
                queue_at_arrival[rid] = sum(len(e.waiting) for e in engines)
                engines[target].add(rid, time_s)
                routed += 1
                continue
            engine.step(next_arrival)
    finally:
        if bar is not None:
            bar.close()
    return _result(model, hardware, config, workload, step, run, engines, spec, slos, router,
                   arrival=arrival, replica=replica, queue_at_arrival=queue_at_arrival,
                   requests=requests, cached=cached)


def _progress_bar(total: int):
    try:
        from tqdm import tqdm
    except ImportError:  # optional: no bar without tqdm
        return None
    return tqdm(total=total, file=sys.stderr, unit="req", desc="simulating", leave=False)


def weighted_percentiles(values, counts) -> Percentiles:
    """``percentiles(np.repeat(values, counts))`` without building the repeated array."""
    values = np.asarray(values, dtype=float)
    counts = np.asarray(counts, dtype=np.int64)
    keep = counts > 0
    values, counts = values[keep], counts[keep]
    total = int(counts.sum())
    if total == 0:
        return percentiles([])
    order = np.argsort(values, kind="stable")
    values, counts = values[order], counts[order]
    ends = np.cumsum(counts)  # sorted position i holds values[searchsorted(ends, i, 'right')]

    def at(position: float) -> float:
        low = math.floor(position)
        high = min(low + 1, total - 1)
        v_low = values[np.searchsorted(ends, low, side="right")]
        v_high = values[np.searchsorted(ends, high, side="right")]
        return float(v_low + (position - low) * (v_high - v_low))

    mean = float((values * counts).sum() / total)
    p50, p90, p99 = (at(q / 100 * (total - 1)) for q in (50, 90, 99))
    return Percentiles(mean=mean, p50=p50, p90=p90, p99=p99)


def _expand_runs(runs) -> tuple[np.ndarray, np.ndarray]:
    """Every decode iteration's duration and emitting sequences, from the recorded runs."""
    if not runs:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    first, growth, steps, sequences = (np.asarray(column) for column in zip(*runs, strict=True))
    steps = steps.astype(np.int64)
    offsets = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    durations = np.repeat(first, steps) + np.repeat(growth, steps) * offsets
    return durations, np.repeat(sequences.astype(np.int64), steps)


def _overloaded(workload: Workload, arrival: np.ndarray, queue: np.ndarray) -> bool:
    """Open-loop arrivals only: did the waiting queue grow over the second half of the run?"""
    if not workload.is_open_loop or len(arrival) < 20 or not np.ptp(arrival) > 0:
        return False
    half = len(arrival) // 2
    order = np.argsort(arrival, kind="stable")[half:]
    t, q = arrival[order], queue[order]
    if np.ptp(t) <= 0:
        return False
    slope = np.polyfit(t - t[0], q, 1)[0]
    return bool(slope * np.ptp(t) > max(5.0, 0.05 * len(order)))


def _result(model, hardware, config, workload, step, run: Run, engines, spec, slos, router, *,
            arrival, replica, queue_at_arrival, requests: Requests, cached) -> ServingResult:
    from .predict import predict

    admit = np.asarray(run.admit_s)
    first = np.asarray(run.first_s)
    finish = np.asarray(run.finish_s)
    prompt = requests.prompt_tokens
    output = requests.output_tokens
    ttft = first - arrival
    e2e = finish - arrival
    queue = admit - arrival
    with np.errstate(divide="ignore", invalid="ignore"):
        tpot = np.where(output > 1, (finish - first) / (output - 1), np.nan)
    itl_durations, itl_counts = _expand_runs(run.itl_runs)
    itl_durations = np.concatenate([itl_durations, run.itl_extra])
    itl_counts = np.concatenate([itl_counts, np.ones(len(run.itl_extra), dtype=np.int64)])
    itl = weighted_percentiles(itl_durations, itl_counts)
    span = float(finish.max() - arrival.min())
    span = span if span > 0 else float("nan")
    num_gpus = config.num_gpus
    out_per_s = float(output.sum() / span)
    samples = {"ttft": ttft, "tpot": tpot[np.isfinite(tpot)], "e2e": e2e,
               "itl": np.repeat(itl_durations, itl_counts) if any(
                   s.metric == "itl" for s in slos) else np.zeros(0)}
    checks = check_slos(slos, samples)
    good = requests_meeting_slos(slos, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e)
    busy = sum(e.busy_s for e in engines)
    total_blocks = max(run.total_blocks, 1)
    kv_utilization = sum(e.block_seconds for e in engines) / (total_blocks * span * len(engines))
    preempted = np.asarray(run.preemptions)
    overloaded = _overloaded(workload, arrival, queue_at_arrival)
    mean_batch = sum(e.batch_seconds for e in engines) / busy if busy else 0.0
    decode_speed = np.where(np.isfinite(tpot) & (tpot > 0), 1.0 / tpot, np.nan)
    price = hardware.price_per_hour
    base = predict(model, hardware, config, batch=max(1, round(mean_batch)),
                   prompt=max(1, round(float(prompt.mean()))),
                   context=max(1, round(float(prompt.mean() + output.mean() / 2))))
    extra = {
        "workload": {"name": workload.name, "arrival": workload.arrival.model_dump(),
                     "num_requests": len(prompt), "prefix_sharing": workload.prefix_sharing,
                     "mean_prompt_tokens": float(prompt.mean()),
                     "mean_output_tokens": float(output.mean()),
                     "cached_prompt_fraction": float(cached.sum() / prompt.sum())},
        "router": router if config.dp > 1 else None,
        "duration_s": span,
        "slos": [check.as_dict() for check in checks],
        "slos_met": all(check.met for check in checks) and not overloaded,
        "overloaded": overloaded,
        "kv_blocks": run.total_blocks,
        "kv_utilization": kv_utilization,
        "kv_utilization_peak": max(e.peak_blocks for e in engines) / total_blocks,
        "preemptions": int(preempted.sum()),
        "preempted_requests": int((preempted > 0).sum()),
        "mean_batch": mean_batch,
        "busy_fraction": busy / (span * len(engines)),
        "iterations": sum(e.steps for e in engines),
        "speculative": spec.stats() if spec is not None else None,
    }
    prediction = Prediction(
        model=model.name, hardware=hardware.name, config=config.model_dump(mode="json"),
        fits=True, num_gpus=num_gpus, prefill=base.prefill, decode=base.decode,
        memory=base.memory, ops=base.ops,
        ttft_s=percentiles(ttft), tpot_s=percentiles(tpot[np.isfinite(tpot)]), itl_s=itl,
        e2e_s=percentiles(e2e), queue_s=percentiles(queue),
        output_tokens_per_s=out_per_s,
        total_tokens_per_s=float((prompt.sum() + output.sum()) / span),
        requests_per_s=len(prompt) / span,
        goodput_requests_per_s=float(good.sum() / span),
        output_tokens_per_s_per_gpu=out_per_s / num_gpus,
        output_tokens_per_s_per_user=float(np.nanmean(decode_speed))
        if np.isfinite(decode_speed).any() else None,
        cost_per_million_tokens=price * num_gpus / (out_per_s * 3600) * 1e6
        if price is not None and out_per_s > 0 else None,
        source="rooftune serving simulation",
        **extra,
    )
    return ServingResult(
        prediction=prediction, arrival_s=arrival, admit_s=admit, first_token_s=first,
        finish_s=finish, prompt_tokens=prompt, output_tokens=output, cached_tokens=cached,
        request_preemptions=preempted, replica=replica, overloaded=overloaded,
        kv_utilization=kv_utilization, preemptions=int(preempted.sum()), slo_checks=checks)
