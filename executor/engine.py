"""Running the model: build it, prefill, decode steps captured in CUDA graphs, and timing.

A decode step has the same shapes every time (static KV cache, one token per sequence, one
``input_pos``), so it is captured once per batch-size bucket as a CUDA graph and replayed: the
hundreds of small kernels of a step then cost their GPU time, not a Python launch each.
``DecodeGraphs`` keeps one graph per bucket (1, 2, 4, ... up to the cache's batch); a batch is
padded up to its bucket.

Timing (``time_cuda``) uses CUDA events around each call after a warm-up, and reports every
sample; callers take the median. Step-level numbers are what the simulator predicts:
``prefill.time_s`` for ``batch`` prompts of ``prompt`` tokens, ``decode.step_time_s`` for one
token per sequence with ``context`` tokens already cached. The bytes a step must read (weights
once, plus every cached K/V) and the FLOPs it must do are counted here too, so each measurement
carries its achieved bandwidth and FLOP/s.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from executor.fused import DEFAULT_DECODE_ATTENTION, Kernels
from executor.model import Llama
from executor.weights import init_random_weights
from simulator.data.specs import ModelSpec

__all__ = [
    "BUCKETS",
    "DTYPES",
    "build_model",
    "DecodeGraphs",
    "time_cuda",
    "time_graph",
    "capture_graph",
    "median",
    "StepCost",
    "step_cost",
    "fill_cache_random",
]

BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}


def build_model(
    spec: ModelSpec,
    *,
    device: str | torch.device = "cuda",
    dtype: torch.dtype = torch.bfloat16,
    seed: int = 0,
    checkpoint: str | None = None,
    fused_kernels: bool | None = None,
    tp_rank: int = 0,
    tp_world_size: int = 1,
    all_reduce: str = "one-shot",
    prefill_backend: str = "flash",
    decode_attention: str = DEFAULT_DECODE_ATTENTION,
) -> Llama:
    """A Llama at the spec's shapes on ``device``: seeded random weights, or a local HF
    checkpoint. With ``tp_world_size > 1`` it is sharded with ``apply_tp`` (call inside torchrun);
    random weights are then built shard by shard (``random_shard``), so a model larger than one
    GPU fits across several;
    ``all_reduce`` is "one-shot" (``executor.allreduce``: small messages in one kernel with the
    residual add and RMSNorm, the rest and any GPU where it cannot run over NCCL) or "nccl".
    ``fused_kernels`` (default: on for CUDA) swaps in the fused elementwise kernels, and with
    them ``decode_attention``: "triton" (``executor.decode_attention``, the default) or
    "sdpa" (PyTorch's)."""
    device = torch.device(device)
    default_dtype = torch.get_default_dtype()
    torch.set_default_dtype(dtype)  # build at the target dtype: no float32 copy of 8B weights
    shard_by_block = tp_world_size > 1 and not checkpoint
    try:
        with torch.device("meta" if shard_by_block else device):
            model = Llama(spec)
    finally:
        torch.set_default_dtype(default_dtype)
    if shard_by_block:
        from executor.parallel import random_shard

        random_shard(model, device=device, seed=seed, rank=tp_rank, world_size=tp_world_size)
    elif checkpoint:
        from executor.weights import load_hf_checkpoint

        load_hf_checkpoint(model, checkpoint)
    else:
        init_random_weights(model, seed=seed)
    if tp_world_size > 1:
        from executor.allreduce import OneShotAllReduce
        from executor.parallel import apply_tp

        one_shot = None
        if all_reduce == "one-shot" and device.type == "cuda":
            one_shot = OneShotAllReduce.create(hidden=spec.hidden_size, dtype=dtype)
        apply_tp(model, rank=tp_rank, world_size=tp_world_size, one_shot=one_shot)
    if fused_kernels is None:
        fused_kernels = device.type == "cuda"
    if fused_kernels:
        model.kernels = Kernels.compiled(prefill_backend, decode_attention)
    model.requires_grad_(False)
    return model.eval()


def fill_cache_random(model: Llama, *, seed: int = 0) -> None:
    """Random K/V in every slot (timings on zeros can differ from real data)."""
    generator = torch.Generator(device=model.embed_tokens.weight.device).manual_seed(seed)
    for layer in model.layers:
        cache = layer.attention.kv_cache
        for buffer in (cache.k, cache.v):
            if cache.is_fp8:
                buffer.copy_(
                    torch.randn(
                        buffer.shape,
                        device=buffer.device,
                        generator=generator,
                        dtype=torch.bfloat16,
                    )
                )
            else:
                buffer.normal_(generator=generator)


class DecodeGraphs:
    """One captured decode step per batch bucket. ``step(tokens [B], position)`` returns the
    greedy next tokens ``[B]``; the logits of the last step stay in ``self.logits[bucket]``."""

    def __init__(self, model: Llama, *, use_graphs: bool = True) -> None:
        self.model = model
        self.use_graphs = use_graphs and torch.cuda.is_available()
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}
        self.static_tokens: dict[int, torch.Tensor] = {}
        self.static_pos: dict[int, torch.Tensor] = {}
        self.static_next: dict[int, torch.Tensor] = {}
        self.logits: dict[int, torch.Tensor] = {}
        self.kv_length: dict[int, int] = {}
        self.pool = None

    def bucket(self, batch: int) -> int:
        for size in BUCKETS:
            if size >= batch and size <= self.model.max_batch:
                return size
        if batch <= self.model.max_batch:
            return self.model.max_batch
        raise ValueError(f"batch {batch} exceeds the cache's max_batch {self.model.max_batch}")

    def _run(self, bucket: int) -> None:
        logits = self.model(
            self.static_tokens[bucket],
            self.static_pos[bucket],
            kv_length=self.kv_length.get(bucket),
        )  # [B, 1, V]
        self.logits[bucket] = logits
        self.static_next[bucket] = logits[:, -1].argmax(dim=-1)

    def capture(self, bucket: int, *, position: int = 0, fixed_position: bool = False) -> None:
        """Capture the step of ``bucket`` sequences. ``fixed_position`` bakes the context length
        (``position + 1`` valid keys) into the graph: unmasked flash attention over exactly the
        valid cache, for timing one context; the default graph serves any position."""
        device = self.model.embed_tokens.weight.device
        self.static_tokens[bucket] = torch.zeros(bucket, 1, dtype=torch.long, device=device)
        self.static_pos[bucket] = torch.tensor([position], dtype=torch.long, device=device)
        if fixed_position:
            self.kv_length[bucket] = position + 1
        if not self.use_graphs:
            return
        self.graphs[bucket], self.pool = capture_graph(lambda: self._run(bucket), pool=self.pool)

    def step(self, tokens: torch.Tensor, position: int | torch.Tensor) -> torch.Tensor:
        batch = tokens.shape[0]
        bucket = self.bucket(batch)
        if bucket not in self.static_tokens:
            self.capture(bucket)
        self.static_tokens[bucket][:batch, 0].copy_(tokens)
        self.static_pos[bucket].fill_(position) if isinstance(position, int) else self.static_pos[
            bucket
        ].copy_(position.reshape(1))
        self.replay(bucket)
        return self.static_next[bucket][:batch]

    def replay(self, bucket: int) -> None:
        if self.use_graphs:
            self.graphs[bucket].replay()
        else:
            self._run(bucket)


