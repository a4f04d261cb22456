"""The executor's Llama timed over a grid of points, for ``executor.bench``'s ``model`` and
``tp`` suites.

``model_grid`` names the grids (full: the calibration grid; compare: the Hugging Face points;
decode: the full grid's decode steps; decode1: the batch-1 decode steps of the must-show
ratios). ``bench_model`` builds the model once per weight dtype and times every point with
``executor.points.measure_point``; it adds batch-1 variants that show what each part of the
engine is worth (at TP > 1: the row-parallel GEMVs' own push to the peers). Every record names
its ``variant``: None for the engine as it serves by default, which is all that calibration fits
and scores.
"""

from __future__ import annotations

from executor.fused import DEFAULT_DECODE_ATTENTION, decode_attention_for
from executor.points import free_memory, measure_point, prepare_model
from simulator.data.specs import ModelSpec
from simulator.results import StepMeasurement

__all__ = ["log", "model_grid", "bench_model"]


def log(*parts) -> None:
    print(*parts, flush=True)


def _print_points(records: list[StepMeasurement]) -> None:
    log(
        f"{'phase':>7} {'w':>4} {'tp':>2} {'B':>4} {'P/C':>6} {'time':>10} {'tok/s':>10} "
        f"{'GB/s':>7} {'TFLOP/s':>8}"
    )
    for r in records:
        size = r.prompt or r.context
        where = f"{r.phase:>7} {r.weights:>4} {r.tp:>2} {r.batch:>4} {size:>6}"
        if not r.fits or r.time_s is None:
            log(f"{where}  infeasible ({(r.reason or '')[:40]})")
            continue
        log(
            f"{where} {r.time_s * 1e3:8.3f}ms {r.tokens_per_s or 0:10.0f} "
            f"{(r.achieved_bytes_per_s or 0) / 1e9:7.0f} "
            f"{(r.achieved_flops_per_s or 0) / 1e12:8.1f}"
        )


def model_grid(smoke: bool, name: str = "full") -> dict:
    if name == "compare":  # the points bench_hf times, and the must-show points
        return {
            "weights": ["bf16", "fp8"],
            "batches": [1, 16, 64],
            "contexts": [1024, 4096],
            "prompts": [512, 2048, 8192],
        }
    if name == "decode1":  # the batch-1 decode steps of the must-show ratios, alone
        return {"weights": ["bf16", "fp8"], "batches": [1], "contexts": [1024], "prompts": []}
    if smoke:
        return {"weights": ["bf16", "fp8"], "batches": [1, 8], "contexts": [512], "prompts": [256]}
    full = {
        "weights": ["bf16", "fp8"],
        "batches": [1, 4, 16, 64, 256],
        "contexts": [1024, 4096, 16384],
        "prompts": [128, 512, 2048, 8192, 16384],
    }
    if name == "decode":  # the full grid's decode steps alone (to compare decode kernels)
        return {**full, "prompts": []}
    return full


def bench_model(
    spec: ModelSpec,
    *,
    smoke: bool = False,
    tp_rank: int = 0,
    tp_world_size: int = 1,
    grid: dict | None = None,
    all_reduce: str = "one-shot",
    extras: bool = True,
    decode_attention: str = DEFAULT_DECODE_ATTENTION,
) -> list[StepMeasurement]:
    grid = grid or model_grid(smoke)
    records: list[StepMeasurement] = []
    for weights in grid["weights"]:
        model = prepare_model(
            spec,
            weights=weights,
            tp_rank=tp_rank,
            tp_world_size=tp_world_size,
            all_reduce=all_reduce,
            decode_attention=decode_attention,
        )
        backend = model.collectives.backend if model.collectives is not None else None
        first = len(records)
        for prompt in grid["prompts"]:
            records.append(
                measure_point(
                    model, spec, weights=weights, batch=1, prompt=prompt, tp=tp_world_size
                )
            )
        for batch in grid["batches"]:
            for context in grid["contexts"]:
                records.append(
                    measure_point(
                        model,
                        spec,
                        weights=weights,
                        batch=batch,
                        context=context,
                        tp=tp_world_size,
                    )
                )
        variant = _grid_variant(decode_attention, backend)
        records[first:] = [
            r.model_copy(update={"all_reduce": backend, "variant": variant})
            for r in records[first:]
        ]
        if model.collectives is not None and model.collectives.one_shot is not None:
            model.collectives.one_shot.check()  # no wait gave up: the timings are valid
        if extras and tp_world_size == 1:
            records += _batch1_variants(model, spec, weights, grid)
        elif extras and backend == "one-shot":
            records += _gemv_push_variant(model, spec, weights, grid, tp_world_size)
        del model
        free_memory()
    if tp_rank == 0:
        _print_points(records)
    return records


