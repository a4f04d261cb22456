"""Run one configuration on the GPU and report it in the Prediction's schema.

``measure(spec, config, batch=, prompt=, context=)`` builds the executor's Llama for the config
(bf16, or FP8 W8A8 for ``weight_dtype='fp8'``; TP when started under ``torchrun``), times a
prefill of ``prompt`` tokens and a decode step at ``context`` cached tokens, and returns a
``Measurement``. A point that does not fit in GPU memory comes back with ``fits=False`` and the
reason, never as a crash. ``calibrate_here`` runs the microbenchmarks and writes the calibration
of the detected GPU (``tune calibrate`` without ``--from``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from simulator.errors import ConfigError, GpuError
from simulator.results import Measurement, PhaseResult
from simulator.specs import DeploymentConfig, ModelSpec

__all__ = ["measure", "calibrate_here"]


def _require_cuda():
    import torch

    if not torch.cuda.is_available():
        raise GpuError("this needs a CUDA GPU; none is visible to torch here")
    return torch


def measure(
    spec: ModelSpec,
    config: DeploymentConfig,
    *,
    batch: int,
    prompt: int,
    context: int,
    hardware: str | None = None,
) -> Measurement:
    _require_cuda()
    from executor.parallel import check_tp_divides, init_distributed
    from executor.points import machine_info, measure_point, prepare_model

    if config.pp > 1 or config.cp > 1 or config.ep > 1:
        raise ConfigError("the executor runs tensor parallelism only (pp = cp = ep = 1)")
    if config.weight_dtype not in ("bf16", "fp8"):
        raise ConfigError("tune measure runs bf16 or fp8 (W8A8) weights")
    rank, world = init_distributed()
    if world != config.tp:
        raise ConfigError(
            f"--tp {config.tp} needs `torchrun --nproc-per-node {config.tp}` "
            f"(this process sees a world of {world})"
        )
    check_tp_divides(spec, config.tp)
    model = prepare_model(spec, weights=config.weight_dtype, tp_rank=rank, tp_world_size=world)
    kv = "fp8" if config.kv_dtype == "fp8" else "bf16"
    points = [
        measure_point(
            model,
            spec,
            weights=config.weight_dtype,
            batch=batch,
            prompt=prompt,
            tp=world,
            kv_dtype=kv,
            use_graphs=config.cuda_graphs,
        ),
        measure_point(
            model,
            spec,
            weights=config.weight_dtype,
            batch=batch,
            context=context,
            tp=world,
            kv_dtype=kv,
            use_graphs=config.cuda_graphs,
        ),
    ]
    machine = machine_info()
    fits = all(p["fits"] for p in points)
    reason = next((p.get("reason") for p in points if not p["fits"]), None)

    def phase(point: dict, *, decode: bool) -> PhaseResult | None:
        if not point["fits"]:
            return None
        return PhaseResult(
            time_s=point["time_s"],
            step_time_s=point["time_s"] if decode else None,
            bound="memory" if decode else "compute",
            tokens=batch if decode else batch * prompt,
            batch=batch,
            prompt=None if decode else prompt,
            context=context if decode else None,
            flops=point["flops"],
            bytes=point["bytes"],
            tokens_per_s=point["tokens_per_s"],
            achieved_bytes_per_s=point["achieved_bytes_per_s"],
            achieved_flops_per_s=point["achieved_flops_per_s"],
        )

    return Measurement(
        model=spec.name,
        hardware=hardware or machine.get("device_name", ""),
        config=config.model_dump(mode="json"),
        fits=fits,
        reason=reason,
        num_gpus=world,
        prefill=phase(points[0], decode=False),
        decode=phase(points[1], decode=True),
        machine=machine,
    )


def calibrate_here(*, hardware: str | None, model: str, out: str | None) -> Path:
    """Measure this GPU (microbenchmarks) and write its calibration; the GPU must match."""
    _require_cuda()
    from executor.gpu import require_profile
    from executor.microbench import bench_micro
    from executor.points import machine_info
    from simulator.models import get_model
    from tuner.commands.calibrate_saved import fit_saved

    profile = require_profile(hardware)
    spec = get_model(model)
    micro = bench_micro(spec)
    with tempfile.TemporaryDirectory() as directory:
        document = {"model": spec.name, "machine": machine_info(), "results": micro}
        (Path(directory) / "micro.json").write_text(json.dumps(document, default=str))
        result = fit_saved(directory, hardware=profile, model=model, out=out)
    return Path(result["calibration"])
