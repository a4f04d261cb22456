"""The report's figures, each a function from plain data to PNG bytes (matplotlib, Agg).

- ``pareto``: every simulated trial as throughput per GPU against tokens/s per user (the
  trade-off a serving deployment makes: batch more for the fleet, less for each user), the
  Pareto front, the region the TPOT SLO allows, and the chosen plan;
- ``roofline``: the chosen configuration's operators on the GPU's roofline, beside the share
  of step time each operator takes in prefill and decode;
- ``memory``: one GPU's memory, weights to KV cache, against the engine budget and HBM;
- ``latency_cdfs``: TTFT, TPOT and end-to-end latency distributions with the SLO targets;
- ``history``: the study's first objective trial by trial, with the best feasible so far;
- ``importances``: which knobs moved the first objective (Optuna's evaluator).
"""

from __future__ import annotations

import io
from typing import Any

import numpy as np

__all__ = ["pareto", "roofline", "memory", "latency_cdfs", "history", "importances"]

_FEASIBLE, _INFEASIBLE, _CHOSEN = "tab:blue", "0.75", "tab:red"


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig: Any) -> bytes:
    buffer = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buffer, format="png", dpi=100)
    _plt().close(fig)
    return buffer.getvalue()


def pareto(
    *,
    points: list[dict[str, Any]],
    chosen: dict[str, Any] | None,
    tpot_target_s: float | None,
    title: str,
) -> bytes:
    """``points``: dicts with per_user, per_gpu, feasible, front (bools) and label."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(10.5, 5.2))
    if tpot_target_s:
        ax.axvspan(
            1.0 / tpot_target_s,
            1e9,
            color="tab:green",
            alpha=0.08,
            label=f"TPOT SLO region (>= {1 / tpot_target_s:.0f} tokens/s per user)",
        )
        ax.axvline(1.0 / tpot_target_s, color="tab:green", lw=1, ls="--")
    for feasible, color, name in (
        (False, _INFEASIBLE, "misses an SLO"),
        (True, _FEASIBLE, "meets every SLO"),
    ):
        xs = [p["per_user"] for p in points if p["feasible"] == feasible]
        ys = [p["per_gpu"] for p in points if p["feasible"] == feasible]
        ax.scatter(xs, ys, s=18, color=color, edgecolor="k", lw=0.3, label=name, zorder=2)
    front = sorted((p for p in points if p["front"]), key=lambda p: p["per_user"])
    if front:
        ax.plot(
            [p["per_user"] for p in front],
            [p["per_gpu"] for p in front],
            "-o",
            color="tab:orange",
            ms=4,
            lw=1.5,
            label="Pareto front (feasible)",
            zorder=3,
        )
    if chosen:
        ax.scatter(
            [chosen["per_user"]],
            [chosen["per_gpu"]],
            marker="*",
            s=280,
            color=_CHOSEN,
            edgecolor="k",
            zorder=4,
            label="plan",
        )
        ax.annotate(
            chosen["label"],
            (chosen["per_user"], chosen["per_gpu"]),
            fontsize=7,
            xytext=(6, -12),
            textcoords="offset points",
        )
    xs = [p["per_user"] for p in points] or [1.0]
    ax.set_xlim(0, max(xs) * 1.1)
    ax.set_xlabel("output tokens/s per user (mean decode speed)")
    ax.set_ylabel("output tokens/s per GPU")
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), borderaxespad=0)
    return _png(fig)


def roofline(*, prediction: Any, hardware: Any) -> bytes:
    from tuner.roofline_plot import plot_roofline

    plt = _plt()
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5), gridspec_kw={"width_ratios": [3, 2]})
    plot_roofline(prediction, hardware, ax=left)
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
    return _png(fig)


def memory(*, plan_memory: Any, title: str) -> bytes:
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
    fig, ax = plt.subplots(figsize=(8, 2.8))
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
    ax.axvline(m.hbm_bytes / 1e9, color="tab:red", lw=1.5, label=f"HBM {m.hbm_bytes / 1e9:.0f} GB")
    ax.set_yticks([])
    ax.set_xlabel("GB per GPU")
    ax.set_xlim(0, m.hbm_bytes / 1e9 * 1.02)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.35), ncol=3)
    return _png(fig)


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
    ax.set_xlabel("trial")
    ax.set_ylabel(name)
    ax.set_title("optimization history", fontsize=10)
    ax.grid(alpha=0.25)
    ax.legend(fontsize=8)
    return _png(fig)


def importances(*, study: Any, name: str) -> bytes | None:
    """Parameter importances for the first objective over complete trials (None when Optuna
    cannot compute them, e.g. fewer than two trials with parameters)."""
    import warnings

    import optuna
    from optuna.visualization.matplotlib import plot_param_importances

    plt = _plt()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            ax = plot_param_importances(study, target=lambda t: t.values[0], target_name=name)
        except (ValueError, RuntimeError, ZeroDivisionError, optuna.exceptions.OptunaError):
            plt.close("all")
            return None
    fig: Any = ax.figure
    fig.set_size_inches(8, 3.6)
    return _png(fig)
