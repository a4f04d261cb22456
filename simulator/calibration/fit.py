"""Fit efficiency from GPU measurements, and measure how well the calibrated model predicts.

``executor.bench`` writes what it measured as plain JSON (``micro.json``: HBM bandwidth, GEMM
time vs tokens, attention, per-kernel costs; ``tp<N>.json``: all-reduce time vs size and model
steps at TP = N). This module turns those numbers into an ``Efficiency`` (numpy only, no torch):

- ``hbm``: streaming read bandwidth / the datasheet HBM bandwidth.
- ``gemm_efficiency`` at each measured M: the median over the model's layer shapes (TP 1) of
  achieved bf16 FLOP/s / datasheet bf16 peak, from the points where the GEMM is compute bound
  only. A small-M GEMM streams its weights; its time says how fast HBM is read, not how busy the
  tensor cores are, so it carries no information about compute efficiency (fitting it anyway
  makes a 4-token step predict faster than a 1-token one). Below the first compute-bound M the
  curve holds its first value, and the memory term sets the time there.
- ``low_precision_gemm_factor``: fp8 efficiency (vs the fp8 peak) over bf16 efficiency (vs the
  bf16 peak), median over M >= 256 where both are compute bound.
- ``attention_efficiency`` at each measured sequence length: causal flash prefill FLOP/s / bf16
  peak. ``decode_attention_hbm``: decode attention bytes/s / (HBM x ``hbm``), median.
- ``kernel_launch_s`` / ``kernel_graph_s``: per-kernel time eager and inside a CUDA graph.
- ``gemm_tail_s``: what a memory-bound library GEMM of more than one row takes beyond reading
  its operands at the ``hbm`` rate and one kernel's graph cost (ramp-up and tail), median over
  every measured layer shape and TP shard. The one-token GEMV is left out: it has none.
- ``link``: the largest all-reduce's bus bandwidth / the scale-up link bandwidth, and the
  collective latency from the TP decode steps: the time a TP step spends beyond 1/TP of the TP=1
  step, per all-reduce (two per layer), as it runs inside the step's CUDA graph.

How well the calibrated model then predicts the measured steps is ``simulator.calibration.fidelity``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from simulator.data.specs import Efficiency, HardwareSpec

__all__ = ["load_bench", "is_default_engine", "fit_efficiency"]

MIN_ATTENTION_SEQ = 512


def load_bench(path: str | Path) -> dict[str, Any]:
    """One JSON document written by ``executor.bench``; anything else is one ProfileError."""
    from ..errors import ProfileError

    path = Path(path)
    try:
        document = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ProfileError(f"{path}: not a bench result ({error})") from None
    if not isinstance(document, dict) or not isinstance(document.get("results"), (dict, list)):
        raise ProfileError(f"{path}: not a bench result (no 'results')")
    return document


def is_default_engine(record: dict[str, Any]) -> bool:
    """Whether a measured step ran the executor as it serves by default. The variants measured
    beside it (graphs off, cuBLAS at batch 1, ...) are comparisons, not what the simulator
    predicts. Records name their ``variant`` (None for the default); older ones are judged by
    their fields (CUDA graphs, the GEMV, PDL, a bf16 KV cache, flash prefill, SDPA decode)."""
    if "variant" in record:
        return record["variant"] is None
    return (
        record.get("kv_dtype", "bf16") == "bf16"
        and record.get("cuda_graphs", True) is not False
        and record.get("gemv", True) is not False
        and record.get("pdl", True) is not False
        and record.get("prefill_backend") in (None, "flash")
        and record.get("decode_attention") in (None, "sdpa")
    )


def _median(values: list[float]) -> float:
    return float(np.median(np.asarray(values, dtype=float)))


def _clamp(value: float) -> float:
    return float(np.clip(value, 1e-4, 1.0))


def _operand_bytes(record: dict) -> float:
    """HBM bytes of a measured GEMM: weights and input in its dtype, a bf16 output."""
    m, k, n = record["m"], record["k"], record["n"]
    element = 1.0 if record["dtype"] in ("fp8", "int8") else 2.0
    return element * (k * n + m * k) + 2.0 * m * n


def _compute_bound(record: dict, peak: float, memory_bytes_per_s: float) -> bool:
    """Whether a measured GEMM is limited by its math rather than by reading its operands: its
    FLOPs at the full tensor peak take at least half as long as its bytes at achieved HBM speed."""
    flops = 2.0 * record["m"] * record["k"] * record["n"]
    return flops / peak >= 0.5 * _operand_bytes(record) / memory_bytes_per_s


def _fit_gemm_tail(
    records: list[dict], hardware: HardwareSpec, hbm: float, kernel_graph_s: float
) -> float | None:
    """``gemm_tail_s``: the median, over the memory-bound library GEMMs of more than one row
    (every layer shape and TP shard measured), of the time beyond streaming their operands at
    the calibrated HBM rate and one kernel's cost inside a graph. None without such records."""
    memory_rate = hardware.hbm_bytes_per_s * hbm
    tails = []
    for r in records:
        if r.get("kernel", "cublas") != "cublas" or r["m"] <= 1 or "k" not in r:
            continue
        if not hardware.has_dtype(r["dtype"]) or r["dtype"] not in hardware.peak_flops_per_s:
            continue
        if _compute_bound(r, hardware.peak(r["dtype"]), memory_rate):
            continue
        tails.append(r["time_s"] - _operand_bytes(r) / memory_rate - kernel_graph_s)
    return max(_median(tails), 0.0) if tails else None


