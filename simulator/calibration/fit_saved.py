"""Fitting saved bench JSON and scoring the calibrated simulator against it (no GPU, no torch).

Shared by ``tune calibrate --from`` and the executor's ``calibrate_here`` (which fits what it
just measured), so it lives beside the fit itself.

``fit_saved(dir)`` reads what ``executor.bench`` wrote for one GPU (micro.json; model*.json and
tp*.json when present), refuses files measured on a different GPU than the profile, fits the
efficiency (``simulator.calibration.fit.fit_efficiency``), writes the calibration file, then predicts
every measured step with it and returns the fidelity table.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["fit_saved"]


def _gpu_profile(document: dict[str, Any]) -> str | None:
    """The profile of the GPU a bench file was measured on (the one name map)."""
    from ..data.hardware import profile_for_device

    return profile_for_device(str(document.get("machine", {}).get("device_name", "")))


def fit_saved(
    directory: str | Path,
    *,
    hardware: str,
    model: str,
    out: str | None = None,
    fidelity_path: str | None = None,
    accept_difference: str | None = None,
) -> dict[str, Any]:
    from ..data.hardware import load_hardware, write_calibration
    from ..data.models import get_model
    from ..errors import GpuError, ProfileError
    from ..files import write_atomic
    from .crosscheck import require_agreement
    from .fidelity import fidelity_table, format_fidelity
    from .fit import fit_efficiency, load_bench

    directory = Path(directory)
    spec = get_model(model)
    profile = load_hardware(hardware, calibration=False)
    micro_file = directory / "micro.json"
    if not micro_file.is_file():
        raise ProfileError(f"{micro_file}: missing (run executor.bench --suite micro)")
    documents = {
        path.name: load_bench(path)
        for path in sorted(directory.glob("*.json"))
        if path.name not in ("fidelity.json",)
    }
    for name, document in documents.items():
        measured_on = _gpu_profile(document)
        if measured_on is not None and measured_on != profile.name:
            raise GpuError(
                f"{name} was measured on {document['machine'].get('device_name')} "
                f"({measured_on}), not {profile.name}; refusing to mix GPUs"
            )
    micro = documents["micro.json"]
    if not isinstance(micro["results"], dict) or not any(micro["results"].values()):
        raise ProfileError(f"{micro_file}: holds no measurements to fit")
    single = [r for name, d in documents.items() if name.startswith("model") for r in d["results"]]
    tp_runs = [d["results"] for name, d in documents.items() if name.startswith("tp")]

    def fit(tp_floor=None):
        return fit_efficiency(
            micro["results"],
            profile,
            tp_runs=tp_runs,
            single_gpu_points=single,
            num_layers=spec.num_hidden_layers,
            tp_floor=tp_floor,
        )

    try:
        efficiency = fit()
        if tp_runs:
            # Second pass: the collective latency is what the TP steps take beyond this model's
            # own prediction with free collectives (kernel launches and attention that do not
            # shrink with TP are already in that prediction).
            free = efficiency.model_copy(
                update={"collective_latency_s": 0.0, "collective_latency_per_rank_s": 0.0}
            )
            efficiency = fit(_predictor(spec, profile.model_copy(update={"efficiency": free})))
        efficiency = _fit_eager(single, spec, profile, efficiency)
    except (KeyError, TypeError, ValueError, IndexError, AttributeError) as error:
        # A field missing or of the wrong kind in a bench file: name it, in one line.
        raise ProfileError(
            f"{directory}: a measurement in the bench files is malformed "
            f"({type(error).__name__}: {error})"
        ) from None
    fitted_kernels = {
        kernel
        for kernel, section in (("prefill attention", "attention_prefill"), ("bf16 GEMM", "gemm"))
        if micro["results"].get(section)
    }
    efficiency = require_agreement(efficiency, profile, accept_difference, kernels=fitted_kernels)
    provenance = {k: str(v) for k, v in micro.get("machine", {}).items()}
    provenance["bench_files"] = ", ".join(sorted(documents))

    def save(efficiency: Any) -> Path:
        return write_calibration(profile.name, efficiency=efficiency, provenance=provenance,
                                 path=Path(out) if out else None)  # fmt: skip

    path = save(efficiency)
    result: dict[str, Any] = {"calibration": str(path), "hardware": profile.name}
    measured = single + [r for run in tp_runs for r in run.get("model", [])]
    if measured:
        calibrated = load_hardware(hardware, calibration=Path(path))
        table = fidelity_table(measured, _predictor(spec, calibrated), hardware=profile.name)
        result["fidelity"] = table.as_dict()
        result["fidelity_markdown"] = format_fidelity(table)
        if fidelity_path:
            write_atomic(fidelity_path, result["fidelity_markdown"] + "\n")
        # The residuals travel with the calibration: plans put their SLO bands on them.
        sources = {**efficiency.sources, "step_error": f"fidelity of {len(table.rows)} "
                   "measured steps against this calibration (p10, p90 per phase)"}  # fmt: skip
        save(efficiency.model_copy(update={"step_error": table.step_error(), "sources": sources}))
    return result


def _fit_eager(points: list[dict], spec, profile, efficiency):
    """``eager_kernel_s`` from decode steps measured with no CUDA graph: out of a graph a small
    decode step is all host time, so each kernel's share of it (less the step's fixed host
    time) is what eager PyTorch spends per kernel. Unchanged when no such step was measured."""
    from ..cost.step import StepModel
    from ..data.specs import DeploymentConfig

    eager = [
        r for r in points
        if r.get("cuda_graphs") is False and r.get("phase") == "decode" and r.get("time_s")
    ]  # fmt: skip
    if not eager:
        return efficiency
    hardware = profile.model_copy(update={"efficiency": efficiency})
    shares = []
    for r in eager:
        config = DeploymentConfig(
            tp=r["tp"],
            weight_dtype=r["weights"],
            activation_dtype="fp8" if r["weights"] == "fp8" else "bf16",
            cuda_graphs=False,
            max_model_len=r["context"] + 16,
        )
        kernels = float(StepModel.build(spec, hardware, config).decode(r["batch"], r["context"])
                        .ops.kernels[0].sum())  # fmt: skip
        shares.append((r["time_s"] - efficiency.step_overhead_s) / kernels)
    sources = {**efficiency.sources, "eager_kernel": (
        f"measured: {len(shares)} decode step(s) run eagerly (no CUDA graph), time over the "
        "step's kernels")}  # fmt: skip
    return efficiency.model_copy(
        update={"eager_kernel_s": float(np.median(shares)), "sources": sources}
    )


def _predictor(spec, hardware):
    from ..cost.predict import predict
    from ..data.specs import DeploymentConfig
    from .fit import is_default_engine

    def predict_step(record: dict[str, Any]) -> float | None:
        if not is_default_engine(record):
            return None  # the grid scores the default engine; variants are for comparison
        weights = record["weights"]
        prompt = record.get("prompt") or 0
        context = record.get("context") or 0
        config = DeploymentConfig(
            tp=record["tp"],
            weight_dtype=weights,
            activation_dtype="fp8" if weights == "fp8" else "bf16",
            # The executor's FP8 points run static activation scales unless the record says so.
            fp8_scaling=record.get("scaling", "static"),
            max_model_len=max(prompt, context) + 16,
            max_num_batched_tokens=max(8192, prompt * record["batch"]),
            gpu_memory_utilization=0.95,
        )
        prediction = predict(
            spec,
            hardware,
            config,
            batch=record["batch"],
            prompt=max(prompt, 1),
            context=max(context, 1),
        )
        phase = prediction.prefill if prompt else prediction.decode
        if phase is None:
            return None
        return phase.time_s if prompt else (phase.step_time_s or phase.time_s)

    return predict_step
