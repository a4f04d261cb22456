"""What a serving run reports: per-request arrays, percentiles, throughputs, goodput, overload.

``build_result`` turns the raw times of a run (arrival, admission, first token, finish per
request; decode iterations as runs of durations) into a ``ServingResult`` whose ``prediction``
fills the request-level fields of the ``Prediction`` contract. Definitions:

- TTFT = first token - arrival; E2E = finish - arrival; queueing = first admission - arrival;
- TPOT = (finish - first token) / (output tokens - 1), requests with one output token excluded;
- ITL: every gap between two emissions of a request, i.e. each decode iteration's duration once
  per sequence that emitted in it, plus the gap across a preemption;
- throughputs are over the run's span (first arrival to last finish), as serving benchmarks
  measure them; per user = mean over requests of 1 / TPOT;
- goodput = requests meeting every SLO on their own, per second of span (``slo.py``);
- cost per million output tokens = price per GPU-hour x GPUs / (output tokens/s x 3600) x 1e6;
- overload (open-loop arrivals only): the waiting queue, sampled at every arrival, grew over
  the second half of the run by more than 5 % of the requests that arrived in it (and by more
  than 5 requests); or the requests in the system did, by that much and by more than half
  their mean (the run never settled: a batch limit large enough lets requests pile up in the
  running set, and a short run ends before anyone waits); or the arrivals lasted less than two
  mean request lifetimes (E2E), too short to tell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from ..cost.bands import bands_of
from ..data.slo import SloCheck, check_slos, requests_meeting_slos
from ..data.workload import Requests, Workload
from ..results import Percentiles, Prediction, percentiles

__all__ = [
    "ServingResult",
    "EngineLimits",
    "build_result",
    "time_per_output_token",
    "run_limits",
    "weighted_percentiles",
    "expand_runs",
]


# An engine that does not track its limits (static batching) counts as bound by all of them.
_ALL_LIMITS = frozenset({"max_num_seqs", "token_budget", "kv_cache"})


def _empty(dtype=float):
    return field(default_factory=lambda: np.zeros(0, dtype=dtype))


@dataclass(frozen=True)
class EngineLimits:
    """Which batching limits shaped a run, and the peaks under the rest.

    A limit is in ``bound_by`` when it changed a scheduling decision (a request not admitted, a
    chunk cut short, a preemption). Another configuration with the same step times, under which
    no limit of this run is in ``bound_by`` and every peak fits, makes exactly the same
    decisions, so its run is this run: ``same_schedule`` says when.
    """

    bound_by: frozenset[str] = frozenset()  # of "max_num_seqs", "token_budget", "kv_cache"
    peak_running: int = 0  # sequences running when another one was admitted
    peak_tokens: int = 0  # tokens scheduled in one iteration
    peak_blocks: int = 0  # KV blocks in use at once
    max_num_seqs: int = 0
    token_budget: int = 0  # per iteration, all micro-batches
    kv_blocks: int = 0

    def same_schedule(self, *, max_num_seqs: int, token_budget: int, kv_blocks: int) -> bool:
        """Whether a run with these limits (and the same step times) schedules like this one."""
        seqs = max_num_seqs == self.max_num_seqs or (
            "max_num_seqs" not in self.bound_by and max_num_seqs > self.peak_running
        )
        tokens = token_budget == self.token_budget or (
            "token_budget" not in self.bound_by and token_budget >= self.peak_tokens
        )
        blocks = kv_blocks == self.kv_blocks or (
            "kv_cache" not in self.bound_by and kv_blocks >= self.peak_blocks
        )
        return seqs and tokens and blocks


@dataclass
class ServingResult:
    """A run's ``prediction`` plus what each request saw (arrays ``[num_requests]``, seconds)."""

    prediction: Prediction
    arrival_s: np.ndarray = _empty()
    admit_s: np.ndarray = _empty()
    first_token_s: np.ndarray = _empty()
    finish_s: np.ndarray = _empty()
    prompt_tokens: np.ndarray = _empty(np.int64)
    output_tokens: np.ndarray = _empty(np.int64)
    cached_tokens: np.ndarray = _empty(np.int64)
    request_preemptions: np.ndarray = _empty(np.int64)
    replica: np.ndarray = _empty(np.int64)
    overloaded: bool = False
    kv_utilization: float = 0.0
    preemptions: int = 0
    slo_checks: list[SloCheck] = field(default_factory=list)
    # What each arrival found: requests in the system, and those still waiting for admission
    # (with Poisson arrivals their means are the time averages: arrivals see time averages).
    in_system_at_arrival: np.ndarray = _empty()
    queue_at_arrival: np.ndarray = _empty()
    limits: EngineLimits = field(default_factory=EngineLimits)
    stopped: str | None = None  # why the run ended early (a certain SLO miss), if it did

    @property
    def fits(self) -> bool:
        return self.prediction.fits


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


