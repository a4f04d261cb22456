"""The report's tables, as rows of text: what the plan says, one table each (the summary, the
SLOs with their bands, the search, memory, the runners-up, the Pareto set, each engine's
launch). ``report.py`` lays them out as HTML and Markdown; ``tune plan`` prints the summary.
"""

from __future__ import annotations

from typing import Any

from simulator.units import MiB
from tuner.engines.inputs import EngineRefusal
from tuner.plan import DeploymentPlan

__all__ = [
    "CANDIDATE_HEAD",
    "SLO_HEAD",
    "candidate_rows",
    "capacity_text",
    "launch_text",
    "memory_rows",
    "pareto_rows",
    "search_rows",
    "slo_rows",
    "summary_rows",
]


def summary_rows(plan: DeploymentPlan) -> list[tuple[str, str]]:
    p, c, q = plan.predicted, plan.config, plan.quantization
    spec = plan.speculative
    cost = p.cost_per_million_tokens
    w = plan.workload
    rate = f"{w.rate_requests_per_s:g} req/s" if w.rate_requests_per_s else "offline (all at once)"
    return [
        (
            "traffic",
            f"{w.name}: {rate}, prompts of {w.mean_prompt_tokens:,.0f} and outputs of "
            f"{w.mean_output_tokens:,.0f} tokens on average, {w.num_requests:,} requests "
            f"simulated (seed {w.seed})",
        ),
        (
            "deployment",
            f"{plan.replicas} replica(s) x (tp={c.tp} pp={c.pp} ep={c.ep}) "
            f"= {plan.num_gpus} of {plan.gpu_budget} x {plan.hardware} on "
            f"{plan.topology.nodes} node(s)",
        ),
        ("quantization", f"{q.description} — quality risk: {q.risk}"),
        (
            "batching",
            f"max_num_seqs {c.max_num_seqs}, max_num_batched_tokens "
            f"{c.max_num_batched_tokens}, chunked prefill "
            f"{'on' if c.enable_chunked_prefill else 'off'}, max_model_len "
            f"{c.max_model_len}",
        ),
        (
            "speculative decoding",
            "off"
            if spec is None
            else f"{spec.method} ({spec.draft_model or 'no draft model'}), {spec.num_speculative_tokens}"
            f" tokens, acceptance {spec.acceptance_rate:.2f} assumed",
        ),
        ("capacity", capacity_text(plan)),
        (
            "throughput",
            f"{(p.output_tokens_per_s or 0):,.0f} output tokens/s, "
            f"{(p.output_tokens_per_s_per_user or 0):,.1f} tokens/s per user",
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


def capacity_text(plan: DeploymentPlan) -> str:
    c = plan.capacity
    if c is None or c.replica_rate_per_s is None:
        return "not measured"
    text = (
        f"{c.replica_rate_per_s:,.2f} req/s per replica within every SLO, "
        f"{c.deployment_rate_per_s:,.2f} req/s in all"
    )
    if c.offered_rate_per_s and c.headroom is not None:
        text += (
            f"; {100 * c.headroom:+.0f}% headroom over the {c.offered_rate_per_s:g} req/s "
            f"offered, one more replica needed past {c.next_replica_at_rate_per_s:,.2f} req/s"
        )
    return text


def search_rows(plan: DeploymentPlan) -> list[list[str]]:
    b = plan.search.get("bound") or {}
    if not b:
        return []
    ruled = ", ".join(f"{n} {k}" for k, n in (b.get("ruled_out_before_search") or {}).items())
    return [
        ["question", str(b.get("question"))],
        ["candidates (replica configurations)", f"{b.get('candidates', 0):,}"],
        ["ruled out before any simulation", ruled or "none"],
        ["simulated candidates", f"{b.get('simulated_candidates', 0):,}"],
        ["ruled out by bound", f"{b.get('ruled_out_by_bound', 0):,}"],
        [
            "simulations",
            f"{b.get('simulations', 0):,} run ({b.get('stopped_early', 0):,} stopped at a "
            f"certain SLO miss), {b.get('shared_simulations', 0):,} answered by an equivalent "
            "candidate's run",
        ],
        ["proven cheapest", "yes" if b.get("proven") else f"no ({b.get('stopped')})"],
    ]


def slo_rows(plan: DeploymentPlan) -> list[list[str]]:
    def band(s: Any) -> str:
        if s.band_s is None:
            return "-"
        return f"{s.band_s[0] * 1e3:,.1f} to {s.band_s[1] * 1e3:,.1f} ms"

    return [
        [
            s.name,
            f"{s.target_s * 1e3:,.1f} ms",
            f"{s.predicted_s * 1e3:,.1f} ms",
            band(s),
            "met" if s.met else "MISSED",
            f"{100 * s.margin:+.0f}%",
        ]
        for s in plan.slos
    ]


SLO_HEAD = ["SLO", "target", "predicted", "band (calibration residuals)", "", "margin"]


def launch_text(section: Any) -> str:
    """One engine's launch, as a reader runs it: the weights, then each node's commands."""
    if isinstance(section, EngineRefusal):
        return f"cannot serve this plan: {section.error}"
    lines = [f"# weights: {section.checkpoint.model_id} ({section.checkpoint.detail})"]
    if section.checkpoint.make:
        lines.append(f"# make them first: {section.checkpoint.make}")
    for node in section.nodes:
        lines.append(f"# {node.script} (node {node.node})")
        lines += node.commands or ["# started from the replica's first node"]
    return "\n".join(lines)


def memory_rows(plan: DeploymentPlan) -> list[list[str]]:
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
        ["drafter weights", f"{m.drafter_weights_bytes / gb:.2f} GB"],
        [
            "budget",
            f"{m.budget_bytes / gb:.2f} GB of the {m.device_memory_bytes / MiB:,.0f} MiB "
            f"({m.device_memory_bytes / gb:.1f} GB) the driver reports "
            f"(datasheet: {m.hbm_bytes / gb:.0f} GB)",
        ],
        *[[f"{e} memory knob", f"{f:.3f}"] for e, f in m.engine_fractions.items()],
    ]


def candidate_rows(plan: DeploymentPlan) -> list[list[str]]:
    def ms(value: Any) -> str:
        return "-" if value is None else f"{value * 1e3:,.1f}"

    rows = []
    for c in plan.alternatives:
        m = c.metrics
        rows.append(
            [c.label, ms(m.get("ttft_p99_s")), ms(m.get("tpot_p99_s")), c.risk, c.why_not or ""]
        )
    return rows


# Each search objective as a reader wants it: a header with its unit, and the value in it.
_OBJECTIVE_COLUMNS = {
    "cost_per_hour": ("cost ($/h)", lambda v: f"{v:,.2f}"),
    "gpus": ("GPUs", lambda v: f"{v:,.0f}"),
    "output_tokens_per_s_per_gpu": ("output tokens/s per GPU", lambda v: f"{v:,.0f}"),
    "tpot_p99_s": ("TPOT p99 (ms)", lambda v: f"{v * 1e3:,.1f}"),
}


def pareto_rows(plan: DeploymentPlan) -> tuple[list[str], list[list[str]]]:
    """The Pareto set, one row per distinct deployment (the same one reached by several trials
    is listed once), with readable headers and units."""
    names = list(plan.objectives)
    columns = [_OBJECTIVE_COLUMNS.get(n, (n, lambda v: f"{v:,.4g}")) for n in names]
    head = ["trial", "configuration", *(header for header, _ in columns), "risk"]
    rows, seen = [], set()
    for c in sorted(plan.pareto, key=lambda c: c.objectives[names[1]]):
        if c.label in seen:
            continue
        seen.add(c.label)
        values = [fmt(c.objectives[n]) for n, (_, fmt) in zip(names, columns, strict=True)]
        rows.append([str(c.trial), c.label, *values, c.risk])
    return head, rows


CANDIDATE_HEAD = ["configuration", "TTFT p99 ms", "TPOT p99 ms", "risk", "why not chosen"]
