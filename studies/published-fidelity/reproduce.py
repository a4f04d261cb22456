"""The cost model against published serving results (chosen here, cited per row).

Each row names its source, the setup it states and the number it reports; the script builds
the same setup (model, GPU, engine's admission rule and defaults, lengths, load) and predicts
that number with the serving simulation, then prints the table and the summary the fidelity
issue asks for: the median and worst absolute error per GPU and model, per metric, and the
sign bias. Held out on purpose and not used here: NVIDIA's TensorRT-LLM performance-overview
tables, NIM benchmark pages and MLPerf Inference results.

Run from the repository root: ``python studies/published-fidelity/reproduce.py`` (about a
minute on a laptop CPU). Writes ``table.md`` and ``results.json`` beside this file.
"""

from __future__ import annotations

import json
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig
from simulator.data.workload import Arrival, LengthDist, Workload
from simulator.serving.simulate import simulate

HERE = Path(__file__).resolve().parent


@dataclass
class Row:
    """One published setup and the numbers it reports (metric -> value, seconds or per s)."""

    id: str
    source: str
    quote: str
    model: str
    hardware: str
    config: dict
    prompt: int
    output: int
    requests: int
    rate: float | None  # requests/s (Poisson); None: all at once
    published: dict[str, float]
    notes: str = ""
    predicted: dict[str, float] = field(default_factory=dict)


VLLM_CI_H100 = "https://buildkite.com/vllm/performance-benchmark/builds/9555"
VLLM_CI_H200 = "https://buildkite.com/vllm/performance-benchmark/builds/9513"
SIMON_MO = (
    "https://github.com/simon-mo/vLLM-Benchmark/blob/8eaead1d73765d33ca5d87d8316cfc8f074978ee/"
    "README.md (raw: saved-results/v0.8.2/h200-brewster/llama-8b/*-1000-2000.json)"
)
# vLLM's benchmark_latency: one batch of 8 prompts of 32 tokens, 128 output tokens each, the
# time from the batch's start to its last token (CUDA graphs, dummy weights, bf16).
LATENCY = dict(prompt=32, output=128, requests=8, rate=None)

ROWS = [
    Row("vllm-ci-8b-h100", VLLM_CI_H100, "latency_llama8B_tp1 | 8xH100 | 997.542",
        "llama-3.1-8b", "h100-sxm", {}, **LATENCY, published={"batch_latency_s": 0.997542},
        notes="CI node of 8 H100 (SXM assumed); commit not shown"),
    Row("vllm-ci-70b-h100", VLLM_CI_H100, "latency_llama70B_tp4 | 8xH100 | 2444.47",
        "llama-3.1-70b", "h100-sxm", {"tp": 4}, **LATENCY,
        published={"batch_latency_s": 2.44447}, notes="Llama-3-70B-Instruct shapes = 3.1's"),
    Row("vllm-ci-8b-h200", VLLM_CI_H200, "latency_llama8B_tp1 (H200): 834.06 ms",
        "llama-3.1-8b", "h200-sxm", {}, **LATENCY, published={"batch_latency_s": 0.83406}),
    Row("vllm-ci-70b-h200", VLLM_CI_H200, "latency_llama70B_tp4 (H200): 2075.08 ms",
        "llama-3.1-70b", "h200-sxm", {"tp": 4}, **LATENCY,
        published={"batch_latency_s": 2.07508}),
    Row("vllm-pr7117-8b-h100", "https://github.com/vllm-project/vllm/pull/7117",
        "On H100 ... Main branch: Throughput: 24.32 requests/s, 12453.04 tokens/s",
        "llama-3.1-8b", "h100-sxm",
        # vLLM 0.5.x: no chunked prefill below 32k context; a step takes max_model_len tokens.
        {"enable_chunked_prefill": False, "max_num_batched_tokens": 8192, "max_model_len": 8192},
        prompt=256, output=256, requests=1000, rate=None,
        published={"requests_per_s": 24.32}, notes="benchmark_throughput.py, offline"),
    Row("vllm-0.8.2-8b-fp8-h200", SIMON_MO, "vllm-1000-2000.json: 4528.55 output tok/s",
        "llama-3.1-8b", "h200-sxm",
        # vLLM V1 serve defaults: chunked prefill, a 2048-token step budget, 256 sequences.
        {"weight_dtype": "fp8", "activation_dtype": "fp8", "fp8_scaling": "static",
         "max_num_batched_tokens": 2048},
        prompt=1000, output=2000, requests=50, rate=10.0,
        published={"output_tokens_per_s": 4528.55, "ttft_p50_s": 0.0373, "tpot_p50_s": 0.00902},
        notes="neuralmagic FP8 checkpoint (static scales), random 1000/2000, ignore-eos"),
    Row("sglang-0.4.4-8b-fp8-h200", SIMON_MO, "sgl-1000-2000.json: 4031.48 output tok/s",
        "llama-3.1-8b", "h200-sxm",
        {"weight_dtype": "fp8", "activation_dtype": "fp8", "fp8_scaling": "static",
         "admission": "sglang", "max_num_batched_tokens": 8192},
        prompt=1000, output=2000, requests=50, rate=10.0,
        published={"output_tokens_per_s": 4031.48, "ttft_p50_s": 0.0409, "tpot_p50_s": 0.01042},
        notes="SGLang's admission rule; chunked prefill 8192"),
]  # fmt: skip


