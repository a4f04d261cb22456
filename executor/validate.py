"""Run one configuration on the GPU and report it in the Prediction's schema.

``measure(spec, config, batch=, prompt=, context=)`` builds the executor's Llama for the config
(its weights as the config says: bf16, FP8 or INT8 W8A8, weight-only INT8 or INT4; TP when
started under ``torchrun``), times a prefill of ``batch`` prompts of ``prompt`` tokens
(``prefill_batch`` prompts where given) and a decode step of ``batch`` sequences at ``context``
cached tokens, and returns a ``Measurement``.
A model or a point that does not fit in GPU memory comes back with ``fits=False`` and the
reason, never as a crash. Under torchrun it leaves no process group behind.
``calibrate_here`` runs the microbenchmarks and writes the calibration of the detected GPU
(``tune calibrate`` without ``--from``).
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

from simulator.data.specs import DeploymentConfig, ModelSpec
from simulator.errors import ConfigError, GpuError
from simulator.results import Measurement, PhaseResult, StepMeasurement

__all__ = ["measure", "calibrate_here", "serving_clocks"]


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
    prefill_batch: int | None = None,
    hardware: str | None = None,
) -> Measurement:
    from executor.model import refuse_unless_runnable

    refuse_unless_runnable(spec)  # before asking for a GPU: the answer does not need one
    torch = _require_cuda()
    from executor.parallel import check_tp_divides, finish_distributed, init_distributed
    from executor.points import machine_info, measure_point, prepare_model, quantization_of

    if config.pp > 1 or config.cp > 1 or config.ep > 1:
        raise ConfigError("the executor runs tensor parallelism only (pp = cp = ep = 1)")
    quantization = quantization_of(config)
    check_tp_divides(spec, config.tp)
    rank, world = init_distributed()
    try:
        if world != config.tp:
            raise ConfigError(
                f"--tp {config.tp} needs `torchrun --nproc-per-node {config.tp}` "
                f"(this process sees a world of {world})"
            )
        machine = machine_info()
        result = Measurement(
            model=spec.name,
            hardware=hardware or machine.get("device_name", ""),
            config=config.model_dump(mode="json"),
            fits=False,
            num_gpus=world,
            machine=machine,
        )
        try:
            model = prepare_model(spec, **quantization, tp_rank=rank, tp_world_size=world)
        except torch.OutOfMemoryError as error:
            reason = "the weights do not fit in GPU memory: " + str(error).splitlines()[0][:160]
            return result.model_copy(update={"reason": reason})
        prefill_batch = batch if prefill_batch is None else prefill_batch
        common = dict(
            weights=config.weight_dtype,
            tp=world,
            kv_dtype="fp8" if config.kv_dtype == "fp8" else "bf16",
            use_graphs=config.cuda_graphs,
        )
        if config.attention == "naive":  # the scores materialized, as the model prices them
            model.kernels.prefill_backend = "naive"
        prefill = measure_point(model, spec, batch=prefill_batch, prompt=prompt, **common)
        decode = measure_point(model, spec, batch=batch, context=context, **common)
    finally:
        finish_distributed()

    def phase(point: StepMeasurement, *, decode: bool) -> PhaseResult | None:
        if not point.fits or point.time_s is None:
            return None
        return PhaseResult(
            time_s=point.time_s,
            step_time_s=point.time_s if decode else None,
            bound="memory" if decode else "compute",
            tokens=batch if decode else prefill_batch * prompt,
            batch=batch if decode else prefill_batch,
            prompt=None if decode else prompt,
            context=context if decode else None,
            flops=point.flops or 0.0,
            bytes=point.bytes or 0.0,
            tokens_per_s=point.tokens_per_s or 0.0,
            achieved_bytes_per_s=point.achieved_bytes_per_s,
            achieved_flops_per_s=point.achieved_flops_per_s,
        )

    points = (prefill, decode)
    return result.model_copy(
        update={
            "fits": all(p.fits for p in points),
            "reason": next((p.reason for p in points if not p.fits), None),
            "prefill": phase(prefill, decode=False),
            "decode": phase(decode, decode=True),
        }
    )


def calibrate_here(
    *, hardware: str | None, model: str, out: str | None, accept_difference: str | None = None
) -> Path:
    """Measure this GPU (microbenchmarks) and write its calibration; the GPU must match."""
    _require_cuda()
    from executor.gpu import require_profile
    from executor.microbench import bench_micro
    from executor.points import machine_info
    from simulator.calibration.fit_saved import fit_saved
    from simulator.data.models import get_model

    profile = require_profile(hardware)
    spec = get_model(model)
    micro = bench_micro(spec)
    with tempfile.TemporaryDirectory() as directory:
        document = {"model": spec.name, "machine": machine_info(), "results": micro}
        (Path(directory) / "micro.json").write_text(json.dumps(document, default=str))
        result = fit_saved(
            directory,
            hardware=profile,
            model=model,
            out=out,
            accept_difference=accept_difference,
        )
    return Path(result["calibration"])


def serving_clocks(spec: ModelSpec, config: DeploymentConfig, *, max_seq_length: int,
                   seed: int = 0):  # fmt: skip
    """The model of ``config`` built once on this GPU, and a function of the simulator's
    predicted run (for its KV blocks) -> a fresh, warmed-up ``ServingExecutor``: the clock of
    one measured run (``tune validate --traffic``). Tensor parallelism under ``torchrun
    --nproc-per-node TP``: every rank runs the scheduler, on the slowest rank's clock."""
    from executor.model import refuse_unless_runnable

    refuse_unless_runnable(spec)
    torch = _require_cuda()
    from executor.parallel import check_tp_divides, init_distributed
    from executor.points import prepare_model, quantization_of
    from executor.serving_loop import ServingExecutor

    if config.pp > 1 or config.cp > 1 or config.ep > 1:
        raise ConfigError("the executor runs tensor parallelism only (pp = cp = ep = 1)")
    check_tp_divides(spec, config.tp)
    rank, world = init_distributed()
    if world != config.tp:
        raise ConfigError(
            f"tp {config.tp} needs `torchrun --nproc-per-node {config.tp} -m tuner.cli "
            f"validate ...` (this process sees a world of {world})"
        )
    model = prepare_model(spec, **quantization_of(config), tp_rank=rank, tp_world_size=world,
                          seed=seed)  # fmt: skip
    if config.attention == "naive":
        model.kernels.prefill_backend = "naive"
    kv_dtype = torch.float8_e4m3fn if config.kv_dtype == "fp8" else None
    make_drafter = drafter_factory(config, rank=rank, world=world, seed=seed)

    built: dict[int, ServingExecutor] = {}  # by KV blocks: the loads of one plan share one

    def clock_for(predicted) -> ServingExecutor:
        blocks = int(predicted.prediction.kv_blocks or 0)
        if blocks <= 0:
            raise ConfigError("the predicted run holds no KV-cache blocks")
        if blocks in built:  # the same cache: warmed up and captured already
            built[blocks].reset()
            return built[blocks]
        import gc

        built.clear()
        model.free_caches()
        gc.collect()  # an earlier executor: its cache and graphs
        torch.cuda.empty_cache()
        try:
            executor = ServingExecutor(
                model, num_blocks=blocks, block_size=config.block_size,
                max_seq_length=max_seq_length, kv_dtype=kv_dtype, seed=seed,
                graphs_up_to=config.max_num_seqs if config.cuda_graphs else 0,
                piecewise_up_to=config.max_num_batched_tokens if config.cuda_graphs else 0,
                token_budget=config.max_num_batched_tokens, drafter=make_drafter(model),
            )  # fmt: skip
            executor.warm_up()
        except torch.OutOfMemoryError as error:
            raise GpuError(f"{blocks} KV blocks of {config.block_size} tokens do not fit beside "
                           f"the model on this GPU: {str(error).splitlines()[0][:120]}") from None  # fmt: skip
        built[blocks] = executor
        return executor

    return clock_for


def drafter_factory(config: DeploymentConfig, *, rank: int, world: int, seed: int):
    """The target model -> the plan's drafter (``executor.speculative``), or None. A draft model
    is built once, at the target's tensor parallelism (as the engines and the cost model run
    it), in bf16."""
    speculative = config.speculative
    if speculative is None:
        return lambda model: None
    from executor.speculative import DraftModel, EagleHead, PromptLookup

    g = speculative.num_speculative_tokens
    if speculative.method == "ngram":
        return lambda model: PromptLookup(g)
    if speculative.method == "eagle":
        return lambda model: EagleHead(model, g)
    from executor.points import prepare_model
    from simulator.data.models import get_model

    draft = prepare_model(get_model(speculative.draft_model or ""), weights="bf16",
                          tp_rank=rank, tp_world_size=world, seed=seed + 1)  # fmt: skip
    return lambda model: DraftModel(draft, g)
