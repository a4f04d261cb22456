"""The report's plots, measured on the text boxes matplotlib lays out: no label leaves the
figure, the legend never covers an axis label, and no two operator labels on the roofline
overlap (a long plan label once ran past the Pareto plot's edge, the memory chart's legend sat
on its axis label, and the roofline's operator names piled on each other)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")

from matplotlib.text import Text  # noqa: E402

from simulator.cost.predict import predict  # noqa: E402
from simulator.data.hardware import load_hardware  # noqa: E402
from simulator.data.models import get_model  # noqa: E402
from simulator.data.specs import DeploymentConfig  # noqa: E402
from tuner import plots  # noqa: E402
from tuner.plan import load_plan  # noqa: E402

EXAMPLE = Path(__file__).resolve().parents[2] / "studies" / "llama-3.1-70b-8xh100-chat"


def _texts(fig) -> list[Text]:
    """Every label the figure shows: titles, axis labels, annotations and legend entries (tick
    labels are matplotlib's own, and it keeps undrawn ones past the limits)."""
    fig.canvas.draw()
    texts: list[Text] = [*fig.texts]
    for ax in fig.axes:
        texts += [ax.title, ax.xaxis.label, ax.yaxis.label, *ax.texts]
        if ax.get_legend():
            texts += ax.get_legend().get_texts()
    for legend in fig.legends:
        texts += legend.get_texts()
    return [t for t in texts if t.get_visible() and t.get_text().strip()]


def _inside(box, frame) -> bool:
    return (
        box.x0 >= frame.x0 - 1
        and box.x1 <= frame.x1 + 1
        and box.y0 >= frame.y0 - 1
        and box.y1 <= frame.y1 + 1
    )


def _legend_boxes(fig) -> list:
    return [legend.get_window_extent() for legend in fig.legends] + [
        ax.get_legend().get_window_extent() for ax in fig.axes if ax.get_legend()
    ]


def test_pareto_plot_keeps_a_long_plan_label_inside():
    label = "2x(tp4 pp2) h100-sxm,h200-sxm w=fp8 kv=fp8 seqs=512 chunk=16384 spec=eaglex5"
    points = [
        {"tpot_ms": 10 + i, "objective": 40 - i, "feasible": i % 3 > 0, "front": i % 2 == 0,
         "label": label, "number": i}
        for i in range(12)
    ]  # fmt: skip
    fig = plots.pareto_figure(points=points, chosen=points[4], tpot_target_s=0.03,
                              title="a title", ylabel="deployment cost ($/h)")  # fmt: skip
    texts = _texts(fig)
    assert any(t.get_text().startswith("plan: ") for t in texts)
    for t in texts:
        assert _inside(t.get_window_extent(), fig.bbox), t.get_text()
    xlabel = fig.axes[0].xaxis.label.get_window_extent()
    assert not any(xlabel.overlaps(box) for box in _legend_boxes(fig))


def test_memory_chart_legend_is_clear_of_its_axis_label():
    plan = load_plan(EXAMPLE / "plan.json")
    fig = plots.memory_figure(plan_memory=plan.memory, title="memory per GPU")
    for t in _texts(fig):
        assert _inside(t.get_window_extent(), fig.bbox), t.get_text()
    xlabel = fig.axes[0].xaxis.label.get_window_extent()
    assert not any(xlabel.overlaps(box) for box in _legend_boxes(fig))


def test_roofline_operator_labels_never_overlap():
    hardware = load_hardware("h100-sxm")
    config = DeploymentConfig(tp=2, weight_dtype="fp8", activation_dtype="fp8", kv_dtype="fp8")
    step = predict(get_model("llama-3.1-70b"), hardware, config, batch=64, prompt=2048,
                   context=4096)  # fmt: skip
    fig = plots.roofline_figure(prediction=step, hardware=hardware)
    texts = _texts(fig)
    roofline_axes = fig.axes[0]
    frame = roofline_axes.get_window_extent()
    names = {op.name for op in step.ops}
    labels = [t for t in roofline_axes.texts if t.get_text() in names]
    assert len(labels) >= 3  # the large operators are named
    boxes = [t.get_window_extent() for t in labels]
    for i, box in enumerate(boxes):
        assert _inside(box, frame), labels[i].get_text()
        for other in boxes[i + 1 :]:
            assert not box.overlaps(other), labels[i].get_text()
    for t in texts:
        assert _inside(t.get_window_extent(), fig.bbox), t.get_text()


def test_traffic_cdfs_keep_their_labels_inside_and_clear_of_the_legend():
    quantiles = [0.01 * 1.2**i for i in range(41)]
    loads = [{"load": name, "cdf": {side: {"ttft": quantiles, "tpot": [q / 50 for q in quantiles]}
                                    for side in ("predicted", "measured")}}
             for name in ("light", "plan", "overload")]  # fmt: skip
    fig = plots.traffic_cdfs_figure(loads=loads)
    texts = _texts(fig)
    assert sum(t.get_text().endswith("measured") for t in texts) == 3
    for t in texts:
        assert _inside(t.get_window_extent(), fig.bbox), t.get_text()
    for ax in fig.axes:
        xlabel = ax.xaxis.label.get_window_extent()
        assert not any(xlabel.overlaps(box) for box in _legend_boxes(fig))
