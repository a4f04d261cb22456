"""The report of a study: figures, ``report.html`` and ``report.md``.

``build_report(plan=, study=, search=)`` draws the figures (``tuner.plots``) and writes both
documents as text; ``tuner.plan.write_study_dir`` puts them in the study directory with
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
from tuner.validation import VALIDATION_HEAD, validation_summary

__all__ = ["build_report", "PLOTS"]

PLOTS = ("pareto", "roofline", "memory", "latency_cdfs", "history", "importances")
_CSS = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em;font-size:14px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}th{background:#f3f3f3}
img{max-width:100%;border:1px solid #eee;margin:.5em 0}code,pre{background:#f6f6f6}
pre{padding:.6em;overflow-x:auto;font-size:12px}.bad{color:#b00}.ok{color:#070}"""


# --- the report ---------------------------------------------------------------------------------


def build_report(
    *, plan: DeploymentPlan, study: Any, search: Any
) -> tuple[dict[str, bytes], str, str]:
    """(figures, report.html, report.md) for ``plan``; ``study`` may be None (no history)."""
    from simulator.predict import predict
    from simulator.serving import simulate
    from simulator.specs import DeploymentConfig
    from tuner import plots

    space = search.space
    hardware = space.hardware_spec(plan.hardware)
    config = DeploymentConfig(**plan.config)
    result = simulate(
        space.model, hardware, config, search.workload, seed=plan.workload.seed, slos=search.slos
    )
    first, arrival = result.first_token_s, result.arrival_s
    out = result.output_tokens
    tpot = (result.finish_s - first)[out > 1] / (out[out > 1] - 1)
    samples = {"ttft": first - arrival, "tpot": tpot, "e2e": result.finish_s - arrival}
    step = predict(
        space.model,
        hardware,
        config,
        batch=max(1, round(float((result.prediction.model_extra or {}).get("mean_batch") or 1))),
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
    if points:
        figures["pareto"] = plots.pareto(
            points=points, chosen=chosen, tpot_target_s=tpot_slo, title=title
        )
    figures["roofline"] = plots.roofline(prediction=step, hardware=hardware)
    figures["memory"] = plots.memory(
        plan_memory=plan.memory, title=f"memory per GPU ({plan.hardware})"
    )
    figures["latency_cdfs"] = plots.latency_cdfs(
        samples=samples, targets={s.name: (s.metric, s.percentile, s.target_s) for s in plan.slos}
    )
    objective = next(iter(plan.objectives))
    if points:
        ordered = sorted(points, key=lambda p: p["number"])
        figures["history"] = plots.history(
            numbers=[p["number"] for p in ordered],
            values=[p["objective"] for p in ordered],
            feasible=[p["feasible"] for p in ordered],
            maximize=plan.objectives[objective] == "maximize",
            name=objective,
        )
        image = plots.importances(study=study, name=objective)
        if image is not None:
            figures["importances"] = image
    return figures, _html(plan, figures), _markdown(plan, figures)


def _trial_points(study: Any, plan: DeploymentPlan) -> list[dict[str, Any]]:
    from optuna.trial import TrialState

    front = {c.trial for c in plan.pareto}
    points = []
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        metrics = t.user_attrs.get("metrics", {})
        if not t.user_attrs.get("simulated"):
            continue
        feasible = all(v <= 0 for v in t.constraints.values())
        points.append(
            {
                "number": t.number,
                "label": t.user_attrs.get("label", ""),
                "per_user": metrics.get("output_tokens_per_s_per_user") or 0.0,
                "per_gpu": metrics.get("output_tokens_per_s_per_gpu") or 0.0,
                "objective": t.values[0],
                "feasible": feasible,
                "front": t.number in front,
            }
        )
    return points


def _summary_rows(plan: DeploymentPlan) -> list[tuple[str, str]]:
    p, c, q = plan.predicted, plan.config, plan.quantization
    spec = plan.speculative
    cost = p.get("cost_per_million_tokens")
    return [
        (
            "deployment",
            f"{plan.replicas} replica(s) x (tp={c['tp']} pp={c['pp']} ep={c['ep']}) "
            f"= {plan.num_gpus} of {plan.gpu_budget} x {plan.hardware}",
        ),
        ("quantization", f"{q.description} — quality risk: {q.risk}"),
        (
            "batching",
            f"max_num_seqs {c['max_num_seqs']}, max_num_batched_tokens "
            f"{c['max_num_batched_tokens']}, chunked prefill "
            f"{'on' if c['enable_chunked_prefill'] else 'off'}, max_model_len "
            f"{c['max_model_len']}",
        ),
        (
            "speculative decoding",
            "off"
            if spec is None
            else f"{spec.method} ({spec.draft_model or 'no draft model'}), {spec.num_speculative_tokens}"
            f" tokens, acceptance {spec.acceptance_rate:.2f} assumed",
        ),
        (
            "goodput",
            f"{(p.get('goodput_tokens_per_s_per_gpu') or 0):,.0f} output tokens/s per "
            f"GPU meeting every SLO ({100 * (p.get('slo_attainment') or 0):.1f}% of "
            "requests)",
        ),
        (
            "throughput",
            f"{(p.get('output_tokens_per_s') or 0):,.0f} output tokens/s, "
            f"{(p.get('output_tokens_per_s_per_user') or 0):,.1f} tokens/s per user",
        ),
        (
            "cost",
            "no price in the hardware profile"
            if cost is None
            else f"${cost:,.3f} per million output tokens",
        ),
        (
            "engine",
            f"{plan.engine} (memory fraction "
            f"{plan.memory.engine_fractions.get(plan.engine, 0):.3f})",
        ),
    ]


def _slo_rows(plan: DeploymentPlan) -> list[list[str]]:
    return [
        [
            s.name,
            f"{s.target_s * 1e3:,.1f} ms",
            f"{s.predicted_s * 1e3:,.1f} ms",
            "met" if s.met else "MISSED",
            f"{100 * s.margin:+.0f}%",
        ]
        for s in plan.slos
    ]


def _memory_rows(plan: DeploymentPlan) -> list[list[str]]:
    m = plan.memory
    gb = 1e9
    return [
        ["weights", f"{m.weights_bytes / gb:.2f} GB"],
        ["activations", f"{m.activation_bytes / gb:.2f} GB"],
        ["reserved", f"{m.reserved_bytes / gb:.2f} GB"],
        [
            "KV cache",
            f"{m.kv_cache_bytes / gb:.2f} GB = {m.kv_tokens:,.0f} tokens "
            f"({m.kv_tokens_needed:,.0f} needed)",
        ],
        ["budget", f"{m.budget_bytes / gb:.2f} GB of {m.hbm_bytes / gb:.0f} GB HBM"],
        *[[f"{e} memory knob", f"{f:.3f}"] for e, f in m.engine_fractions.items()],
    ]


def _candidate_rows(plan: DeploymentPlan) -> list[list[str]]:
    def ms(value: Any) -> str:
        return "-" if value is None else f"{value * 1e3:,.1f}"

    rows = []
    for c in plan.alternatives:
        m = c.metrics
        rows.append(
            [
                str(c.trial),
                c.label,
                f"{(m.get('goodput_tokens_per_s_per_gpu') or 0):,.0f}",
                ms(m.get("ttft_p99_s")),
                ms(m.get("tpot_p99_s")),
                c.risk,
                c.why_not or "",
            ]
        )
    return rows


def _pareto_rows(plan: DeploymentPlan) -> tuple[list[str], list[list[str]]]:
    names = list(plan.objectives)
    head = ["trial", "configuration", *names, "risk"]
    rows = [[str(c.trial), c.label, *(f"{c.objectives[n]:,.4g}" for n in names), c.risk]
            for c in sorted(plan.pareto, key=lambda c: c.objectives[names[1]])]  # fmt: skip
    return head, rows


_CANDIDATE_HEAD = [
    "trial",
    "configuration",
    "goodput tok/s/GPU",
    "TTFT p99 ms",
    "TPOT p99 ms",
    "risk",
    "why not chosen",
]
_CAPTIONS = {
    "pareto": "Throughput per GPU against tokens/s per user for every simulated trial.",
    "roofline": "The plan's operators on the roofline, and each operator's share of step time.",
    "memory": "Per-GPU memory plan under the engine budget.",
    "latency_cdfs": "Latency distributions of the plan's simulated requests, SLOs in red.",
    "history": "Optimization history of the first objective.",
    "importances": "Which knobs mattered most for the first objective.",
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
        _table(["", ""], [list(r) for r in _summary_rows(plan)]),
        "<h2>SLOs</h2>",
        _table(["SLO", "target", "predicted", "", "margin"], _slo_rows(plan)),
    ]
    summary, rows, notes = validation_summary(plan.validation)
    parts.append(f"<h2>Validation on a GPU</h2><p>{html.escape(summary)}</p>")
    if rows:
        parts.append(_table(VALIDATION_HEAD, rows))
    parts += [f"<p>{html.escape(note)}</p>" for note in notes]
    for name in PLOTS:
        if name in figures:
            data = base64.b64encode(figures[name]).decode("ascii")
            parts.append(
                f"<h2>{name.replace('_', ' ')}</h2><p>{_CAPTIONS[name]}</p>"
                f"<img alt='{name}' src='data:image/png;base64,{data}'>"
            )
        if name == "memory":
            parts.append(_table(["memory per GPU", ""], _memory_rows(plan)))
    parts += [
        "<h2>Top candidates and why each lost</h2>",
        _table(_CANDIDATE_HEAD, _candidate_rows(plan)),
        "<h2>Pareto set (feasible trials no other beats on both objectives)</h2>",
        _table(*_pareto_rows(plan)),
        "<h2>Launch</h2>",
    ]
    for engine, section in plan.engines.items():
        body = section.get("error") or "\n".join(section.get("replicas") or [section["launch"]])
        parts.append(f"<h3>{engine}</h3><pre>{html.escape(body)}</pre>")
    prov = plan.provenance
    parts.append(
        f"<h2>Provenance</h2><p>rooftune {prov.rooftune_version}, {prov.created_utc}; "
        f"study <code>{html.escape(prov.study_name)}</code> ({prov.trials} trials, "
        f"{prov.evaluations} simulated here, sampler {prov.sampler}, seed {prov.seed})"
        f"; trial {prov.trial}; hardware profile {html.escape(plan.hardware)} "
        f"({html.escape(str(prov.calibration.get('source', '')))}).</p>"
        f"<p><code>{html.escape(prov.command)}</code></p></body></html>"
    )
    return "\n".join(parts)


def _md_table(head: list[str], rows: list[list[str]]) -> str:
    def clean(value: Any) -> str:
        return str(value).replace("|", "\\|")

    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(clean(v) for v in row) + " |" for row in rows]
    return "\n".join(lines)