def expand_runs(runs) -> tuple[np.ndarray, np.ndarray]:
    """Every decode iteration's duration and emitting sequences, from the recorded runs
    ``(first duration, growth per step, steps, sequences)``."""
    if not runs:
        return np.zeros(0), np.zeros(0, dtype=np.int64)
    first, growth, steps, sequences = (np.asarray(column) for column in zip(*runs, strict=True))
    steps = steps.astype(np.int64)
    offsets = np.arange(int(steps.sum())) - np.repeat(np.cumsum(steps) - steps, steps)
    durations = np.repeat(first, steps) + np.repeat(growth, steps) * offsets
    return durations, np.repeat(sequences.astype(np.int64), steps)


def overloaded(
    workload: Workload,
    arrival: np.ndarray,
    queue: np.ndarray,
    in_system: np.ndarray | None = None,
    e2e: np.ndarray | None = None,
) -> bool:
    """Open-loop arrivals only: did the run fail to reach a steady state? Either the waiting
    queue grew over the second half of the run, or the requests in the system did (a large
    batch limit lets requests pile up in the running set instead of the queue: a short run
    then ends before anyone waits, though arrivals outpace completions), or the arrivals
    lasted less than two mean request lifetimes (too short to tell)."""
    if not workload.is_open_loop or len(arrival) < 20 or not np.ptp(arrival) > 0:
        return False
    if e2e is not None and np.isfinite(e2e).any():
        if np.ptp(arrival) < 2.0 * float(np.nanmean(e2e[np.isfinite(e2e)])):
            return True
    half = len(arrival) // 2
    order = np.argsort(arrival, kind="stable")[half:]
    t = arrival[order]
    if np.ptp(t) <= 0:
        return False

    def growth(samples: np.ndarray) -> float:
        return float(np.polyfit(t - t[0], samples, 1)[0] * np.ptp(t))

    floor = max(5.0, 0.05 * len(order))
    if growth(queue[order]) > floor:
        return True
    if in_system is None:
        return False
    # Near saturation the count still climbs slowly toward its steady level; only a climb by
    # half its mean within the half says the run never settled.
    held = in_system[order]
    return growth(held) > max(floor, 0.5 * float(held.mean()))


STEADY_TRIM = 0.1  # share of the requests left out at each end of a steady-state window


def steady_window(arrival: np.ndarray, finish: np.ndarray) -> tuple[np.ndarray, tuple]:
    """The steady state of a run: the requests sent after the first and before the last
    ``STEADY_TRIM`` of all (by send time: a closed loop's first users all start at 0), and the
    time between the completions at those two quantiles (a throughput without the ramp-up and
    the drain). Returns the mask of kept requests and (start, end) seconds."""
    n = len(arrival)
    order = np.argsort(arrival, kind="stable")
    low, high = (
        int(n * STEADY_TRIM),
        max(int(np.ceil(n * (1 - STEADY_TRIM))), int(n * STEADY_TRIM) + 1),
    )
    kept = np.zeros(n, dtype=bool)
    kept[order[low:high]] = True
    start, end = np.quantile(finish, [STEADY_TRIM, 1 - STEADY_TRIM])
    return kept, (float(start), float(end))


