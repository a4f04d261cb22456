"""The report's figures, each a function from plain data to PNG bytes (matplotlib, Agg).

- ``pareto``: every deployment the search simulated at the traffic's rate, its cost (or, with
  no rate, what a GPU serves) against its p99 TPOT, the Pareto front, the TPOT SLO and the
  chosen plan;
- ``roofline``: the chosen configuration's operators on the GPU's roofline, beside the share
  of step time each operator takes in prefill and decode;
- ``memory``: one GPU's memory, weights to KV cache, against the engine budget and HBM;
- ``latency_cdfs``: TTFT, TPOT and end-to-end latency distributions with the SLO targets;
- ``traffic_cdfs``: predicted against measured TTFT and TPOT distributions of each load of
  ``tune validate --traffic``;
- ``traffic_steps``: the same run's decode-graph steps, measured against predicted, by batch;
- ``history``: every simulation in search order (the cost level it tested), with the best
  deployment so far.
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["pareto", "roofline", "memory", "latency_cdfs", "traffic_cdfs", "traffic_steps",
           "history"]  # fmt: skip

_FEASIBLE, _INFEASIBLE, _CHOSEN = "tab:blue", "0.75", "tab:red"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any, *, layout: bool = True) -> bytes:
    """The figure as PNG bytes (``layout=False``: the figure has laid itself out)."""
    buffer = io.BytesIO()
    if layout:
        fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _plt().close(fig)
    return buffer.getvalue()


def _wrap(text: str, width: int = 34) -> str:
    """A long configuration label over lines of at most ``width`` characters."""
    import textwrap

    return "\n".join(textwrap.wrap(text, width)) or text


def pareto(**kwargs: Any) -> bytes:
    return _png(pareto_figure(**kwargs), layout=False)


def pareto_figure(
    *,
    points: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    tpot_target_s: float | None,
    title: str,
    ylabel: str,
) -> bytes:
    """``points``: dicts with tpot_ms, objective, feasible, front (bools) and label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.5, 5.2))
    shown = [p for p in points if p["tpot_ms"] is not None]
    if tpot_target_s:
        ax.axvline(tpot_target_s * 1e3, color="tab:red", lw=1, ls="--",
                   label=f"TPOT SLO {tpot_target_s * 1e3:g} ms")  # fmt: skip
    for feasible, color, name in (
        (False, _INFEASIBLE, "misses an SLO"),
        (True, _FEASIBLE, "meets every SLO"),
    ):
        xs = [p["tpot_ms"] for p in shown if p["feasible"] == feasible]
        ys = [p["objective"] for p in shown if p["feasible"] == feasible]
        ax.scatter(xs, ys, s=18, color=color, edgecolor="k", lw=0.3, label=name, zorder=2)
    front = sorted((p for p in shown if p["front"]), key=lambda p: p["tpot_ms"])
    if front:
        ax.step([p["tpot_ms"] for p in front], [p["objective"] for p in front], "-",
                where="post", color="tab:orange", lw=1.5, label="Pareto front", zorder=3)  # fmt: skip
    if chosen and chosen["tpot_ms"] is not None:
        ax.scatter([chosen["tpot_ms"]], [chosen["objective"]], marker="*", s=280, color=_CHOSEN,
                   edgecolor="k", zorder=4, label="plan: " + _wrap(chosen["label"]))  # fmt: skip
    ax.set_xlabel("p99 time per output token (ms)")
    ax.set_ylabel(ylabel)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    _legend_below(fig, ax, ncol=3)
    return fig


def roofline(**kwargs: Any) -> bytes:
    return _png(roofline_figure(**kwargs))


