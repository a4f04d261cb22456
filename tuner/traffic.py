"""``tune validate PLAN --traffic``: the plan's own traffic through the serving loop on a GPU,
predicted against measured percentiles.

A plan is chosen on TTFT and TPOT percentiles under its traffic, so that is what this checks.
One replica of the plan serves the plan's workload (the same requests, lengths and seed) at
three loads:

- ``light``: a fifth of the replica's capacity (queues empty: step times and host overhead);
- ``plan``: the plan's own rate per replica;
- ``overload``: 1.5 x capacity (queues grow: scheduling and preemption under pressure).

At each load the simulator predicts the run, then runs it again with the executor as its clock
(``executor.serving_loop``): the same scheduler decides every iteration, the GPU runs it, and the
measured time moves the clock. Predicted and measured TTFT p50/p99, TPOT p50/p99 and output
throughput go into the plan's ``validation`` section, with their errors and sampled CDFs;
``tune validate`` writes it as each load ends (status ``incomplete`` until the last), so a run
stopped part-way keeps the loads it finished.

The executor runs the target model in bf16 or FP8 (W8A8), on one GPU or, under ``torchrun``,
tensor-parallel over several, with the plan's speculative drafter (``executor.speculative``:
a draft model, an EAGLE-3 head or prompt lookup). With random weights a draft is kept by
chance alone, so how many each round keeps is drawn from the plan's acceptance rate, the same
draw in both runs: the drafts and verifies are real work, the acceptance is the plan's
assumption (the notes say so). Replicas beyond one are left out. Everything but the clock is
plain Python, tested with a stand-in clock.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np

from simulator.results import relative_error
from tuner.iteration_log import write_iterations

__all__ = [
    "LOADS",
    "EACH",
    "MEDIAN",
    "merge_traffic",
    "decode_step_ratios",
    "decode_steps",
    "traffic_rates",
    "run_traffic",
    "traffic_config",
    "traffic_summary",
    "traffic_rows",
    "TRAFFIC_HEAD",
]

LOADS = (("light", 0.2), ("plan", None), ("overload", 1.5))  # share of capacity, None: the plan's
EACH, MEDIAN = 0.15, 0.10  # agreement: every metric within EACH, their median within MEDIAN
METRICS = ("ttft_p50", "ttft_p99", "tpot_p50", "tpot_p99", "output_tokens_per_s")
QUANTILES = tuple(np.linspace(0.0, 1.0, 41).round(3))  # the CDFs kept in the plan


def traffic_config(plan: Any):
    """The configuration one replica runs (notes in ``traffic_notes``)."""
    return plan.config.model_copy(update={"dp": 1})


def traffic_notes(plan: Any) -> list[str]:
    notes = []
    speculative = plan.config.speculative
    if speculative is not None:
        drafter = {"draft": "the draft model", "eagle": "the EAGLE-3 head",
                   "ngram": "prompt lookup"}[speculative.method]  # fmt: skip
        notes.append(f"{drafter} drafts for real; the drafts each round keeps "
                     f"are drawn at the plan's acceptance rate ({speculative.acceptance_rate:g}) "
                     "in both runs, since random weights agree by chance only")  # fmt: skip
    if plan.replicas > 1:
        notes.append(f"one replica of {plan.replicas}, at the plan's rate per replica")
    return notes


def traffic_rates(plan: Any) -> list[tuple[str, float]]:
    """(load, requests/s for one replica) of each of ``LOADS``."""
    capacity = plan.capacity
    per_replica: float | None = None
    if capacity is not None:
        per_replica = capacity.replica_rate_per_s or capacity.bound_rate_per_s
    offered = plan.workload.rate_requests_per_s
    own = offered / plan.replicas if offered and offered != float("inf") else per_replica
    if own is None or per_replica is None:
        from simulator.errors import ConfigError

        raise ConfigError("the plan states neither a rate nor a capacity to validate at")
    return [(name, own if share is None else share * per_replica) for name, share in LOADS]


def _metrics(prediction: Any) -> dict[str, float | None]:
    def get(name: str, key: str) -> float | None:
        stats = getattr(prediction, name)
        return None if stats is None else float(getattr(stats, key))

    return {
        "ttft_p50": get("ttft_s", "p50"),
        "ttft_p99": get("ttft_s", "p99"),
        "tpot_p50": get("tpot_s", "p50"),
        "tpot_p99": get("tpot_s", "p99"),
        "output_tokens_per_s": prediction.output_tokens_per_s,
        "preemptions": prediction.preemptions,  # counted, not scored: one scheduler decides
    }


def _cdf(result: Any) -> dict[str, list[float]]:
    from simulator.serving.results import time_per_output_token

    ttft = result.first_token_s - result.arrival_s
    tpot = time_per_output_token(result.first_token_s, result.finish_s, result.output_tokens)
    tpot = tpot[np.isfinite(tpot)]
    return {name: [float(v) for v in np.quantile(values, QUANTILES)]
            for name, values in (("ttft", ttft), ("tpot", tpot)) if len(values)}  # fmt: skip


def run_traffic(
    plan: Any,
    *,
    model: Any,
    hardware: Any,
    workload: Any,
    slos: Any,
    seed: int,
    clock_for: Callable[[Any], Any] | None,
    requests: int | None = None,
    progress: Callable[[str], None] = lambda line: None,
    iterations_csv: Path | None = None,
    bar: bool = False,
    on_load: Callable[[dict[str, Any]], object] | None = None,
    loads: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Each load predicted and, with ``clock_for`` (the predicted run -> an ``Iteration``
    clock with nothing in flight), measured. Returns the ``traffic`` part of the plan's
    validation; ``iterations_csv`` gets every measured iteration, a row each, as each load
    ends (a run cut short keeps the loads it finished). ``progress`` gets a line as each load
    starts and ends; ``bar`` draws the requests each measured load has finished (tqdm).
    ``on_load`` gets the section so far after each measured load but the last (status
    ``incomplete``), so that a caller can keep it before the next load begins. ``loads``
    names the ones to run (default: all of ``LOADS``)."""
    from simulator.serving.capacity import at_rate
    from simulator.serving.simulate import simulate

    config = traffic_config(plan)
    if requests:
        workload = workload.model_copy(update={"num_requests": requests})
    rows: list[dict[str, Any]] = []
    csv_started = False
    rates = [(name, rate) for name, rate in traffic_rates(plan) if loads is None or name in loads]
    for name, rate in rates:
        traffic = at_rate(workload, rate)
        predicted = simulate(model, hardware, config, traffic, seed=seed, slos=slos)
        row: dict[str, Any] = {"load": name, "rate_per_s": rate,
                               "requests": traffic.num_requests,
                               "predicted": _metrics(predicted.prediction),
                               "cdf": {"predicted": _cdf(predicted)}}  # fmt: skip
        if clock_for is not None:
            progress(f"{name}: {rate:.2f} req/s, {traffic.num_requests} requests on the GPU")
            clock = clock_for(predicted)
            measured = simulate(model, hardware, config, traffic, seed=seed, slos=slos,
                                clock=clock, progress=bar and f"{name} load, GPU")  # fmt: skip
            row["measured"] = _metrics(measured.prediction)
            row["cdf"]["measured"] = _cdf(measured)
            row["errors"] = {
                key: relative_error(row["predicted"][key], row["measured"][key])
                for key in METRICS
                if row["predicted"][key] and row["measured"][key]
            }
            records = list(getattr(clock, "records", []))
            retries = getattr(clock, "allocator_retries", lambda: 0)()
            if retries:  # the GPU too full beside the KV cache: a device sync each
                row["allocator_retries"] = retries
            if getattr(clock, "notes", None):
                row["executor_notes"] = list(clock.notes)
            clock = None  # a clock for another cache size frees this one's first
            if records:
                if iterations_csv is not None:
                    write_iterations(iterations_csv, name, records, append=csv_started)
                    csv_started = True
                row["iterations"] = _iteration_means(records)
                row["decode_steps"] = decode_steps(records)
                # A kernel compiled inside a timed iteration is the executor's outlier.
                row["compiles"] = sum(getattr(r, "compiles", 0) for r in records)
                if row["compiles"]:
                    row["compiled_kernels"] = sorted(
                        {name for r in records for name in getattr(r, "compiled", ())}
                    )
                timed = [r for r in records if r.overhead_s is not None]
                if timed:  # the host's share, for tune calibrate --from PLAN.json
                    from simulator.calibration.host_overhead import fit_host_overhead

                    row["host_overhead"] = fit_host_overhead(
                        [r.emitting for r in timed], [r.overhead_s for r in timed]
                    )
            # Said now, so that a run cut short still leaves each finished load in its log.
            progress(f"{name}: error (predicted - measured) / measured: " + ", ".join(
                f"{key} {error:+.1%}" for key, error in row["errors"].items()
            ))  # fmt: skip
        rows.append(row)
        if on_load is not None and clock_for is not None and len(rows) < len(rates):
            on_load({**_section(plan, list(rows)), "status": "incomplete"})
    return _section(plan, rows)


