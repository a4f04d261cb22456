"""Measure one point: build the executor's Llama for a configuration and time one step of it.

``prepare_model`` builds the model at real shapes (seeded random weights, bf16 or FP8 W8A8, a TP
shard under torchrun); ``measure_point`` times a prefill of ``prompt`` tokens or a decode step at
``context`` cached tokens (CUDA-graph replay, CUDA events, median after warm-up) and reports the
bytes and FLOPs it moved, so every timing is also an achieved bandwidth and rate. A point that
runs out of memory comes back as ``fits`` false with the reason. Every point is a
``simulator.results.StepMeasurement``; ``executor.bench`` runs grids of them and
``executor.validate`` two (a prefill and a decode step) for ``tune measure`` and ``tune validate``.
"""

from __future__ import annotations

import gc

import torch

from executor import pdl
from executor.engine import (
    DecodeGraphs,
    build_model,
    capture_graph,
    fill_cache_random,
    median,
    step_cost,
    time_cuda,
)
from executor.fused import DEFAULT_DECODE_ATTENTION, decode_attention_for
from executor.quant import FP8_DTYPE, calibrate_static_scales, quantize_model
from simulator.data.specs import ModelSpec
from simulator.results import StepMeasurement

__all__ = [
    "prepare_model",
    "quantization_of",
    "measure_point",
    "machine_info",
    "free_memory",
    "host_dispatch_s",
    "host_seconds_per_call",
]


def free_memory() -> None:
    gc.collect()
    torch.cuda.empty_cache()


def prepare_model(
    spec: ModelSpec,
    *,
    weights: str,
    scaling: str = "static",
    granularity: str = "per_tensor",
    tp_rank: int = 0,
    tp_world_size: int = 1,
    seed: int = 0,
    all_reduce: str = "one-shot",
    gemv: bool = True,
    prefill_backend: str = "flash",
    decode_attention: str = DEFAULT_DECODE_ATTENTION,
    activations: str = "bf16",
    outlier_fraction: float = 0.0,
    int4_group_size: int = 128,
):
    model = build_model(
        spec,
        seed=seed,
        tp_rank=tp_rank,
        tp_world_size=tp_world_size,
        all_reduce=all_reduce,
        prefill_backend=prefill_backend,
        decode_attention=decode_attention,
    )
    if weights != "bf16":
        quantize_model(
            model,
            weights=weights,
            scaling=scaling,
            granularity=granularity,
            compile_quantize=True,
            include_lm_head=True,
            activations=activations,
            outlier_fraction=outlier_fraction,
            int4_group_size=int4_group_size,
        )
        if weights == "fp8" and scaling == "static":
            tokens = torch.randint(0, spec.vocab_size, (1, 256), device="cuda")
            calibrate_static_scales(model, lambda: model(tokens))
    if gemv:
        from executor.kernels import use_gemv
        from executor.parallel import push_from_gemv

        push_from_gemv(use_gemv(model))
    free_memory()
    return model


def quantization_of(config) -> dict:
    """``prepare_model``'s quantization arguments for a ``DeploymentConfig``: bf16, FP8 W8A8
    (dynamic scales per token and channel, static ones per tensor), INT8 W8A8 with its bf16
    outlier channels, weight-only INT8 and INT4 (group scales every ``quant_group_size``).
    Raises ``ConfigError`` where this machine cannot run the scheme."""
    from simulator.errors import ConfigError

    weights = config.weight_dtype
    if weights not in ("bf16", "fp8", "int8", "int4"):
        raise ConfigError(f"the executor runs bf16, fp8, int8 or int4 weights, not {weights}")
    if weights == "int4":
        from executor.quant import int4_available

        ok, why = int4_available("cuda")
        if not ok:
            raise ConfigError(f"int4 weights cannot run here: {why}")
    return dict(
        weights=weights,
        scaling=config.fp8_scaling,
        granularity="rowwise" if config.fp8_scaling == "dynamic" else "per_tensor",
        activations=config.activation_dtype,
        outlier_fraction=config.int8_outlier_fraction,
        int4_group_size=config.quant_group_size,
    )


