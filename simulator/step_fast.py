"""The step model of ONE configuration, fast enough to call once per simulated engine iteration.

``StepModel.step`` evaluates any batch of steps for any number of configurations; that
generality costs ~140 us per call, too slow for a serving simulation that runs 10^5 iterations.
For one configuration the same roofline folds into a few small dense matrices:

- every op's compute seconds at 100 % efficiency, CUDA-core seconds, HBM seconds (already
  divided by the achievable bandwidth), kernel overhead (inside and outside a CUDA graph), host
  time and link seconds are linear in the step features, so one ``[6 x ops, F] @ [F]`` product
  gives all of them;
- the only non-linear parts are the efficiencies (GEMM efficiency vs rows M, attention
  efficiency vs query length, the CUDA-graph cut at 512 tokens) and the ``max`` of compute and
  memory. The efficiencies depend on a few features only (tokens, logits, prefill tokens and
  sequences), so they are cached per distinct value of those.

``FastStep.time(x)`` returns ``(latency_s, stage_s)`` exactly as ``StepModel.step`` does (a test
holds them equal to 1e-9 relative). ``FastStep.run(x0, dx, k)`` times ``k`` consecutive steps whose
features move along a line (a run of pure decode steps: contexts grow by one token per
sequence per step, nothing else changes), which is how the serving simulation skips over
iterations where no request arrives, finishes or changes phase.
"""

from __future__ import annotations

import numpy as np

from .hardware import attention_efficiency, gemm_efficiency
from .ops import EFF_ATTENTION, EFF_COMM, EFF_DECODE_ATTENTION, EFF_GEMM
from .roofline import CUDA_GRAPH_MAX_TOKENS
from .shapes import FEATURES, NUM_FEATURES
from .step import StepModel

__all__ = ["FastStep", "feature_vector", "F"]

# Feature positions, spelled out once for the scheduler's hand-built feature vectors.
F = {name: i for i, name in enumerate(FEATURES)}
_TOKENS, _LOGITS = F["tokens"], F["logits"]
_PREFILL_TOKENS, _PREFILL_SEQS = F["prefill_tokens"], F["prefill_seqs"]


def feature_vector(
    *,
    prefill_tokens: float = 0.0,
    prefill_pairs: float = 0.0,
    prefill_kv: float = 0.0,
    naive_scores: float = 0.0,
    prefill_logits: float = 0.0,
    prefill_seqs: float | None = None,
    decode_tokens: float = 0.0,
    decode_kv: float = 0.0,
    decode_pairs: float = 0.0,
    experts: int = 0,
    experts_per_token: int = 0,
) -> np.ndarray:
    """One step's features ``[F]``, the same numbers ``shapes.step_features`` produces for
    aggregate sums, without its array broadcasting (this is called once per iteration)."""
    tokens = prefill_tokens + decode_tokens
    x = [0.0] * NUM_FEATURES
    x[_TOKENS] = tokens
    x[_LOGITS] = decode_tokens + prefill_logits
    x[_PREFILL_TOKENS] = prefill_tokens
    x[F["prefill_pairs"]] = prefill_pairs
    x[F["prefill_kv"]] = prefill_kv
    x[F["naive_scores"]] = naive_scores
    x[F["decode_tokens"]] = decode_tokens
    x[F["decode_kv"]] = decode_kv
    x[F["decode_pairs"]] = decode_pairs
    x[F["has_tokens"]] = 1.0 if tokens > 0 else 0.0
    x[F["has_prefill"]] = 1.0 if prefill_tokens > 0 else 0.0
    x[F["has_decode"]] = 1.0 if decode_tokens > 0 else 0.0
    x[_PREFILL_SEQS] = prefill_logits if prefill_seqs is None else prefill_seqs
    if experts:
        x[F["moe_touched"]] = 1.0 - (1.0 - experts_per_token / experts) ** tokens
    return np.array(x)


