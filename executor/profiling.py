"""Kernel-by-kernel profiles of the executor's steps (``executor.bench --suite profile``)."""

from __future__ import annotations

import torch

from executor.fused import DEFAULT_DECODE_ATTENTION
from executor.model_bench import log
from executor.points import free_memory, prepare_model
from simulator.data.specs import ModelSpec

__all__ = ["profile_steps", "kernel_table"]


def kernel_table(run, *, row_limit: int = 18) -> str:
    """The CUDA kernels of one call of ``run`` after three warm-up calls, by total CUDA time
    (torch.profiler's table)."""
    from torch.profiler import ProfilerActivity, profile

    for _ in range(3):
        run()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    return prof.key_averages().table(
        sort_by="cuda_time_total", row_limit=row_limit, max_name_column_width=70
    )


def profile_steps(
    spec: ModelSpec,
    *,
    prompt: int,
    context: int = 1024,
    tp_rank: int = 0,
    tp_world_size: int = 1,
    all_reduce: str = "one-shot",
    decode_attention: str = DEFAULT_DECODE_ATTENTION,
) -> None:
    """Where the time goes, kernel by kernel (torch.profiler, CUDA time): a bf16 prefill of
    ``prompt`` tokens, then a batch-1 decode step at ``context`` in bf16 and in FP8 (run
    eagerly: the kernels' own times, without the launch gaps a graph removes). Under torchrun
    every rank runs the steps (they meet in the all-reduces) and rank 0 prints."""

    def report(title: str, run) -> None:
        table = kernel_table(run)
        if tp_rank == 0:
            log(f"{title}, TP {tp_world_size}, decode attention {decode_attention}")
            log(table)

    for weights in ("bf16", "fp8"):
        model = prepare_model(
            spec,
            weights=weights,
            tp_rank=tp_rank,
            tp_world_size=tp_world_size,
            all_reduce=all_reduce,
            decode_attention=decode_attention,
        )
        if weights == "bf16":
            model.setup_caches(max_batch=1, max_seq_length=prompt + 16)
            tokens = torch.randint(0, spec.vocab_size, (1, prompt), device="cuda")
            positions = torch.arange(prompt, device="cuda")
            report(
                f"bf16 prefill of {prompt} tokens",
                lambda: model(tokens, positions, last_token_only=True),  # noqa: B023
            )
        model.setup_caches(max_batch=1, max_seq_length=context + 16)
        token = torch.randint(0, spec.vocab_size, (1, 1), device="cuda")
        position = torch.tensor([context], device="cuda")
        report(
            f"{weights} decode step, batch 1, context {context}",
            lambda: model(token, position, kv_length=context + 1),  # noqa: B023
        )
        model = None  # free the weights before the next dtype's model is built
        free_memory()