def merge_traffic(
    plan: Any, earlier: dict[str, Any] | None, section: dict[str, Any]
) -> dict[str, Any]:
    """``section`` with the measured loads of an ``earlier`` traffic section that it did not
    run again (``tune validate --traffic --loads overload`` keeps the light and plan loads
    already in the plan), in ``LOADS`` order, each kept row marked with when it was measured;
    status and errors are over all of them."""
    earlier = earlier or {}
    fresh = {row["load"] for row in section["loads"]}
    kept = {row["load"]: {"measured_utc": earlier.get("measured_utc"), **row}
            for row in earlier.get("loads", [])
            if row["load"] not in fresh and "measured" in row}  # fmt: skip
    if not kept:
        return section
    by_name = {**kept, **{row["load"]: row for row in section["loads"]}}
    merged = _section(plan, [by_name[name] for name, _ in LOADS if name in by_name])
    if section["status"] == "incomplete":  # a run still going stays so
        merged["status"] = "incomplete"
    return {**section, **merged, "measured_utc": section["measured_utc"]}


def _iteration_means(records: list[Any]) -> dict[str, Any]:
    """Mean measured (and median, and longest), host, GPU and predicted seconds of the run's
    iterations: all of them, and apart by path (``executor.serving_loop.IterationRecord.path``:
    decode graphs, piecewise graphs beside eager attention, all eager), since the paths cost
    differently."""

    def means(group: list[Any]) -> dict[str, Any]:
        steps = [r.step_s for r in group]
        summary = {
            "count": len(group),
            "mean_step_s": statistics.fmean(steps),
            # A mean far above the median is a few outliers, not every iteration slow.
            "median_step_s": statistics.median(steps),
            "max_step_s": max(steps),
            "mean_host_s": statistics.fmean(r.host_s for r in group),
            "mean_predicted_s": statistics.fmean(r.predicted_s for r in group),
        }
        device = [r.device_s for r in group if getattr(r, "device_s", None) is not None]
        if len(device) == len(group):  # the GPU's share (CUDA events), where the run had a GPU
            summary["mean_device_s"] = statistics.fmean(device)
        issued = [r.issued_s for r in group if getattr(r, "issued_s", None) is not None]
        if len(issued) == len(group):  # the host's time to issue it (the pace, if near a step)
            summary["mean_issued_s"] = statistics.fmean(issued)
        return summary

    summary = means(records)
    for path in ("graph", "piecewise", "eager"):
        group = [r for r in records if r.path == path]
        if group:
            summary[path] = means(group)
    return summary