def roofline_figure(*, prediction: Any, hardware: Any) -> Any:
    from tuner.roofline_plot import plot_roofline

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    phases = ("prefill", "decode")
    names = sorted({op.name for op in prediction.ops if op.time_s > 0})
    shares = {
        phase: {op.name: op.share for op in prediction.ops if op.phase == phase}
        for phase in phases
    }
    order = sorted(names, key=lambda n: -max(shares[p].get(n, 0) for p in phases))[:12]
    y = np.arange(len(order))
    for offset, phase, color in ((-0.2, "prefill", "tab:blue"), (0.2, "decode", "tab:orange")):
        phase_result = getattr(prediction, phase)
        label = (
            phase
            if phase_result is None
            else (f"{phase} ({phase_result.time_s * 1e3:.1f} ms, {phase_result.bound}-bound)")
        )
        ax_values = [100 * shares[phase].get(n, 0.0) for n in order]
        right.barh(y + offset, ax_values, height=0.4, color=color, label=label)
    right.set_yticks(y, order, fontsize=8)
    right.invert_yaxis()
    right.set_xlabel("share of step time (%)")
    right.set_title("per-op breakdown", fontsize=10)
    right.legend(fontsize=8)
    right.grid(axis="x", alpha=0.25)
    # last: its operator labels are placed in the final layout, clear of each other
    plot_roofline(prediction, hardware, ax=left)
    return fig


def _legend_below(fig: Any, ax: Any, *, ncol: int) -> None:
    """The axes' legend under the plot, inside the figure: it never covers the axis label and
    never runs past the figure's edge."""
    handles, names = ax.get_legend_handles_labels()
    legend = fig.legend(handles, names, fontsize=7, loc="lower center", ncol=ncol, frameon=False)
    fig.canvas.draw()
    share = legend.get_window_extent().height / fig.bbox.height
    fig.tight_layout(rect=(0, min(share + 0.02, 0.6), 1, 1))


def memory(**kwargs: Any) -> bytes:
    return _png(memory_figure(**kwargs), layout=False)


def memory_figure(*, plan_memory: Any, title: str) -> Any:
    """One stacked bar of a GPU's memory with the budget and HBM lines (GB)."""
    plt = _plt()
    m = plan_memory
    needed = m.kv_tokens_needed * m.kv_bytes_per_token
    parts = [
        ("weights", m.weights_bytes, "tab:blue"),
        ("activations", m.activation_bytes, "tab:purple"),
        ("reserved (context, graphs, NCCL)", m.reserved_bytes, "0.6"),
        ("KV cache needed", min(needed, m.kv_cache_bytes), "tab:orange"),
        ("KV cache spare", max(m.kv_cache_bytes - needed, 0.0), "moccasin"),
    ]
    fig, ax = plt.subplots(figsize=(8, 3.6))
    left = 0.0
    for name, value, color in parts:
        ax.barh(
            [0],
            [value / 1e9],
            left=[left / 1e9],
            color=color,
            edgecolor="k",
            lw=0.4,
            label=f"{name}: {value / 1e9:.1f} GB",
        )
        left += value
    ax.axvline(
        m.budget_bytes / 1e9,
        color="k",
        ls="--",
        lw=1,
        label=f"budget {m.budget_bytes / 1e9:.1f} GB "
        f"(gpu_memory_utilization {m.gpu_memory_utilization:.2f})",
    )
    device = m.device_memory_bytes / 1e9
    ax.axvline(device, color="tab:red", lw=1.5, label=f"device memory {device:.1f} GB")
    ax.set_yticks([])
    ax.set_xlabel("GB per GPU")
    ax.set_xlim(0, device * 1.02)
    ax.set_title(title, fontsize=10)
    _legend_below(fig, ax, ncol=3)
    return fig


