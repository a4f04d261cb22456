"""The serving loop's host overhead per iteration against batch size, with no GPU work.

What ``tune validate --traffic`` spends on the host each iteration, beside the model: the
executor's bookkeeping (blocks, positions, block tables, the batch's tensors) and the
simulator's scheduler deciding the next iteration. Here the model is a stand-in that returns
at once, so what is timed is that host work alone. For each batch of ``B`` running decodes
(plus, in a mixed iteration, one 512-token prompt chunk; in a speculative round, the verify
of 3 drafts per sequence, drafted by prompt lookup so that no model runs) it prints the median
microseconds per iteration of the executor's side, then the scheduler's per iteration over a
whole run, then one JSON line. A GPU run adds launch and synchronization to these (``IterationRecord``'s
``overhead_s`` there). Run: ``python benchmarks/bench_serving_loop.py``.
"""

from __future__ import annotations

import json
import statistics
import time

import torch

from executor.serving_loop import ServingExecutor, Step
from executor.speculative import PromptLookup
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig
from simulator.data.workload import get_workload
from simulator.serving.simulate import simulate

BATCHES = (1, 8, 32, 128, 256)


class _Attention:
    num_kv_heads, head_dim, kv_cache = 1, 1, None


class _Layer:
    def __init__(self) -> None:
        self.attention = _Attention()
        self.attention_norm = torch.nn.LayerNorm(1)


class _StandIn:
    """The model's interface to the executor (one layer of a one-slot cache), returning
    greedy tokens at once."""

    def __init__(self) -> None:
        self.spec = get_model("llama-3.1-8b")
        self.embed_tokens = torch.nn.Embedding(1, 1)
        self.layers = [_Layer()]
        self.kernels = None
        self.rope_cos = torch.zeros(1 << 20, 1)

    def free_caches(self) -> None:
        self.layers[0].attention.kv_cache = None

    def __call__(self, tokens, ragged):
        return torch.zeros(1, len(ragged.sample_rows), 2)


def executor_side(batch: int, mixed: bool, iterations: int = 200,
                  speculative: bool = False) -> float:  # fmt: skip
    """Median seconds of one iteration of ``batch`` decodes (and a chunk, ``mixed``; rounds
    of three drafts each keeping one, ``speculative``)."""
    drafter = PromptLookup(3) if speculative else None
    executor = ServingExecutor(_StandIn(), num_blocks=batch * 300 + 64, block_size=16,
                               max_seq_length=8192, drafter=drafter)  # fmt: skip
    executor(Step([], [(rid, 0, 1000) for rid in range(batch)]))  # every sequence cached
    accepted = [1] * batch if speculative else None
    times = []
    for i in range(iterations):
        chunk = [(10_000 + i, 0, 512)] if mixed else []
        start = time.perf_counter()
        executor(Step(list(range(batch)), chunk, released=[10_000 + i - 1] if i else [],
                       accepted=accepted))  # fmt: skip
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def scheduler_side() -> tuple[float, int]:
    """The scheduler's seconds per iteration over a chat run with an instant clock."""
    model, hardware = get_model("llama-3.1-8b"), load_hardware("h100-sxm")
    workload = get_workload("chat", num_requests=500, rate=20.0)
    count = [0]

    def clock(iteration) -> float:
        count[0] += 1
        return iteration.predicted_s

    start = time.perf_counter()
    simulate(model, hardware, DeploymentConfig(), workload, clock=clock)
    return (time.perf_counter() - start) / count[0], count[0]


def main() -> None:
    rows = []
    for batch in BATCHES:
        decode = executor_side(batch, mixed=False)
        mixed = executor_side(batch, mixed=True)
        round_ = executor_side(batch, mixed=False, iterations=100, speculative=True)
        rows.append({"batch": batch, "decode_only_us": decode * 1e6, "mixed_us": mixed * 1e6,
                     "speculative_round_us": round_ * 1e6})  # fmt: skip
    per_iteration, iterations = scheduler_side()
    print(f"{'batch':>6} {'decode-only':>12} {'with a 512-token chunk':>24} "
          f"{'speculative round':>19}")  # fmt: skip
    for row in rows:
        print(f"{row['batch']:>6} {row['decode_only_us']:>10.0f} us {row['mixed_us']:>21.0f} us "
              f"{row['speculative_round_us']:>16.0f} us")  # fmt: skip
    print(f"scheduler: {per_iteration * 1e6:.0f} us per iteration ({iterations} iterations, chat)")
    print(json.dumps({"benchmark": "serving_loop_host", "executor": rows,
                      "scheduler_us_per_iteration": per_iteration * 1e6}))  # fmt: skip


if __name__ == "__main__":
    main()
