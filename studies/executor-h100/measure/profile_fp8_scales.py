"""Where a dynamic-FP8 decode step spends the time static scales do not: Llama-3.1-8B, FP8 W8A8,
a decode step of 4 sequences at context 1024, with static per-tensor scales, dynamic per-token
scales and dynamic per-tensor scales. For each: the step's time as a CUDA-graph replay (median
of CUDA events), then the eager step's kernels by CUDA time (torch.profiler).

    python3 studies/executor-h100/measure/profile_fp8_scales.py > profile.log
"""

from __future__ import annotations

import torch

from executor.points import free_memory, machine_info, measure_point, prepare_model
from executor.profiling import kernel_table
from simulator.data.models import get_model

BATCH, CONTEXT = 4, 1024


def main() -> None:
    spec = get_model("llama-3.1-8b")
    print(machine_info(), flush=True)
    for scaling, granularity in (
        ("static", "per_tensor"),
        ("dynamic", "rowwise"),
        ("dynamic", "per_tensor"),
    ):
        model = prepare_model(spec, weights="fp8", scaling=scaling, granularity=granularity)
        record = measure_point(model, spec, weights="fp8", batch=BATCH, context=CONTEXT)
        print(f"\n== {scaling} {granularity}: graph replay {(record.time_s or 0) * 1e3:.3f} ms")
        model.setup_caches(max_batch=BATCH, max_seq_length=CONTEXT + 16)
        tokens = torch.randint(0, spec.vocab_size, (BATCH, 1), device="cuda")
        position = torch.tensor([CONTEXT], device="cuda")

        def step() -> None:
            model(tokens, position, kv_length=CONTEXT + 1)  # noqa: B023

        print(kernel_table(step, row_limit=14), flush=True)
        model = None
        free_memory()


if __name__ == "__main__":
    main()
