"""Draw a GPU's roofline with a configuration's operators placed on it.

x: arithmetic intensity (FLOP per HBM byte); y: achieved FLOP/s (FLOPs / predicted time).
The ceilings are the dense tensor peaks per dtype and the HBM slope ``bandwidth x intensity``;
the ridge point where they meet is where an op turns compute-bound. Prefill ops (many tokens)
sit right of the ridge, decode ops (few tokens, all weights read) far left of it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np


def plot_roofline(prediction, hardware, path: str | Path | None = None, *, ax=None):
    """Plot onto ``ax`` (or a new figure saved to ``path``). Returns the figure."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = None
    if ax is None:
        fig, ax = plt.subplots(figsize=(8, 5.5), dpi=110)
    intensity = np.logspace(-1, 4.5, 200)
    bandwidth = hardware.hbm_bytes_per_s
    for dtype, style in (("bf16", "-"), ("fp8", "--"), ("int8", ":")):
        if dtype not in hardware.peak_flops_per_s and dtype != "bf16":
            continue
        peak = hardware.peak(dtype)
        ax.plot(
            intensity,
            np.minimum(peak, bandwidth * intensity),
            style,
            color="0.3",
            lw=1.2,
            label=f"{dtype} peak {peak / 1e12:,.0f} TFLOP/s",
        )
        if dtype == "bf16":
            ridge = peak / bandwidth
            ax.axvline(ridge, color="0.7", lw=0.8)
            ax.annotate(
                f"ridge {ridge:,.0f} FLOP/B",
                (ridge, peak * 0.02),
                rotation=90,
                fontsize=8,
                color="0.4",
                ha="right",
            )
    colors = {"prefill": "tab:blue", "decode": "tab:orange"}
    markers = {"compute": "o", "memory": "s", "overhead": "D"}
    labels: list[tuple[float, str, float, float]] = []
    for op in prediction.ops:
        if op.kind == "communication" or op.bytes <= 0 or op.flops <= 0 or op.time_s <= 0:
            continue
        x, y = op.flops / op.bytes, op.flops / op.time_s
        ax.scatter(
            [x],
            [y],
            color=colors.get(op.phase, "k"),
            marker=markers.get(op.bound, "o"),
            s=18 + 300 * op.share,
            alpha=0.8,
            edgecolor="k",
            lw=0.4,
        )
        if op.share > 0.04:
            labels.append((op.share, op.name, x, y))
    for phase, color in colors.items():
        ax.scatter([], [], color=color, label=f"{phase} ops (size = share of time)")
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("arithmetic intensity (FLOP / HBM byte)")
    ax.set_ylabel("achieved FLOP/s")
    ax.set_ylim(1e10, hardware.peak("bf16") * 3)
    ax.set_title(f"{prediction.model} on {hardware.display_name}: roofline")
    ax.grid(True, which="both", alpha=0.2)
    ax.legend(fontsize=7, loc="lower right")
    place_labels(ax, [(name, x, y) for _, name, x, y in sorted(labels, reverse=True)])
    if fig is not None and path is not None:
        import io

        from simulator.files import write_atomic

        fig.tight_layout()
        buffer = io.BytesIO()
        fig.savefig(buffer, format=Path(path).suffix.lstrip(".") or "png")
        plt.close(fig)
        write_atomic(path, buffer.getvalue())
    return fig if fig is not None else ax.figure


# Where a label may sit around its point (offset in points, horizontal alignment): right and
# above first, then below, then to the left.
_OFFSETS = ((3, 3, "left"), (3, -10, "left"), (-3, 3, "right"), (-3, -10, "right"),
            (3, 12, "left"), (-3, 12, "right"))  # fmt: skip


def place_labels(ax, labels: list[tuple[str, float, float]]) -> list:
    """Annotate each (text, x, y), most important first, at the first offset where it overlaps
    no label already placed and stays inside the axes; a label with no such place is left out
    (its operator is still in the share-of-time chart). Returns the annotations kept."""
    ax.figure.tight_layout()  # the final layout first: label boxes are measured in it
    renderer = ax.figure.canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    placed: list = []
    for text, x, y in labels:
        for dx, dy, align in _OFFSETS:
            note = ax.annotate(text, (x, y), fontsize=7, xytext=(dx, dy), ha=align,
                               textcoords="offset points")  # fmt: skip
            box = note.get_window_extent(renderer)
            fits = (box.x0 >= inside.x0 and box.x1 <= inside.x1 and box.y0 >= inside.y0
                    and box.y1 <= inside.y1)  # fmt: skip
            if fits and not any(box.overlaps(other.get_window_extent(renderer))
                                for other in placed):  # fmt: skip
                placed.append(note)
                break
            note.remove()
    return placed
