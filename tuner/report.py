"""The report of a study: figures, ``report.html`` and ``report.md``.

``build_report(plan=, study=, search=)`` draws the figures (``tuner.plots``) and writes both
documents as text; ``tuner.study_files.write_study_dir`` puts them in the study directory with
everything else. ``report.html`` is self-contained (CSS inline, figures as base64 PNG), so it
can be mailed or attached to a ticket; ``report.md`` links the same PNGs from ``plots/``.

The figures need the chosen configuration's per-request latencies and per-op breakdown; those are
recomputed from the plan (the simulation is deterministic for a seed), so ``tune report
STUDY_DIR`` can regenerate the report from ``plan.json`` and the study alone. Without the study
(``study=None``) the history, importance and Pareto-scatter figures are left out or empty.
"""

from __future__ import annotations

import base64
import html
from typing import Any

from tuner.plan import DeploymentPlan
from tuner.report_tables import (
    CANDIDATE_HEAD,
    SLO_HEAD,
    candidate_rows,
    launch_text,
    memory_rows,
    pareto_rows,
    search_rows,
    slo_rows,
    summary_rows,
)
from tuner.safe_text import markdown_code, markdown_text
from tuner.traffic import TRAFFIC_HEAD, traffic_summary
from tuner.validation import VALIDATION_HEAD, validation_summary

__all__ = ["build_report", "PLOTS"]