def _gemm_curve(
    records: list[dict], peak: float, dtype: str, memory_bytes_per_s: float
) -> tuple[np.ndarray, np.ndarray]:
    # Per (shape, M) the kernel the executor uses: the faster of cuBLAS and the one-token GEMV.
    best: dict[tuple, dict] = {}
    for r in records:
        if r["dtype"] != dtype or r.get("tp", 1) != 1:
            continue
        if "k" in r and not _compute_bound(r, peak, memory_bytes_per_s):
            continue
        key = (r["name"], r["m"])
        if key not in best or r["time_s"] < best[key]["time_s"]:
            best[key] = r
    rows = list(best.values())
    tokens = np.array(sorted({r["m"] for r in rows}), dtype=float)
    efficiency = np.array(
        [_median([r["flops_per_s"] / peak for r in rows if r["m"] == m]) for m in tokens]
    )
    return tokens, efficiency


def _no_speedup_with_more_work(
    xs: np.ndarray, efficiency: np.ndarray, *, work_exponent: float
) -> np.ndarray:
    """Cap each knot so that time never falls as the work grows (see ``Efficiency``)."""
    capped = np.array(efficiency, dtype=float)
    for i in range(1, len(capped)):
        limit = capped[i - 1] * (xs[i] / xs[i - 1]) ** work_exponent
        capped[i] = min(capped[i], limit)
    return capped


def fit_efficiency(
    micro: dict[str, Any],
    hardware: HardwareSpec,
    *,
    base: Efficiency | None = None,
    tp_runs: list[dict[str, Any]] | None = None,
    single_gpu_points: list[dict[str, Any]] | None = None,
    num_layers: int | None = None,
    tp_floor: Any = None,
    source: str = "measured by tune calibrate",
) -> Efficiency:
    """Efficiency fitted from ``micro`` (``micro.json['results']``) on ``hardware``.

    ``tp_floor(record) -> seconds | None`` is what a TP decode step would take with free
    collectives; the time beyond it, per all-reduce, is the collective latency. Default: the TP=1
    step divided by TP, which also charges the collectives with every cost that does not shrink
    with TP (kernel launches, attention over fewer heads); a second pass with the calibrated
    model's own prediction at zero latency (``tune calibrate --from``) removes those.

    ``tp_runs`` (``tp<N>.json['results']`` documents) add the collective fields; their latency
    needs the TP=1 decode steps (``single_gpu_points``) of the same GPU and ``num_layers``.
    Fields with no measurement keep ``base`` (the profile's current efficiency).
    """
    base = base or hardware.efficiency
    fields: dict[str, Any] = {}
    sources: dict[str, str] = dict(base.sources)

    hbm = micro.get("hbm")
    if hbm:
        fields["hbm"] = _clamp(hbm["read_bytes_per_s"] / hardware.hbm_bytes_per_s)
        sources["hbm"] = "measured: torch.sum over a 4 GB bf16 tensor"

    gemm = micro.get("gemm") or []
    if gemm:
        peak_bf16 = hardware.peak("bf16")
        memory_rate = hardware.hbm_bytes_per_s * fields.get("hbm", base.hbm)
        tokens, bf16 = _gemm_curve(gemm, peak_bf16, "bf16", memory_rate)
        curve = _no_speedup_with_more_work(tokens, bf16, work_exponent=1.0)
        fields["gemm_tokens"] = tuple(float(t) for t in tokens)
        fields["gemm_efficiency"] = tuple(_clamp(e) for e in curve)
        sources["gemm"] = "measured: cuBLAS bf16 GEMMs of the model's layer shapes, graph-timed"
        if hardware.has_dtype("fp8") and "fp8" in hardware.peak_flops_per_s:
            fp8_tokens, fp8 = _gemm_curve(gemm, hardware.peak("fp8"), "fp8", memory_rate)
            if fp8_tokens.size:
                common = [i for i, t in enumerate(tokens) if t >= 256 and t in fp8_tokens]
                ratios = [
                    fp8[list(fp8_tokens).index(tokens[i])] / bf16[i] for i in common if bf16[i]
                ]
                if ratios:
                    fields["low_precision_gemm_factor"] = _clamp(_median(ratios))
                    sources["low_precision_gemm"] = "measured: torch._scaled_mm fp8 vs bf16"

    # Batch-1 flash attention below ~512 tokens runs one block per head (32 blocks on 132 SMs)
    # and measures occupancy, not efficiency; the cost model also reuses the first knot for the
    # compute side of decode attention, so the curve starts where the GPU is full.
    prefill = [r for r in micro.get("attention_prefill") or [] if r["seq"] >= MIN_ATTENTION_SEQ]
    # "flash" is the executor's default prefill (PyTorch's own backend choice); other
    # backends measured beside it are for comparison only.
    prefill = [r for r in prefill if r.get("backend", "flash") == "flash"]
    if prefill:
        seqs = sorted({r["seq"] for r in prefill})
        values = [
            _median([r["flops_per_s"] / hardware.peak("bf16") for r in prefill if r["seq"] == s])
            for s in seqs
        ]
        fields["attention_seq"] = tuple(float(s) for s in seqs)
        curve = _no_speedup_with_more_work(
            np.array(seqs, dtype=float), np.array(values), work_exponent=2.0
        )
        fields["attention_efficiency"] = tuple(_clamp(v) for v in curve)
        sources["attention"] = "measured: SDPA flash, causal, GQA, batch 1"

    decode = micro.get("attention_decode") or []
    if decode:
        hbm_eff = fields.get("hbm", base.hbm)
        fields["decode_attention_hbm"] = _clamp(
            _median([r["bytes_per_s"] for r in decode]) / (hardware.hbm_bytes_per_s * hbm_eff)
        )
        sources["decode_attention"] = "measured: SDPA flash over the valid KV, median of B x C"
        # Memory-bound, decode attention shows only a floor of its math rate: the fastest it
        # was seen doing math. Never below the default, which is a compute-bound kernel's rate.
        rates = [r["flops_per_s"] for r in decode if "flops_per_s" in r]
        if rates:
            fields["decode_attention_compute"] = _clamp(
                max(max(rates) / hardware.peak("bf16"), base.decode_attention_compute)
            )

    overhead = micro.get("kernel_overhead")
    if overhead:
        fields["kernel_launch_s"] = float(overhead["eager_per_kernel_s"])
        fields["kernel_graph_s"] = float(overhead["graph_per_kernel_s"])
        sources["kernels"] = "measured: 200 tiny kernels, eager vs one CUDA graph"

    tail = _fit_gemm_tail(
        gemm,
        hardware,
        fields.get("hbm", base.hbm),
        fields.get("kernel_graph_s", base.kernel_graph_s),
    )
    if tail is not None:
        fields["gemm_tail_s"] = tail
        sources["gemm_tail"] = (
            "measured: memory-bound cuBLAS GEMMs of more than one row, time beyond their bytes "
            "at the HBM rate, median over the layer shapes and TP shards"
        )

    if tp_runs:
        fields.update(
            _fit_collectives(
                tp_runs, hardware, single_gpu_points, num_layers, sources, tp_floor=tp_floor
            )
        )

    fields["sources"] = sources
    fields["source"] = source
    return base.model_copy(update=fields)


