"""Roofline: turn operator counts into time, and say what bounds each operator.

For one operator on one GPU::

    compute_s  = flops / (peak[dtype] * eff_c(op, rows)) + cuda_core_flops / vector_peak
    memory_s   = bytes / (hbm_bw * eff_m) + kernels * t_tail   (GEMMs of more than one row)
    in a CUDA graph:  time_s = max(compute_s, memory_s) + kernels * t_graph + fixed host time
    launched eagerly: time_s = max(compute_s, memory_s, kernels * (t_launch - t_graph))
                               + kernels * t_graph + fixed host time
    comm time  = calls * latency + link_bytes / (link_bw * eff_link)

Out of a graph the host launches each kernel (``t_launch``) while the GPU runs the ones before
it, so launching costs time only where it outruns the GPU: an op of short kernels is launch
bound, a long GEMM hides its launch. Each kernel boundary still costs ``t_graph`` on the GPU.
(Adding the launches on top instead overpredicts a 1024-token prefill of Llama-3.1-8B on an H100
by about 4 ms, 17 %.) ``overhead_s`` is what an op takes beyond ``max(compute_s, memory_s)``.

``t_tail`` (``gemm_tail_s``) is a library GEMM's fixed ramp-up and tail: measured, it is why a
small TP shard's GEMM reads its weights at well under the HBM rate. A one-token GEMM runs as a
GEMV without it.

The bound of an op is whichever of compute / memory / overhead is largest (communication for
collectives). Everything is numpy over ``[..., ops]``: one call evaluates one step of one
configuration or a step for each of 10^5 configurations.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..data.curves import attention_efficiency, gemm_efficiency, gemm_tail_s
from ..data.specs import Efficiency, HardwareSpec
from .ops import (
    EFF_ATTENTION,
    EFF_COMM,
    EFF_DECODE_ATTENTION,
    EFF_GEMM,
    OpTable,
)
from .shapes import FEATURES, attention_length

__all__ = [
    "busy_s",
    "hbm_seconds_per_byte",
    "OpTimes",
    "evaluate",
    "BOUNDS",
    "CUDA_GRAPH_MAX_TOKENS",
    "launch_beyond_graph_s",
]

BOUNDS = ("compute", "memory", "communication", "overhead")
# Engines capture CUDA graphs for steps up to this many tokens (vLLM's default capture limit);
# larger steps launch their kernels from the host.
CUDA_GRAPH_MAX_TOKENS = 512

_TOKENS = FEATURES.index("tokens")
_PREFILL_PAIRS = FEATURES.index("prefill_pairs")
_PREFILL_SEQS = FEATURES.index("prefill_seqs")


def launch_beyond_graph_s(eff: Efficiency, graphs: np.ndarray | bool = True) -> np.ndarray:
    """What launching a kernel from the host costs beyond its cost inside a CUDA graph: a bare
    launch where the engine uses graphs (a step too large for one), PyTorch's eager dispatch
    per kernel where it uses none (``eager_kernel_s``, when measured)."""
    eager = eff.kernel_launch_s if eff.eager_kernel_s is None else eff.eager_kernel_s
    launch = np.where(graphs, eff.kernel_launch_s, eager)
    return np.maximum(launch - eff.kernel_graph_s, 0.0)


def busy_s(compute_s, memory_s, launch_s, in_graph):
    """The roofline, once for every caller: an op takes the longer of its math and its bytes;
    launched from the host (out of a graph), the launches are a floor, since they overlap the
    GPU's work rather than adding to it."""
    busy = np.maximum(compute_s, memory_s)
    return np.where(in_graph, busy, np.maximum(busy, launch_s))


def hbm_seconds_per_byte(table: OpTable, hardware: HardwareSpec) -> np.ndarray:
    """Per op ``[ops]``: seconds per HBM byte (decode attention streams the KV cache at its own
    measured fraction of the achievable bandwidth)."""
    eff = hardware.efficiency
    memory_eff = np.where(
        table.eff_class == EFF_DECODE_ATTENTION, eff.hbm * eff.decode_attention_hbm, eff.hbm
    )
    return 1.0 / (hardware.hbm_bytes_per_s * memory_eff)