def capture_graph(fn: Callable[[], object], *, pool=None, warmup: int = 2):
    """Warm ``fn`` up on a side stream (cuBLAS handles, compiled kernels, the allocator), then
    capture one call as a CUDA graph; returns (graph, memory pool)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph, pool=pool):
        fn()
    return graph, graph.pool()


def time_graph(fn: Callable[[], object], *, calls: int = 20, iters: int = 10) -> float:
    """Median seconds of one ``fn()`` when ``calls`` of them replay back to back in a graph:
    the GPU time of short kernels, free of the host's launch cost."""
    graph, _ = capture_graph(lambda: [fn() for _ in range(calls)])
    seconds = median(time_cuda(graph.replay, warmup=2, iters=iters)) / calls
    del graph
    return seconds


def time_cuda(fn: Callable[[], object], *, warmup: int = 3, iters: int = 20) -> list[float]:
    """Seconds of each of ``iters`` calls, timed with CUDA events after ``warmup`` calls."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(iters)]
    for start, end in zip(starts, ends, strict=True):
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return [start.elapsed_time(end) * 1e-3 for start, end in zip(starts, ends, strict=True)]


def median(values: list[float]) -> float:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if len(ordered) % 2:
        return ordered[middle]
    return 0.5 * (ordered[middle - 1] + ordered[middle])


@dataclass(frozen=True)
class StepCost:
    """What one step must move and compute on one GPU (the roofline's two numbers)."""

    weight_bytes: float  # every weight read once (embedding: only the gathered rows)
    kv_bytes: float  # K/V read (decode: the whole context) and written
    flops: float  # GEMMs + attention (causal prefill counts half the score matrix)

    @property
    def bytes(self) -> float:
        return self.weight_bytes + self.kv_bytes


def step_cost(
    spec: ModelSpec,
    *,
    batch: int,
    prompt: int = 0,
    context: int = 0,
    tp: int = 1,
    weight_bytes_per_param: float = 2.0,
    kv_bytes_per_value: float = 2.0,
    lm_head_bytes_per_param: float = 2.0,
) -> StepCost:
    """Per-GPU bytes and FLOPs of a prefill (``prompt`` > 0) or a decode step (``context``),
    from the model's description (``simulator.data.architecture``), as the op table counts them:
    every matrix split by its shard rule (KV heads replicated past tp), routed experts at
    ``num_experts_per_tok`` per token with every expert's weights read, the KV cache as the
    family keeps it."""
    from simulator.data.architecture import architecture_of, copies_per_gpu, per_gpu

    arch = architecture_of(spec)
    widths = arch.widths(tp)
    weight_bytes = arch.norms * 2.0
    per_token_flops = 0.0  # GEMM FLOPs of one token through the stack (not the lm_head)
    lm_head_flops = 0.0
    for linear in arch.linears:
        if not linear.op:
            continue  # the embedding: a gather of a few rows
        k, n = per_gpu(linear, tp, 1, arch.attention)
        elements = float(k * n) * float(copies_per_gpu(linear, 1))
        count = arch.layer_count(linear.layers)
        if linear.op == "lm_head":
            weight_bytes += elements * lm_head_bytes_per_param
            lm_head_flops = 2.0 * float(k * n)
            continue
        per_element = weight_bytes_per_param if linear.quantized else 2.0
        weight_bytes += elements * count * per_element
        routed = spec.num_experts_per_tok if linear.shard == "experts" else 1
        per_token_flops += 2.0 * float(k * n) * routed * count
    layers = arch.layers
    kv_per_token = layers * float(widths.cache) * kv_bytes_per_value
    if prompt:
        tokens = batch * prompt
        gemm_flops = tokens * per_token_flops + batch * lm_head_flops
        # Causal: each sequence computes prompt (prompt + 1) / 2 query-key pairs.
        pairs = prompt * (prompt + 1) / 2
        attention_flops = layers * batch * pairs * float(widths.prefill_pair_flops)
        return StepCost(weight_bytes, tokens * kv_per_token, gemm_flops + attention_flops)
    gemm_flops = batch * (per_token_flops + lm_head_flops)
    # The new token attends to the context and to itself.
    attention_flops = layers * batch * (context + 1) * float(widths.decode_pair_flops)
    kv_bytes = batch * (context + 1) * kv_per_token
    return StepCost(weight_bytes, kv_bytes, gemm_flops + attention_flops)