class FastStep:
    """``StepModel.step`` for configuration ``index`` of ``step_model``, one step at a time.

    ``host_overhead=False`` drops the fixed host time of an iteration (scheduling, sampling);
    a draft model's steps run inside the target's iteration and do not pay it again.
    """

    def __init__(self, step_model: StepModel, index: int = 0, *, host_overhead: bool = True):
        table, hardware = step_model.table, step_model.hardware
        eff = hardware.efficiency
        self.valid = bool(step_model.valid[index])
        self.pp = int(step_model.configs.pp[index])
        self.cuda_graphs = bool(step_model.configs.cuda_graphs[index])
        self.experts = step_model.model.num_local_experts
        self.experts_per_token = step_model.model.num_experts_per_tok
        cls = table.eff_class
        comm = cls == EFF_COMM
        keep = (~comm)[:, None]

        def dense(key: str) -> np.ndarray:
            return table.dense(key, index)  # [ops, F]

        kernels = dense("kernels")
        nbytes = dense("bytes")
        memory_eff = np.where(cls == EFF_DECODE_ATTENTION, eff.hbm * eff.decode_attention_hbm,
                              eff.hbm)
        link_bw = table.link_bytes_per_s[index]
        link_latency = table.link_latency_s[index]
        with np.errstate(divide="ignore", invalid="ignore"):
            link = np.where(comm[:, None], kernels * link_latency[:, None]
                            + nbytes / link_bw[:, None], 0.0)
        fixed = dense("fixed_s") if host_overhead else np.zeros_like(kernels)
        self._ops = table.num_ops
        # Stacked so that one product gives everything linear: [6 x ops, F].
        self._matrix = np.concatenate([
            np.where(keep, dense("ideal_s"), 0.0),
            np.where(keep, dense("vector_flops") / hardware.vector_flops_per_s, 0.0),
            np.where(keep, nbytes / (hardware.hbm_bytes_per_s * memory_eff[:, None]), 0.0),
            np.where(keep, kernels * eff.kernel_graph_s, 0.0) + fixed,
            np.where(keep, kernels * eff.kernel_launch_s, 0.0) + fixed,
            link,
        ])
        self._rows = dense("rows")
        self._gemm = cls == EFF_GEMM
        self._attention = cls == EFF_ATTENTION
        self._low_precision = table.low_precision[index]
        self._eff = eff
        self._send = table.names.index("pp_send")
        # Which features the efficiencies read: the cache key of a step.
        self._key_columns = sorted(
            set(np.flatnonzero(np.any(self._rows != 0, axis=0)).tolist())
            | {_TOKENS, _PREFILL_TOKENS, _PREFILL_SEQS})
        self._cache: dict[tuple, tuple[np.ndarray, bool]] = {}

    def _inverse_efficiency(self, x: np.ndarray) -> tuple[np.ndarray, bool]:
        """1 / compute efficiency of every op ``[ops]`` and whether the step runs in a graph."""
        key = tuple(x[self._key_columns].tolist())
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        rows = self._rows @ x
        query_len = x[_PREFILL_TOKENS] / max(x[_PREFILL_SEQS], 1.0)
        compute_eff = np.where(
            self._gemm,
            gemm_efficiency(self._eff, np.maximum(rows, 1.0), low_precision=self._low_precision),
            np.where(self._attention,
                     attention_efficiency(self._eff, np.maximum(query_len, 1.0)),
                     self._eff.attention_efficiency[0]),
        )
        graph = self.cuda_graphs and x[_TOKENS] <= CUDA_GRAPH_MAX_TOKENS
        hit = (1.0 / compute_eff, graph)
        if len(self._cache) > 200_000:  # bounded: mixed steps rarely repeat a key
            self._cache.clear()
        self._cache[key] = hit
        return hit

    def _combine(self, linear: np.ndarray, inverse_eff: np.ndarray, graph: bool):
        """Per-op times from the stacked linear terms ``[6 x ops, ...]``; (latency, stage)."""
        o = self._ops
        ideal, vector, memory = linear[:o], linear[o:2 * o], linear[2 * o:3 * o]
        overhead = linear[3 * o:4 * o] if graph else linear[4 * o:5 * o]
        inverse = inverse_eff.reshape((o,) + (1,) * (linear.ndim - 1))
        compute = ideal * inverse + vector
        op_time = np.maximum(compute, memory) + overhead + linear[5 * o:]
        total = op_time.sum(axis=0)
        if self.pp == 1:
            return total, total
        send = op_time[self._send]
        return total, (total - send) / self.pp + send / (self.pp - 1)

    def time(self, x: np.ndarray) -> tuple[float, float]:
        """(latency_s, stage_s) of one step with features ``x`` ``[F]``."""
        if not self.valid:
            return float("inf"), float("inf")
        inverse_eff, graph = self._inverse_efficiency(x)
        latency, stage = self._combine(self._matrix @ x, inverse_eff, graph)
        return float(latency), float(stage)

    def run(self, x0: np.ndarray, dx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(latency_s, stage_s) arrays ``[k]`` of the steps ``x0 + j dx`` for j = 0..k-1.

        ``dx`` must leave the efficiency inputs unchanged (tokens, logits, prefill shape): a run
        of decode steps only grows the contexts.
        """
        if not self.valid:
            return np.full(k, np.inf), np.full(k, np.inf)
        inverse_eff, graph = self._inverse_efficiency(x0)
        j = np.arange(k, dtype=float)
        linear = (self._matrix @ x0)[:, None] + (self._matrix @ dx)[:, None] * j[None, :]
        return self._combine(linear, inverse_eff, graph)