@dataclass(frozen=True)
class OpTimes:
    """Per-op results ``[..., ops]`` of evaluating an OpTable on step features."""

    flops: np.ndarray
    bytes: np.ndarray  # HBM bytes; link bytes per GPU for communication ops
    compute_s: np.ndarray
    memory_s: np.ndarray
    communication_s: np.ndarray
    overhead_s: np.ndarray
    time_s: np.ndarray
    bound: np.ndarray  # index into BOUNDS
    kernels: np.ndarray

    @property
    def total_s(self) -> np.ndarray:
        return self.time_s.sum(axis=-1)


def evaluate(
    table: OpTable,
    hardware: HardwareSpec,
    features: np.ndarray,
    *,
    cuda_graphs: np.ndarray | bool = True,
) -> OpTimes:
    """Time every op of ``table`` on the steps ``features``.

    Shapes: table tensors are ``[N, ops, F]``; ``features`` is ``[N, F]`` (one step per config)
    or, when N == 1, ``[S, F]`` (S steps of one config). Results are ``[N or S, ops]``.
    """
    eff = hardware.efficiency
    x = np.asarray(features, dtype=float)
    if x.ndim == 1:
        x = x[None, :]
    if x.shape[0] == 1 and table.size > 1:
        x = np.broadcast_to(x, (table.size, x.shape[1]))  # one step shape for every config

    flops = table.apply("flops", x)
    ideal = table.apply("ideal_s", x)
    vector = table.apply("vector_flops", x)
    nbytes = table.apply("bytes", x)
    kernels = table.apply("kernels", x)
    rows = table.apply("rows", x)
    fixed = table.apply("fixed_s", x)

    cls = table.eff_class[None, :]
    tokens = x[:, _TOKENS][:, None]
    query_len = attention_length(x[:, _PREFILL_PAIRS], x[:, _PREFILL_SEQS])[:, None]
    compute_eff = np.where(
        cls == EFF_GEMM,
        gemm_efficiency(eff, np.maximum(rows, 1.0), low_precision=table.low_precision),
        np.where(
            cls == EFF_ATTENTION,
            attention_efficiency(eff, np.maximum(query_len, 1.0)),
            eff.decode_attention_compute,
        ),
    )
    with np.errstate(divide="ignore", invalid="ignore"):
        compute_s = (
            np.where(ideal > 0, ideal / compute_eff, 0.0) + vector / hardware.vector_flops_per_s
        )
        memory_s = nbytes * hbm_seconds_per_byte(table, hardware) + gemm_tail_s(
            cls == EFF_GEMM, rows, kernels, eff
        )
        comm = cls == EFF_COMM
        communication_s = np.where(
            comm, kernels * table.link_latency_s + nbytes / table.link_bytes_per_s, 0.0
        )

    graphs = np.asarray(cuda_graphs, dtype=bool)
    graphs = graphs[:, None] if graphs.ndim else graphs
    in_graph = graphs & (tokens <= CUDA_GRAPH_MAX_TOKENS)
    compute_s = np.where(comm, 0.0, compute_s)
    memory_s = np.where(comm, 0.0, memory_s)
    launch_floor_s = np.where(in_graph, 0.0, kernels * launch_beyond_graph_s(eff, graphs))
    working_s = busy_s(compute_s, memory_s, launch_floor_s, in_graph)
    overhead_s = (
        np.where(comm, 0.0, kernels * eff.kernel_graph_s + working_s)
        - np.maximum(compute_s, memory_s)
        + fixed
    )
    time_s = np.maximum(compute_s, memory_s) + overhead_s + communication_s

    # An op is overhead bound when its kernel costs (launches out of a graph) exceed its work.
    launching_s = np.where(comm, 0.0, kernels * eff.kernel_graph_s + launch_floor_s) + fixed
    stacked = np.stack([compute_s, memory_s, communication_s, launching_s], axis=-1)
    bound = np.argmax(stacked, axis=-1)
    return OpTimes(
        flops=flops + vector,
        bytes=nbytes,
        compute_s=compute_s,
        memory_s=memory_s,
        communication_s=communication_s,
        overhead_s=overhead_s,
        time_s=time_s,
        bound=bound,
        kernels=kernels,
    )