PLOTS = ("pareto", "roofline", "memory", "latency_cdfs", "traffic_cdfs", "traffic_steps",
         "history")  # fmt: skip
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code,pre{background:#f6f6f6}
pre{padding:.6em;overflow-x:auto;font-size:12px}.bad{color:#b00}.ok{color:#070}"""


# --- the report ---------------------------------------------------------------------------------


def build_report(
    *, plan: DeploymentPlan, study: Any, search: Any, result: Any = None
) -> tuple[dict[str, bytes], str, str]:
    """(figures, report.html, report.md) for ``plan``; ``study`` may be None (no history);
    ``result`` is the simulation of the plan's deployment (simulated again when None)."""
    from simulator.cost.predict import predict
    from simulator.serving.capacity import at_rate
    from simulator.serving.simulate import simulate
    from tuner import plots

    space = search.space
    hardware = space.hardware_spec(plan.hardware)
    config = plan.config
    if result is None:
        workload = search.workload
        capacity = plan.capacity
        if (
            plan.workload.rate_requests_per_s is None
            and capacity
            and capacity.deployment_rate_per_s
        ):
            workload = at_rate(workload, capacity.deployment_rate_per_s)
        result = simulate(
            space.model, hardware, config, workload, seed=plan.workload.seed, slos=search.slos
        )
    first, arrival = result.first_token_s, result.arrival_s
    out = result.output_tokens
    tpot = (result.finish_s - first)[out > 1] / (out[out > 1] - 1)
    samples = {"ttft": first - arrival, "tpot": tpot, "e2e": result.finish_s - arrival}
    step = predict(
        space.model,
        hardware,
        config,
        batch=max(1, round(result.prediction.mean_batch or 1)),
        prompt=max(1, round(plan.workload.mean_prompt_tokens)),
        context=max(
            1, round(plan.workload.mean_prompt_tokens + plan.workload.mean_output_tokens / 2)
        ),
    )
    tpot_slo = next((s.target_s for s in plan.slos if s.metric == "tpot"), None)
    figures: dict[str, bytes] = {}
    points = _trial_points(study, plan) if study is not None else []
    chosen = next((p for p in points if p["number"] == plan.provenance.trial), None)
    title = (
        f"{plan.model} on up to {plan.gpu_budget} x {plan.hardware}, {plan.workload.name} traffic"
    )
    objective = next(iter(plan.objectives))
    deployments = [p for p in points if p["deployment"]]
    if deployments:
        figures["pareto"] = plots.pareto(
            points=deployments, chosen=chosen, tpot_target_s=tpot_slo, title=title,
            ylabel=_OBJECTIVE_LABELS.get(objective, objective),
        )  # fmt: skip
    figures["roofline"] = plots.roofline(prediction=step, hardware=hardware)
    figures["memory"] = plots.memory(
        plan_memory=plan.memory, title=f"memory per GPU ({plan.hardware})"
    )
    figures["latency_cdfs"] = plots.latency_cdfs(
        samples=samples, targets={s.name: (s.metric, s.percentile, s.target_s) for s in plan.slos}
    )
    traffic = (plan.validation or {}).get("traffic") or {}
    if any(row.get("measured") for row in traffic.get("loads", [])):
        figures["traffic_cdfs"] = plots.traffic_cdfs(loads=traffic["loads"])
    if any(row.get("decode_steps") for row in traffic.get("loads", [])):
        figures["traffic_steps"] = plots.traffic_steps(loads=traffic["loads"])
    if points:
        ordered = sorted(points, key=lambda p: p["number"])
        figures["history"] = plots.history(
            numbers=[p["number"] for p in ordered],
            values=[p["objective"] for p in ordered],
            feasible=[p["feasible"] for p in ordered],
            maximize=plan.objectives[objective] == "maximize",
            name=_OBJECTIVE_LABELS.get(objective, objective),
        )
    return figures, _html(plan, figures), _markdown(plan, figures)


_OBJECTIVE_LABELS = {
    "cost_per_hour": "deployment cost ($/h)",
    "gpus": "GPUs",
    "output_tokens_per_s_per_gpu": "output tokens/s per GPU served",
}


def _trial_points(study: Any, plan: DeploymentPlan) -> list[dict[str, Any]]:
    """Every simulation of the study: its objective, p99 TPOT, and whether it met the SLOs."""
    from optuna.trial import TrialState

    from tuner.search.trials import KIND_ATTR

    front = {c.trial for c in plan.pareto}
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        if KIND_ATTR not in t.user_attrs:
            continue
        tpot = (t.user_attrs.get("metrics") or {}).get("tpot_p99_s")
        points.append(
            {
                "number": t.number,
                "label": t.user_attrs.get("label", ""),
                "tpot_ms": None if tpot is None else tpot * 1e3,
                "objective": t.values[0],
                "feasible": bool(t.user_attrs.get("meets")),
                "front": t.number in front,
                "deployment": t.user_attrs.get(KIND_ATTR) == "deployment",
            }
        )
    return points


_CAPTIONS = {
    "pareto": "Every deployment simulated at the traffic's rate: its cost against p99 TPOT "
    "(a run stopped at a certain SLO miss has no p99 TPOT to draw).",
    "roofline": "The plan's operators on the roofline, and each operator's share of step time.",
    "memory": "Per-GPU memory plan under the engine budget.",
    "latency_cdfs": "Latency distributions of the plan's simulated requests, SLOs in red.",
    "traffic_cdfs": "The plan's traffic served on the GPU at three loads (tune validate "
    "--traffic): measured latency distributions against the predicted ones.",
    "traffic_steps": "The same runs' decode-only iterations (CUDA graph replays; a speculative "
    "plan's rounds), median measured and predicted step by batch: where the GPU departs from "
    "the model as the batch grows.",
    "history": "Every simulation in the order the search ran it: the branch and bound climbs "
    "the cost levels its bounds leave open until a deployment serves the traffic.",
}


def _table(head: list[str], rows: list[list[str]]) -> str:
    cells = "".join(f"<th>{html.escape(h)}</th>" for h in head)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{cells}</tr>{body}</table>"


def _html(plan: DeploymentPlan, figures: dict[str, bytes]) -> str:
    parts = [
        f"<!doctype html><html><head><meta charset='utf-8'><title>rooftune plan: "
        f"{html.escape(plan.model)}</title><style>{_CSS}</style></head><body>",
        f"<h1>{html.escape(plan.model)} on {plan.num_gpus} x {html.escape(plan.hardware)}</h1>",
        _table(["", ""], [list(r) for r in summary_rows(plan)]),
        "<h2>SLOs</h2>",
        _table(SLO_HEAD, slo_rows(plan)),
        "<h2>Search</h2>",
        _table(["", ""], search_rows(plan)),
    ]
    summary, rows, notes = validation_summary(plan.validation)
    parts.append(f"<h2>Validation on a GPU</h2><p>{html.escape(summary)}</p>")
    if rows:
        parts.append(_table(VALIDATION_HEAD, rows))
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    traffic, traffic_rows = traffic_summary(plan.validation)
    if traffic is not None:
        parts += [f"<h3>Under traffic</h3><p>{html.escape(traffic)}</p>",
                  _table(TRAFFIC_HEAD, traffic_rows)]  # fmt: skip
    for name in PLOTS:
        if name in figures:
            data = base64.b64encode(figures[name]).decode("ascii")
            parts.append(
                f"<h2>{name.replace('_', ' ')}</h2><p>{_CAPTIONS[name]}</p>"
                f"<img alt='{name}' src='data:image/png;base64,{data}'>"
            )
        if name == "memory":
            parts.append(_table(["memory per GPU", ""], memory_rows(plan)))
    parts += [
        "<h2>Top candidates and why each lost</h2>",
        _table(CANDIDATE_HEAD, candidate_rows(plan)),
        "<h2>Pareto set (deployments no other beats on both cost and p99 TPOT)</h2>",
        _table(*pareto_rows(plan)),
        "<h2>Launch</h2>",
    ]
    for engine, section in plan.engines.items():
        parts.append(f"<h3>{engine}</h3><pre>{html.escape(launch_text(section))}</pre>")
    prov = plan.provenance
    parts.append(
        f"<h2>Provenance</h2><p>rooftune {prov.rooftune_version}, {prov.created_utc}; "
        f"study <code>{html.escape(prov.study_name)}</code> ({prov.trials} trials, "
        f"{prov.evaluations} simulated here, {prov.sampler}, seed {prov.seed})"
        f"{_resumed_text(prov)}"
        f"; trial {prov.trial}; hardware profile {html.escape(plan.hardware)} "
        f"({html.escape(str(prov.calibration.get('source', '')))}).</p>"
        f"<p><code>{html.escape(prov.command)}</code></p></body></html>"
    )
    return "\n".join(parts)


def _resumed_text(prov: Any) -> str:
    """The sentence a resumed study earns: what was read back and what ran again."""
    if not prov.resumed and not prov.retried:
        return ""
    return (
        f"; resumed: {prov.resumed} simulation(s) read back from an earlier run, "
        f"{prov.retried} unfinished trial(s) of it run again"
    )


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def clean(value: Any) -> str:
        return markdown_text(value)

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(clean(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(plan: DeploymentPlan, figures: dict[str, bytes]) -> str:
    out = [
        f"# {markdown_text(plan.model)} on {plan.num_gpus} x {markdown_text(plan.hardware)}",
        "",
        _md_table(["", ""], [list(r) for r in summary_rows(plan)]),
        "",
        "## SLOs",
        "",
        _md_table(SLO_HEAD, slo_rows(plan)),
        "",
        "## Search",
        "",
        _md_table(["", ""], search_rows(plan)),
        "",
    ]
    summary, rows, notes = validation_summary(plan.validation)
    out += ["## Validation on a GPU", "", summary, ""]
    if rows:
        out += [_md_table(VALIDATION_HEAD, rows), ""]
    out += [f"- {note}" for note in notes] + ([""] if notes else [])
    traffic, traffic_rows = traffic_summary(plan.validation)
    if traffic is not None:
        out += ["### Under traffic", "", traffic, "", _md_table(TRAFFIC_HEAD, traffic_rows), ""]
    for name in PLOTS:
        if name in figures:
            out += [
                f"## {name.replace('_', ' ')}",
                "",
                _CAPTIONS[name],
                "",
                f"![{name}](plots/{name}.png)",
                "",
            ]
        if name == "memory":
            out += [_md_table(["memory per GPU", ""], memory_rows(plan)), ""]
    out += [
        "## Top candidates and why each lost",
        "",
        _md_table(CANDIDATE_HEAD, candidate_rows(plan)),
        "",
        "## Pareto set (deployments no other beats on both cost and p99 TPOT)",
        "",
        _md_table(*pareto_rows(plan)),
        "",
        "## Launch",
        "",
    ]
    for engine, section in plan.engines.items():
        out += [f"### {engine}", "", markdown_code(launch_text(section), "sh"), ""]
    prov = plan.provenance
    out += [
        "## Provenance",
        "",
        f"rooftune {prov.rooftune_version}, {prov.created_utc}; study "
        f"{markdown_text(prov.study_name)} ({prov.trials} trials, {prov.evaluations} simulated "
        f"here{_resumed_text(prov)}); trial {prov.trial}.",
        "",
        markdown_code(prov.command, "sh"),
        "",
    ]
    return "\n".join(out)