def _markdown(plan: DeploymentPlan, figures: dict[str, bytes]) -> str:
    out = [
        f"# {plan.model} on {plan.num_gpus} x {plan.hardware}",
        "",
        _md_table(["", ""], [list(r) for r in _summary_rows(plan)]),
        "",
        "## SLOs",
        "",
        _md_table(["SLO", "target", "predicted", "", "margin"], _slo_rows(plan)),
        "",
    ]
    summary, rows, notes = validation_summary(plan.validation)
    out += ["## Validation on a GPU", "", summary, ""]
    if rows:
        out += [_md_table(VALIDATION_HEAD, rows), ""]
    out += [f"- {note}" for note in notes] + ([""] if notes else [])
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
            out += [_md_table(["memory per GPU", ""], _memory_rows(plan)), ""]
    out += [
        "## Top candidates and why each lost",
        "",
        _md_table(_CANDIDATE_HEAD, _candidate_rows(plan)),
        "",
        "## Pareto set (feasible trials no other beats on both objectives)",
        "",
        _md_table(*_pareto_rows(plan)),
        "",
        "## Launch",
        "",
    ]
    for engine, section in plan.engines.items():
        body = section.get("error") or "\n".join(section.get("replicas") or [section["launch"]])
        out += [f"### {engine}", "", "```sh", body, "```", ""]
    prov = plan.provenance
    out += [
        "## Provenance",
        "",
        f"rooftune {prov.rooftune_version}, {prov.created_utc}; study "
        f"`{prov.study_name}` ({prov.trials} trials, {prov.evaluations} simulated here); "
        f"trial {prov.trial}.",
        "",
        f"`{prov.command}`",
        "",
    ]
    return "\n".join(out)
