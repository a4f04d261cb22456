"""``tune predict --workload ...``: simulate traffic on one deployment and print what users see.

The summary shows latency percentiles (TTFT, TPOT, ITL, E2E, queueing), throughputs (total, per
GPU, per user), goodput and each SLO against its target, KV-cache utilization and preemptions,
speculative-decoding statistics, and an overload warning when arrivals outpace service.
``--json`` prints the Prediction instead; ``--timeline`` / ``--trace`` export the requests.
"""

from __future__ import annotations

import argparse
import sys

from . import common


def simulate_from_args(args: argparse.Namespace, *, progress: bool | None = None):
    """(model, hardware, config, workload, ServingResult) for the shared flags."""
    from simulator.serving.simulate import simulate

    model, hardware = common.load_model_and_hardware(args)
    workload = common.workload_from_args(args)
    config = common.serving_config_from_args(args, workload)
    if progress is None:
        progress = bool(getattr(args, "progress", False)) or sys.stderr.isatty()
    result = simulate(
        model,
        hardware,
        config,
        workload,
        seed=args.seed,
        progress=progress,
        router=getattr(args, "router", "least_outstanding"),
    )
    require_fit(result)
    return model, hardware, config, workload, result


def require_fit(result) -> None:
    from simulator.errors import unfit_error

    prediction = result.prediction
    if not prediction.fits:
        raise unfit_error(prediction.unfit, prediction.reason)


def run_workload(args: argparse.Namespace) -> int:
    _, hardware, _, _, result = simulate_from_args(args)
    export(args, result)
    if args.json:
        common.print_json(result.prediction.model_dump(mode="json"))
    else:
        print(render(result, hardware))
    return 0


def export(args: argparse.Namespace, result) -> None:
    from simulator.serving.timeline import write_chrome_trace, write_timeline_csv

    if getattr(args, "timeline", None):
        write_timeline_csv(result, args.timeline)
    if getattr(args, "trace", None):
        write_chrome_trace(result, args.trace)


def render(result, hardware, *, title: str | None = None) -> str:
    from simulator.units import format_seconds
    from tuner.textfmt import key_values, table

    p = result.prediction
    c = p.config
    w = p.workload
    arrival = w["arrival"]
    if arrival["process"] == "closed":
        traffic = f"{arrival['concurrency']} concurrent users"
    elif arrival["process"] == "offline":
        traffic = "offline (all queued at 0)"
    else:
        cv = f", cv {arrival['cv']:g}" if arrival["process"] == "gamma" else ""
        rate = arrival["rate_per_s"]
        traffic = f"{arrival['process']} {rate:g} req/s{cv}" if rate else arrival["process"]
    out = [
        title
        or (
            f"{p.model} on {p.num_gpus} x {hardware.display_name}  tp={c['tp']} pp={c['pp']} "
            f"dp={c['dp']}  {c['scheduling']} batching, max_num_seqs {c['max_num_seqs']}, "
            f"budget {c['max_num_batched_tokens']} tokens"
            f"{'' if c['enable_chunked_prefill'] else ' (no chunked prefill)'}"
        ),
        f"workload {w['name']}: {w['num_requests']} requests, {traffic}, prompt "
        f"{w['mean_prompt_tokens']:.0f} / output {w['mean_output_tokens']:.0f} tokens on average"
        + (
            f", {100 * w['cached_prompt_fraction']:.0f} % of prompt tokens cached"
            if w["cached_prompt_fraction"]
            else ""
        )
        + (
            "; steady state (first and last 10 % of requests left out)"
            if w.get("steady_state")
            else ""
        ),
    ]
    rows = []
    for label, stats in (
        ("TTFT", p.ttft_s),
        ("TPOT", p.tpot_s),
        ("ITL", p.itl_s),
        ("E2E", p.e2e_s),
        ("queueing", p.queue_s),
    ):
        likely = p.bands.get(f"{label.lower()}_p99")
        rows.append(
            (
                label,
                *(format_seconds(getattr(stats, k)) for k in ("mean", "p50", "p90", "p99")),
                f"{format_seconds(likely[0])} - {format_seconds(likely[1])}" if likely else "-",
            )
        )
    out.append(
        table(["latency", "mean", "p50", "p90", "p99", "p99 likely (calibration)"], rows, title="")
    )
    per_user = p.output_tokens_per_s_per_user
    cost = p.cost_per_million_tokens
    out.append("")
    out.append(
        key_values(
            [
                ("requests/s", f"{p.requests_per_s:,.2f} over {p.duration_s:,.1f} s"),
                (
                    "output tokens/s",
                    f"{p.output_tokens_per_s:,.0f} ({p.output_tokens_per_s_per_gpu:,.0f}"
                    f" per GPU, {per_user:,.1f} per user)"
                    if per_user
                    else f"{p.output_tokens_per_s:,.0f}",
                ),
                ("total tokens/s", f"{p.total_tokens_per_s:,.0f}"),
                ("goodput", f"{p.goodput_requests_per_s:,.2f} req/s meeting every SLO"),
                (
                    "cost",
                    f"${cost:,.3f} per million output tokens"
                    if cost is not None
                    else "no price in the hardware profile",
                ),
                (
                    "batch",
                    f"{p.mean_batch:,.1f} running requests on average, busy "
                    f"{100 * p.busy_fraction:.0f} % of the time",
                ),
                (
                    "KV cache",
                    f"{100 * p.kv_utilization:.1f} % used on average, "
                    f"{100 * p.kv_utilization_peak:.1f} % at peak ({p.kv_blocks:,} blocks)",
                ),
                (
                    "preemptions",
                    f"{p.preemptions:,} ({p.preempted_requests:,} requests recomputed)",
                ),
            ],
            title="throughput and resources",
        )
    )
    if p.slos:
        out.append("")
        out.append(
            table(
                ["SLO", "target", "achieved", "met"],
                [
                    (
                        s["name"],
                        format_seconds(s["target_s"]),
                        format_seconds(s["value_s"]),
                        "yes" if s["met"] else "NO",
                    )
                    for s in p.slos
                ],
                title="SLOs",
            )
        )
    spec = p.speculative
    if spec:
        out.append("")
        out.append(
            f"speculative ({spec['method']}, g={spec['num_speculative_tokens']}, "
            f"a={spec['acceptance_rate']:g}): {spec['simulated_tokens_per_round']:.3f} tokens "
            f"per round simulated vs {spec['expected_tokens_per_round']:.3f} expected"
        )
        speedups = spec.get("speedup_by_batch") or {}
        if speedups:
            shown = ", ".join(
                f"{v:.2f}x at {b}" for b, v in speedups.items() if int(b) in (1, 8, 32, 128, 512)
            )
            stops = spec.get("stops_paying_at_batch")
            out.append(
                f"  decode speed-up vs no speculation at {spec['speedup_context']:,} cached "
                f"tokens: {shown}; "
                + (
                    f"costs more than it saves from batch {stops} (the verify of B x (g + 1) "
                    "tokens turns compute-bound)"
                    if stops
                    else "pays at every batch up to 512"
                )
            )
    if result.overloaded:
        out.append("")
        out.append(
            "WARNING: overloaded: requests arrive faster than this deployment serves "
            "them; the queue grew until the last arrival, so the latencies above "
            "depend on the run length. Lower --rate or add capacity (tune capacity)."
        )
    return "\n".join(out)