def _fit_collectives(
    tp_runs: list[dict[str, Any]],
    hardware: HardwareSpec,
    single_gpu_points: list[dict[str, Any]] | None,
    num_layers: int | None,
    sources: dict[str, str],
    tp_floor: Any = None,
) -> dict[str, float]:
    fields: dict[str, float] = {}
    allreduce = [r for run in tp_runs for r in run.get("allreduce", [])]
    if allreduce:
        largest = max(r["bytes"] for r in allreduce)
        bus = max(r["bus_bytes_per_s"] for r in allreduce if r["bytes"] == largest)
        fields["link"] = _clamp(bus / hardware.scale_up_bytes_per_s)
        sources["link"] = "measured: NCCL all-reduce bus bandwidth at the largest message"
    if not (single_gpu_points and num_layers):
        return fields
    base = {
        (r["weights"], r["batch"], r["context"]): r["time_s"]
        for r in single_gpu_points
        if r.get("fits") and r["phase"] == "decode" and r["tp"] == 1 and is_default_engine(r)
    }
    per_world: dict[int, list[float]] = {}
    for run in tp_runs:
        for r in run.get("model", []):
            key = (r["weights"], r["batch"], r["context"])
            if (
                not r.get("fits")
                or r["phase"] != "decode"
                or r["batch"] != 1
                or key not in base
                or not is_default_engine(r)
            ):
                continue
            floor = tp_floor(r) if tp_floor is not None else base[key] / r["tp"]
            if floor is None:
                continue
            extra = r["time_s"] - floor
            per_world.setdefault(r["tp"], []).append(extra / (2 * num_layers))
    if per_world:
        worlds = sorted(per_world)
        latency = np.array([max(_median(per_world[w]), 0.0) for w in worlds])
        if len(worlds) >= 2:
            slope, intercept = np.polyfit(np.array(worlds, dtype=float) - 1, latency, 1)
            fields["collective_latency_per_rank_s"] = float(max(slope, 0.0))
            fields["collective_latency_s"] = float(max(intercept, 0.0))
        else:
            fields["collective_latency_s"] = float(latency[0])
        sources["collective_latency"] = (
            "measured: TP decode step time beyond "
            + ("the model's prediction with free collectives" if tp_floor else "1/TP of TP=1")
            + ", per all-reduce (in a CUDA graph, batch 1)"
        )
    return fields