def predict(row: Row) -> dict[str, float]:
    model, hardware = get_model(row.model), load_hardware(row.hardware)
    config = DeploymentConfig(**{"max_model_len": 8192, **row.config})
    arrival = Arrival(process="poisson", rate_per_s=row.rate) if row.rate else Arrival(
        process="offline"
    )
    workload = Workload(
        name=row.id,
        arrival=arrival,
        prompt=LengthDist(mean=row.prompt),
        output=LengthDist(mean=row.output),
        num_requests=row.requests,
    )
    result = simulate(model, hardware, config, workload)
    p = result.prediction
    if not p.fits:
        raise SystemExit(f"{row.id}: {p.reason}")
    return {
        "batch_latency_s": float(result.finish_s.max()),
        "requests_per_s": p.requests_per_s,
        "output_tokens_per_s": p.output_tokens_per_s,
        "ttft_p50_s": p.ttft_s.p50,
        "tpot_p50_s": p.tpot_s.p50,
    }


def main() -> None:
    lines = ["| row | GPU | model | metric | published | predicted | error |", "|---|---|---|---|---|---|---|"]
    errors: list[dict] = []
    for row in ROWS:
        got = predict(row)
        for metric, value in row.published.items():
            mine = got[metric]
            error = (mine - value) / value
            row.predicted[metric] = mine
            errors.append({"row": row.id, "gpu": row.hardware, "model": row.model,
                           "metric": metric, "published": value, "predicted": mine,
                           "error": error})  # fmt: skip
            seconds = metric.endswith("_s") and not metric.endswith("_per_s")
            unit, suffix = (1e3, " ms") if seconds else (1.0, "/s")
            lines.append(f"| [{row.id}]({row.source.split()[0]}) | {row.hardware} | {row.model} | "
                         f"{metric} | {value * unit:,.2f}{suffix} | {mine * unit:,.2f}{suffix} | "
                         f"{error:+.1%} |")  # fmt: skip
    # The sign bias as a direction: optimistic = predicted faster (a shorter time, a higher rate).
    for e in errors:
        rate = e["metric"].endswith("_per_s")
        e["optimistic"] = e["error"] > 0 if rate else e["error"] < 0
    summary = ["", "| group | points | median abs error | worst abs error | optimistic |",
               "|---|---|---|---|---|"]  # fmt: skip
    groups: dict[str, list[dict]] = {"all": errors}
    for e in errors:
        for key in (f"{e['gpu']} {e['model']}", f"metric {e['metric']}"):
            groups.setdefault(key, []).append(e)
    for key, members in groups.items():
        absolute = [abs(e["error"]) for e in members]
        optimistic = sum(e["optimistic"] for e in members)
        summary.append(f"| {key} | {len(members)} | {statistics.median(absolute):.1%} | "
                       f"{max(absolute):.1%} | {optimistic} of {len(members)} |")  # fmt: skip
    text = "\n".join(lines + summary)
    print(text)
    (HERE / "table.md").write_text(text + "\n")
    sources = [{"id": r.id, "source": r.source, "quote": r.quote, "notes": r.notes,
                "model": r.model, "hardware": r.hardware, "config": r.config,
                "prompt": r.prompt, "output": r.output, "requests": r.requests, "rate": r.rate,
                "published": r.published, "predicted": r.predicted} for r in ROWS]  # fmt: skip
    (HERE / "results.json").write_text(json.dumps({"rows": sources, "errors": errors}, indent=1))


if __name__ == "__main__":
    sys.exit(main())