def _grid_variant(decode_attention: str, all_reduce: str | None) -> str | None:
    """None for the engine as it serves by default, else what differs (the calibration fits and
    scores only the default)."""
    parts = []
    if decode_attention != DEFAULT_DECODE_ATTENTION:
        parts.append(f"{decode_attention}-decode-attention")
    if all_reduce not in (None, "one-shot"):
        parts.append(f"{all_reduce}-all-reduce")
    return "+".join(parts) or None


def _gemv_push_variant(
    model, spec: ModelSpec, weights: str, grid: dict, tp: int
) -> list[StepMeasurement]:
    """Under TP with the one-shot all-reduce: the batch-1 step with the row-parallel GEMVs not
    pushing their outputs themselves (the all-reduce kernel pushes), what that push is worth."""
    from executor.parallel import push_from_gemv

    push_from_gemv(model, enabled=False)
    record = measure_point(
        model, spec, weights=weights, batch=1, context=grid["contexts"][0], tp=tp
    )
    push_from_gemv(model, enabled=True)
    model.collectives.one_shot.check()
    return [record.model_copy(update={"all_reduce": "one-shot", "variant": "no-gemv-push"})]


def _batch1_variants(model, spec: ModelSpec, weights: str, grid: dict) -> list[StepMeasurement]:
    """What the engine's parts are worth at batch 1: the step again with CUDA graphs off, an FP8
    KV cache, PDL off, the other decode attention, cuBLAS in place of the GEMV, and cuDNN's
    prefill for the two longest prompts. Each record names its ``variant``."""
    from executor import pdl
    from executor.kernels import use_gemv

    context = grid["contexts"][0]
    records: list[StepMeasurement] = []

    def measure(variant: str, **kwargs) -> None:
        kwargs.setdefault("context", context)
        record = measure_point(model, spec, weights=weights, batch=1, **kwargs)
        records.append(record.model_copy(update={"variant": variant}))

    measure("no-graphs", use_graphs=False)
    measure("fp8-kv-cache", kv_dtype="fp8")
    if pdl.enabled():
        pdl.set_enabled(False)
        measure("no-pdl")
        pdl.set_enabled(True)
    ours = model.kernels.decode_attention_mode
    if model.kernels.decode_attention is not None:  # the attention the default does not pick
        for kv_dtype in ("bf16", "fp8"):
            for mode in ("sdpa", "triton"):
                if mode == decode_attention_for(ours, kv_dtype == "fp8"):
                    continue  # the default row (or "fp8-kv-cache") is this one
                model.kernels.decode_attention_mode = mode
                suffix = "+fp8-kv-cache" if kv_dtype == "fp8" else ""
                measure(f"{mode}-decode-attention{suffix}", kv_dtype=kv_dtype)
        model.kernels.decode_attention_mode = ours
    use_gemv(model, enabled=False)
    measure("cublas-gemv")
    records[-1] = records[-1].model_copy(update={"gemv": False})
    use_gemv(model, enabled=True)
    model.kernels.prefill_backend = "cudnn"
    for prompt in grid["prompts"][-2:]:
        measure("cudnn-prefill", prompt=prompt, context=0)
    model.kernels.prefill_backend = "flash"
    return records