def decode_steps(records: list[Any], least: int = 5) -> list[dict[str, Any]]:
    """Decode-graph iterations (a speculative plan's rounds) by batch: per count of decoding
    sequences met at least ``least`` times, the iterations and their median measured and
    predicted seconds. Where the executor departs from the model as the batch grows (a graph
    bucket's step, a kernel's launch shape) shows here, not in a mean over the run."""
    by_batch: dict[int, list[Any]] = {}
    for record in records:
        if record.path == "graph":
            by_batch.setdefault(record.decodes, []).append(record)
    return [
        {"batch": batch, "iterations": len(group),
         "measured_s": statistics.median(r.step_s for r in group),
         "predicted_s": statistics.median(r.predicted_s for r in group)}
        for batch, group in sorted(by_batch.items()) if len(group) >= least
    ]  # fmt: skip


def decode_step_ratios(steps: list[dict[str, Any]]) -> list[tuple[str, float]]:
    """``decode_steps`` summed over batch spans that double (1, 2, 3-4, 5-8, 9-16, ...; the
    executor's graph buckets were these before they became vLLM's capture sizes, and the
    spans stay, so runs compare): each span's measured over predicted seconds, iterations
    weighted."""
    spans: dict[int, list[float]] = defaultdict(lambda: [0.0, 0.0])  # measured, predicted
    for step in steps:
        span = spans[1 << (step["batch"] - 1).bit_length()]  # the power of two at or above it
        span[0] += step["iterations"] * step["measured_s"]
        span[1] += step["iterations"] * step["predicted_s"]
    return [
        (str(top) if top <= 2 else f"{top // 2 + 1}-{top}", measured / predicted)
        for top, (measured, predicted) in sorted(spans.items()) if predicted > 0
    ]  # fmt: skip