def latency_cdfs(
    *, samples: dict[str, np.ndarray], targets: dict[str, tuple[str, float, float]]
) -> bytes:
    """``samples``: metric -> seconds per request (ttft, tpot, e2e); ``targets``: SLO name ->
    (metric, percentile, target) drawn as a marker at (target, percentile)."""
    plt = _plt()
    metrics = [m for m in ("ttft", "tpot", "e2e") if m in samples]
    fig, axes = plt.subplots(1, len(metrics), figsize=(4 * len(metrics), 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        values = np.sort(np.asarray(samples[metric], dtype=float))
        values = values[np.isfinite(values)]
        if values.size:
            ax.plot(values * 1e3, np.arange(1, values.size + 1) / values.size * 100, lw=1.6)
        for name, (slo_metric, percentile, target) in targets.items():
            if slo_metric == metric:
                ax.axvline(target * 1e3, color="tab:red", ls="--", lw=1)
                ax.axhline(percentile, color="tab:red", ls=":", lw=0.8)
                ax.annotate(
                    name,
                    (target * 1e3, percentile),
                    fontsize=7,
                    color="tab:red",
                    xytext=(3, -10),
                    textcoords="offset points",
                )
        ax.set_xlabel(f"{metric.upper()} (ms)")
        ax.set_ylabel("requests (%)")
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.25)
    fig.suptitle("latency distributions of the plan (simulated requests)", fontsize=10)
    return _png(fig)


def traffic_cdfs(**kwargs: Any) -> bytes:
    return _png(traffic_cdfs_figure(**kwargs), layout=False)


def traffic_cdfs_figure(*, loads: list[dict[str, Any]]) -> Any:
    """``loads``: the ``traffic`` section's rows, each with ``cdf.predicted`` and
    ``cdf.measured`` quantiles of TTFT and TPOT; one colour per load, measured solid and
    predicted dashed."""
    plt = _plt()
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), squeeze=False)
    colours = ("tab:green", "tab:blue", "tab:red")
    for ax, metric in zip(axes[0], ("ttft", "tpot"), strict=True):
        for colour, row in zip(colours, loads, strict=False):
            for side, style in (("measured", "-"), ("predicted", "--")):
                values = (row.get("cdf") or {}).get(side, {}).get(metric)
                if values:
                    share = np.linspace(0, 100, len(values))
                    ax.plot(np.asarray(values) * 1e3, share, style, color=colour, lw=1.5,
                            label=f"{row['load']}, {side}")  # fmt: skip
        ax.set_xlabel(f"{metric.upper()} (ms)")
        ax.set_ylabel("requests (%)")
        ax.set_xscale("log")
        # Plain numbers at 1, 2 and 5 of each decade (a short log range has no decade tick).
        from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

        ax.xaxis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
        ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_ylim(0, 101)
        ax.grid(alpha=0.25, which="both")
    fig.suptitle("served on the GPU (solid) against predicted (dashed)", fontsize=10)
    _legend_below(fig, axes[0][0], ncol=3)
    return fig


def traffic_steps(*, loads: list[dict[str, Any]]) -> bytes:
    """``loads``: the ``traffic`` section's rows, each with ``decode_steps`` (median measured
    and predicted seconds of its decode-graph iterations per batch); one colour per load,
    measured solid with markers, predicted dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    colours = ("tab:green", "tab:blue", "tab:red")
    for colour, row in zip(colours, loads, strict=False):
        steps = row.get("decode_steps") or []
        if not steps:
            continue
        batch = [s["batch"] for s in steps]
        ax.plot(batch, [1e3 * s["measured_s"] for s in steps], "o-", ms=3, color=colour,
                lw=1.5, label=f"{row['load']}, measured")  # fmt: skip
        ax.plot(batch, [1e3 * s["predicted_s"] for s in steps], "--", color=colour, lw=1.2,
                label=f"{row['load']}, predicted")  # fmt: skip
    ax.set_xlabel("sequences decoding (batch)")
    ax.set_ylabel("decode step, median (ms)")
    ax.set_ylim(bottom=0)
    ax.grid(alpha=0.25)
    ax.set_title("decode-graph steps on the GPU against predicted", fontsize=10)
    ax.legend(fontsize=8, ncol=3)
    return _png(fig)


def history(
    *, numbers: list[int], values: list[float], feasible: list[bool], maximize: bool, name: str
) -> bytes:
    plt = _plt()
    fig, ax = plt.subplots(figsize=(8, 3.4))
    n, v, f = np.array(numbers), np.array(values, dtype=float), np.array(feasible, dtype=bool)
    ax.scatter(n[~f], v[~f], s=10, color=_INFEASIBLE, label="infeasible")
    ax.scatter(n[f], v[f], s=14, color=_FEASIBLE, label="feasible")
    if f.any():
        best, run = [], None
        for value, ok in zip(v, f, strict=True):
            if ok:
                run = value if run is None else (max(run, value) if maximize else min(run, value))
            best.append(np.nan if run is None else run)
        ax.step(n, best, where="post", color=_CHOSEN, lw=1.5, label="best feasible so far")
    ax.set_xlabel("simulation (trial)")
    ax.set_ylabel(name)
    ax.set_title("search history", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8)
    return _png(fig)