def time_per_output_token(first: np.ndarray, finish: np.ndarray, output: np.ndarray) -> np.ndarray:
    """Each request's TPOT: ``(finish - first token) / (output tokens - 1)``; NaN for a
    request of one output token (it has no gap between tokens)."""
    output = np.asarray(output)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(output > 1, (np.asarray(finish) - first) / (output - 1), np.nan)


def build_result(
    model,
    hardware,
    config,
    workload: Workload,
    step,
    run,
    engines,
    spec,
    slos,
    router,
    *,
    arrival: np.ndarray,
    replica: np.ndarray,
    queue_at_arrival: np.ndarray,
    in_system_at_arrival: np.ndarray,
    requests: Requests,
    cached: np.ndarray,
) -> ServingResult:
    """Metrics of a finished run (see the module docstring)."""
    from ..cost.predict import predict

    del step  # the step-level fields come from predict() at the run's mean shapes
    n = len(arrival)
    admit = np.asarray(run.admit_s)
    first = np.asarray(run.first_s)
    finish = np.asarray(run.finish_s)
    prompt = requests.prompt_tokens
    output = requests.output_tokens
    ttft = first - arrival
    e2e = finish - arrival
    queue = admit - arrival
    tpot = time_per_output_token(first, finish, output)
    span = float(finish.max() - arrival.min())
    span = span if span > 0 else float("nan")
    out_tokens, all_tokens, completed = float(output.sum()), float((prompt + output).sum()), n
    if workload.steady_state:
        kept, window_s = steady_window(arrival, finish)
        ttft, tpot, e2e, queue = ttft[kept], tpot[kept], e2e[kept], queue[kept]
        done = (finish > window_s[0]) & (finish <= window_s[1])
        span = float(window_s[1] - window_s[0]) or float("nan")
        out_tokens, completed = float(output[done].sum()), int(done.sum())
        all_tokens = float((prompt[done] + output[done]).sum())
    itl_durations, itl_counts = expand_runs(run.itl_runs)
    itl_durations = np.concatenate([itl_durations, run.itl_extra])
    itl_counts = np.concatenate([itl_counts, np.ones(len(run.itl_extra), dtype=np.int64)])
    itl = weighted_percentiles(itl_durations, itl_counts)
    num_gpus = config.num_gpus
    out_per_s = out_tokens / span
    wants_itl = any(s.metric == "itl" for s in slos)
    samples = {
        "ttft": ttft,
        "tpot": tpot[np.isfinite(tpot)],
        "e2e": e2e,
        "itl": np.repeat(itl_durations, itl_counts) if wants_itl else np.zeros(0),
    }
    checks = check_slos(slos, samples)
    good = requests_meeting_slos(slos, ttft_s=ttft, tpot_s=tpot, e2e_s=e2e)
    busy = sum(e.busy_s for e in engines)
    total_blocks = max(run.total_blocks, 1)
    kv_utilization = sum(e.block_seconds for e in engines) / (total_blocks * span * len(engines))
    preempted = np.asarray(run.preemptions)
    is_overloaded = overloaded(workload, arrival, queue_at_arrival, in_system_at_arrival, e2e)
    mean_batch = sum(e.batch_seconds for e in engines) / busy if busy else 0.0
    with np.errstate(divide="ignore", invalid="ignore"):
        decode_speed = np.where(np.isfinite(tpot) & (tpot > 0), 1.0 / tpot, np.nan)
    price = hardware.price_per_hour
    base = predict(
        model,
        hardware,
        config,
        batch=max(1, round(mean_batch)),
        prompt=max(1, round(float(prompt.mean()))),
        context=max(1, round(float(prompt.mean() + output.mean() / 2))),
    )
    extra = {
        "workload": {
            "name": workload.name,
            "arrival": workload.arrival.model_dump(),
            "num_requests": len(prompt),
            "steady_state": workload.steady_state,
            "prefix_sharing": workload.prefix_sharing,
            "mean_prompt_tokens": float(prompt.mean()),
            "mean_output_tokens": float(output.mean()),
            "cached_prompt_fraction": float(cached.sum() / prompt.sum()),
        },
        "router": router if config.dp > 1 else None,
        "duration_s": span,
        "slos": [check.as_dict() for check in checks],
        "slos_met": all(check.met for check in checks) and not is_overloaded,
        "overloaded": is_overloaded,
        "kv_blocks": run.total_blocks,
        "kv_utilization": kv_utilization,
        "kv_utilization_peak": max(e.peak_blocks for e in engines) / total_blocks,
        "preemptions": int(preempted.sum()),
        "preempted_requests": int((preempted > 0).sum()),
        "mean_batch": mean_batch,
        "busy_fraction": busy / (span * len(engines)),
        "iterations": sum(e.steps for e in engines),
        "speculative": spec.stats(context=round(float(prompt.mean() + output.mean() / 2)))
        if spec is not None
        else None,
    }
    latencies = {
        "ttft": percentiles(ttft),
        "tpot": percentiles(tpot[np.isfinite(tpot)]),
        "itl": itl,
        "e2e": percentiles(e2e),
    }
    values: dict[str, float | None] = {
        f"{metric}_{stat}": getattr(stats, stat)
        for metric, stats in latencies.items()
        for stat in ("mean", "p50", "p90", "p99")
    }
    values.update({check.slo.name: float(check.value_s) for check in checks})
    prediction = Prediction(
        model=model.name,
        hardware=hardware.name,
        config=config.model_dump(mode="json"),
        fits=True,
        num_gpus=num_gpus,
        prefill=base.prefill,
        decode=base.decode,
        memory=base.memory,
        ops=base.ops,
        ttft_s=latencies["ttft"],
        tpot_s=latencies["tpot"],
        itl_s=itl,
        e2e_s=latencies["e2e"],
        bands={**base.bands, **bands_of(hardware, values)},
        queue_s=percentiles(queue),
        output_tokens_per_s=out_per_s,
        total_tokens_per_s=all_tokens / span,
        requests_per_s=completed / span,
        # the share of requests meeting every SLO, at the rate requests complete
        goodput_requests_per_s=float(good.mean()) * completed / span if len(good) else 0.0,
        output_tokens_per_s_per_gpu=out_per_s / num_gpus,
        output_tokens_per_s_per_user=float(np.nanmean(decode_speed))
        if np.isfinite(decode_speed).any()
        else None,
        cost_per_million_tokens=price * num_gpus / (out_per_s * 3600) * 1e6
        if price is not None and out_per_s > 0
        else None,
        source="rooftune serving simulation",
        **extra,
    )
    return ServingResult(
        prediction=prediction,
        arrival_s=arrival,
        admit_s=admit,
        first_token_s=first,
        finish_s=finish,
        prompt_tokens=prompt,
        output_tokens=output,
        cached_tokens=cached,
        request_preemptions=preempted,
        replica=replica,
        overloaded=is_overloaded,
        kv_utilization=kv_utilization,
        preemptions=int(preempted.sum()),
        slo_checks=checks,
        in_system_at_arrival=in_system_at_arrival,
        queue_at_arrival=queue_at_arrival,
        limits=run_limits(config, run, engines),
    )


def run_limits(config, run, engines) -> EngineLimits:
    """The limits that shaped a run so far, and its peaks under the others."""
    return EngineLimits(
        bound_by=frozenset().union(*(getattr(e, "bound_by", _ALL_LIMITS) for e in engines)),
        peak_running=max(getattr(e, "peak_running", 0) for e in engines),
        peak_tokens=max(getattr(e, "peak_tokens", 0) for e in engines),
        peak_blocks=max(e.peak_blocks for e in engines),
        max_num_seqs=config.max_num_seqs,
        token_budget=config.max_num_batched_tokens * config.pp,
        kv_blocks=run.total_blocks,
    )