def _section(plan: Any, loads: list[dict[str, Any]]) -> dict[str, Any]:
    errors = [abs(e) for row in loads for e in (row.get("errors") or {}).values()]
    if not errors:
        status, median, worst = "predicted only", None, None
    else:
        median, worst = statistics.median(errors), max(errors)
        status = "agrees" if worst <= EACH and median <= MEDIAN else "differs"
    return {
        "status": status,
        "median_abs_relative_error": median,
        "max_abs_relative_error": worst,
        "agreement": {"each": EACH, "median": MEDIAN},
        "loads": loads,
        "notes": traffic_notes(plan),
        "measured_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


TRAFFIC_HEAD = ["load", "metric", "predicted", "measured", "error"]


def show_metric(metric: str, value: float | None) -> str:
    """One metric of a load, as the report and the CLI print it."""
    from simulator.units import format_seconds

    if value is None:
        return "-"
    if metric == "preemptions":
        return str(value)
    return f"{value:,.0f} tok/s" if metric.startswith("output") else format_seconds(value)


def traffic_rows(section: dict[str, Any]) -> list[list[str]]:
    """A row per load and metric (``TRAFFIC_HEAD``); a load kept from an earlier run says when
    it was measured."""
    rows = []
    for row in section["loads"]:
        measured, errors = row.get("measured") or {}, row.get("errors") or {}
        kept = f", measured {row['measured_utc']}" if "measured_utc" in row else ""
        for metric, predicted in row["predicted"].items():
            error = errors.get(metric)
            rows.append([f"{row['load']} ({row['rate_per_s']:.2f} req/s{kept})", metric,
                         show_metric(metric, predicted), show_metric(metric, measured.get(metric)),
                         "-" if error is None else f"{100 * error:+.1f}%"])  # fmt: skip
    return rows


def traffic_summary(validation: dict[str, Any] | None) -> tuple[str | None, list[list[str]]]:
    """The report's lines for a plan's validation under traffic: a summary (None when it was
    not run) and ``traffic_rows``."""
    section = (validation or {}).get("traffic")
    if not section:
        return None, []
    rows = traffic_rows(section)
    machine = section.get("machine") or {}
    median = section.get("median_abs_relative_error")
    summary = (
        f"{section['status']}"
        + (f" (median error {100 * median:.1f}%, worst {100 * section['max_abs_relative_error']:.1f}%;"
           f" agreement: each within {100 * EACH:.0f}%, median within {100 * MEDIAN:.0f}%)"
           if median is not None else "")
        + f" on {machine.get('device_name', 'no GPU')}"
        + (f" (host: {machine['host_dispatch_us']:.1f} us to issue an eager op)"
           if machine.get("host_dispatch_us") is not None else "")
        + f", {section.get('measured_utc', '')}: `{section.get('command', '')}`"
    )  # fmt: skip
    return summary, rows