def _bytes_per_param(weights: str) -> float:
    return {"bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}[weights]


def measure_point(
    model,
    spec: ModelSpec,
    *,
    weights: str,
    batch: int,
    prompt: int = 0,
    context: int = 0,
    tp: int = 1,
    kv_dtype: str = "bf16",
    use_graphs: bool = True,
    iters: int = 20,
) -> StepMeasurement:
    """One prefill (``prompt`` > 0) or decode-step (``context``) timing; OOM -> fits False."""
    record = StepMeasurement(
        phase="prefill" if prompt else "decode",
        weights=weights,
        tp=tp,
        batch=batch,
        prompt=prompt or None,
        context=context or None,
        kv_dtype=kv_dtype,
        cuda_graphs=use_graphs,
        gemv=True,
        prefill_backend=model.kernels.prefill_backend if prompt else None,
        decode_attention=None
        if prompt
        else decode_attention_for(model.kernels.decode_attention_mode, kv_dtype == "fp8"),
        pdl=pdl.enabled(),
    )
    graphs = graph = None
    try:
        length = (prompt if prompt else context) + 16
        kv_torch_dtype = FP8_DTYPE if kv_dtype == "fp8" else None
        model.setup_caches(max_batch=batch, max_seq_length=length, kv_dtype=kv_torch_dtype)
        device = model.embed_tokens.weight.device
        if prompt:
            tokens = torch.randint(0, spec.vocab_size, (batch, prompt), device=device)
            positions = torch.arange(prompt, device=device)

            def run_prefill():
                return model(tokens, positions, last_token_only=True)

            if use_graphs:
                graph, _ = capture_graph(run_prefill, warmup=1)
                run_prefill = graph.replay  # noqa: F811 - time the captured prefill
            samples = time_cuda(
                run_prefill, warmup=2, iters=max(3, iters if batch * prompt < 8192 else 5)
            )
        else:
            fill_cache_random(model)
            graphs = DecodeGraphs(model, use_graphs=use_graphs)
            graphs.capture(batch, position=context, fixed_position=True)
            graphs.static_tokens[batch].random_(0, spec.vocab_size)
            samples = time_cuda(lambda: graphs.replay(batch), warmup=3, iters=iters)
        seconds = median(samples)
    except torch.OutOfMemoryError as error:
        record = record.model_copy(
            update={"reason": "out of memory: " + str(error).splitlines()[0][:160]}
        )
        graphs = graph = None  # noqa: F841
        model.free_caches()
        free_memory()
        return record
    except Exception as error:  # keep the run going; the record says what broke
        if torch.distributed.is_initialized():
            raise
        record = record.model_copy(
            update={"error": f"{type(error).__name__}: {str(error)[:300]}", "reason": "error"}
        )
        print(f"point failed: {record}", flush=True)
        graphs = graph = None  # noqa: F841
        model.free_caches()
        free_memory()
        return record
    cost = step_cost(
        spec,
        batch=batch,
        prompt=prompt,
        context=context,
        tp=tp,
        weight_bytes_per_param=_bytes_per_param(weights),
        kv_bytes_per_value=1.0 if kv_dtype == "fp8" else 2.0,
        lm_head_bytes_per_param=_bytes_per_param(weights),
    )
    tokens_done = batch * prompt if prompt else batch
    record = record.model_copy(
        update={
            "fits": True,
            "time_s": seconds,
            "samples_s": list(samples),
            "tokens_per_s": tokens_done / seconds,
            "weight_bytes": cost.weight_bytes,
            "kv_bytes": cost.kv_bytes,
            "bytes": cost.bytes,
            "flops": cost.flops,
            "achieved_bytes_per_s": cost.bytes / seconds,
            "achieved_flops_per_s": cost.flops / seconds,
            "peak_memory_bytes": torch.cuda.max_memory_allocated(),
        }
    )
    graphs = graph = None  # noqa: F841
    model.free_caches()
    free_memory()
    return record


def machine_info() -> dict:
    from executor.gpu import provenance

    info = provenance()
    info["device_name"] = torch.cuda.get_device_name(0)
    info["device_count"] = str(torch.cuda.device_count())
    return info


def host_dispatch_s(device: str | torch.device | None = None, *, calls: int = 100,
                    rounds: int = 21) -> float:  # fmt: skip
    """Seconds this host takes to issue one small eager PyTorch op to ``device`` (the GPU if
    there is one): ``host_seconds_per_call`` of an add of two 1,024-element tensors. How fast
    the host launches: iterations that launch kernels from Python (attention between graph
    pieces, steps too large for graphs) run at this pace where their GPU work is shorter, so a
    serving validation on a slower host measures them slower; hosts of one card differed
    about threefold (``studies/serving-validation/NOTES.md``)."""
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    a = torch.ones(1024, device=device)
    b, out = torch.ones_like(a), torch.empty_like(a)
    return host_seconds_per_call(lambda: torch.add(a, b, out=out), calls=calls, rounds=rounds)


def host_seconds_per_call(call, *, calls: int = 100, rounds: int = 21) -> float:
    """The host's seconds to issue ``call()``: the median over ``rounds`` rounds of ``calls``
    calls, each round after a synchronize (so the GPU, given little work, never holds the host
    back). One call first, so that nothing compiles or plans inside a round."""
    import statistics
    import time

    def synchronize() -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()

    call()
    per_call = []
    for _ in range(rounds):
        synchronize()
        start = time.perf_counter()
        for _ in range(calls):
            call()
        per_call.append((time.perf_counter() - start) / calls)
    synchronize()
    return statistics.median(per_call)
