"""Step-level prediction of one configuration, in the public ``Prediction`` contract.

``predict(model, hardware, config, batch=, prompt=, context=)`` answers "how long does a prefill
of ``prompt`` tokens per sequence take, and one decode step with ``context`` cached tokens, for
``batch`` sequences; what bounds each; does it fit". It is a thin layer over the vectorized
``StepModel`` (evaluated with N = 1), so the scalar and the vectorized answers cannot disagree.
"""

from __future__ import annotations

from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec
from ..errors import DoesNotFitError
from ..results import MemoryBreakdown, OpResult, PhaseResult, Prediction, Unfit
from ..units import GB, MiB
from .bands import bands_of
from .memory import kv_tokens_needed, whole_blocks
from .roofline import BOUNDS, OpTimes
from .step import StepModel, StepTimes

__all__ = ["predict", "fit_reason", "require_fit"]


def _op_source(hardware: HardwareSpec) -> str:
    return "calibrated" if hardware.efficiency.provenance else "literature"


def _phase(
    times: StepTimes,
    table_names,
    kinds,
    phase: str,
    source: str,
    *,
    batch: int,
    tokens: int,
    prompt=None,
    context=None,
) -> tuple[PhaseResult, list[OpResult]]:
    ops: OpTimes = times.ops
    total = float(times.latency_s[0])
    shares: dict[str, float] = {bound: 0.0 for bound in BOUNDS}
    rows = []
    for j, name in enumerate(table_names):
        time_s = float(ops.time_s[0, j])
        if time_s <= 0:
            continue
        bound = BOUNDS[int(ops.bound[0, j])]
        shares[bound] += time_s
        rows.append(
            OpResult(
                name=name,
                phase=phase,
                kind=kinds[j],
                flops=float(ops.flops[0, j]),
                bytes=float(ops.bytes[0, j]),
                time_s=time_s,
                compute_s=float(ops.compute_s[0, j]),
                memory_s=float(ops.memory_s[0, j]),
                overhead_s=float(ops.overhead_s[0, j]),
                bound=bound,
                share=time_s / total if total else 0.0,
                kernels=float(ops.kernels[0, j]),
                source="spec" if kinds[j] == "communication" else source,
            )
        )
    bound_shares = {k: v / total for k, v in shares.items()} if total else shares
    phase_bound = max(bound_shares, key=lambda k: bound_shares[k])
    comm = [j for j, kind in enumerate(kinds) if kind == "communication"]
    hbm = [j for j, kind in enumerate(kinds) if kind != "communication"]
    result = PhaseResult(
        time_s=total,
        step_time_s=total if phase == "decode" else None,
        bound=phase_bound,
        tokens=tokens,
        batch=batch,
        prompt=prompt,
        context=context,
        flops=float(ops.flops[0].sum()),
        bytes=float(ops.bytes[0, hbm].sum()),
        communication_s=float(ops.time_s[0, comm].sum()),
        tokens_per_s=tokens / total if total else 0.0,
        bound_shares=bound_shares,
        stage_time_s=float(times.stage_s[0]),
    )
    return result, rows


def fit_reason(
    step: StepModel, index: int, *, batch: int, tokens_per_sequence: int
) -> tuple[Unfit, str] | None:
    """None when configuration ``index`` fits, else (the kind, one line saying why not)."""
    code = int(step.invalid_code[index])
    if code:
        return "invalid", step.configs.reason(index, code, step.model, step.hardware)
    if bool(step.fits(batch, tokens_per_sequence)[index]):
        return None
    mem = step.memory
    block = step.configs.block_size[index]
    kv_tokens = float(
        kv_tokens_needed(
            batch,
            tokens_per_sequence,
            block_size=block,
            max_model_len=step.configs.max_model_len[index],
        )
    )
    need = float(mem.required_bytes(kv_tokens)[index])
    capacity = float(mem.capacity_bytes[index])
    hbm = step.hardware.memory_reported_bytes
    utilization = float(step.configs.gpu_memory_utilization[index])
    kv_bytes = kv_tokens * mem.kv_bytes_per_token[index]
    return "memory", (
        f"does not fit: needs {need / GB:.1f} GB per GPU, has {capacity / GB:.1f} GB "
        f"({hbm / MiB:,.0f} MiB x {utilization:.2f} on {step.hardware.name}); needed: weights "
        f"{mem.weights_bytes[index] / GB:.1f} GB, KV cache {kv_bytes / GB:.1f} GB for "
        f"{int(kv_tokens)} tokens, activations {mem.activation_bytes[index] / GB:.1f} GB, "
        f"reserved {mem.reserved_bytes[index] / GB:.1f} GB"
    )


def predict(
    model: ModelSpec,
    hardware: HardwareSpec,
    config: DeploymentConfig,
    *,
    batch: int = 1,
    prompt: int = 1024,
    context: int = 1024,
) -> Prediction:
    """Prefill of ``prompt`` tokens per sequence and one decode step at ``context`` cached
    tokens, for ``batch`` sequences. Never raises for an infeasible config: ``fits`` is False
    and ``reason`` says why."""
    step = StepModel.build(model, hardware, config)
    tokens_per_sequence = max(prompt, context + 1)
    unfit = fit_reason(step, 0, batch=batch, tokens_per_sequence=tokens_per_sequence)
    mem = step.memory
    memory = MemoryBreakdown(
        weights_bytes=float(mem.weights_bytes[0]),
        kv_cache_bytes=float(mem.kv_cache_bytes[0]),
        activation_bytes=float(mem.activation_bytes[0]),
        reserved_bytes=float(mem.reserved_bytes[0]),
        capacity_bytes=float(mem.capacity_bytes[0]),
        kv_bytes_per_token=float(mem.kv_bytes_per_token[0]),
        kv_tokens_capacity=float(mem.kv_tokens[0]),
        required_kv_bytes=float(
            batch
            * whole_blocks(tokens_per_sequence, config.block_size)
            * mem.kv_bytes_per_token[0]
        ),
        max_batch_at_context=int(
            max(mem.max_batch_at_context(tokens_per_sequence, config.block_size)[0], 0)
        ),
    )
    prediction = Prediction(
        model=model.name,
        hardware=hardware.name,
        config=config.model_dump(mode="json"),
        fits=unfit is None,
        reason=None if unfit is None else unfit[1],
        unfit=None if unfit is None else unfit[0],
        num_gpus=config.num_gpus,
        memory=memory,
    )
    if int(step.invalid_code[0]):
        return prediction
    source = _op_source(hardware)
    names, kinds = step.table.names, step.table.kinds
    prefill, prefill_ops = _phase(
        step.prefill(batch, prompt),
        names,
        kinds,
        "prefill",
        source,
        batch=batch,
        tokens=batch * prompt,
        prompt=prompt,
    )
    decode, decode_ops = _phase(
        step.decode(batch, context),
        names,
        kinds,
        "decode",
        source,
        batch=batch,
        tokens=batch,
        context=context,
    )
    bands = bands_of(
        hardware,
        {"prefill": prefill.time_s if prefill else None,
         "decode": decode.step_time_s if decode else None},
    )  # fmt: skip
    return prediction.model_copy(
        update=dict(prefill=prefill, decode=decode, ops=prefill_ops + decode_ops, bands=bands)
    )


def require_fit(prediction: Prediction) -> Prediction:
    """Raise ``DoesNotFitError`` with the prediction's reason when it does not fit."""
    if not prediction.fits:
        raise DoesNotFitError(prediction.reason or "does not fit")
    return prediction
