"""The step model of ONE configuration, fast enough to call once per simulated engine iteration.

``StepModel.step`` evaluates any batch of steps for any number of configurations; that
generality costs ~140 us per call, too slow for a serving simulation that runs 10^5 iterations.
For one configuration the same roofline folds into a few small dense matrices:

- every op's compute seconds at 100 % efficiency, CUDA-core seconds, HBM seconds (already
  divided by the achievable bandwidth) and launch seconds out of a graph, the kernel overhead
  inside a graph plus host time, and link seconds are linear in the step features, so one
  ``[4 x ops + 3, F] @ [F]`` product gives all of them;
- the only non-linear parts are the efficiencies (GEMM efficiency vs rows M, attention
  efficiency vs the work per sequence, the CUDA-graph cut at 512 tokens) and the ``max`` of
  compute, memory and (out of a graph) launching. The efficiencies depend on a few features
  only (tokens, logits, prefill pairs and sequences), so they are cached per distinct value
  of those.

``FastStep.time(x)`` returns ``(latency_s, stage_s)`` exactly as ``StepModel.step`` does (a test
holds them equal to 1e-9 relative). ``FastStep.run(x0, dx, k)`` times ``k`` consecutive steps whose
features move along a line (a run of pure decode steps: contexts grow by one token per
sequence per step, nothing else changes), which is how the serving simulation skips over
iterations where no request arrives, finishes or changes phase.
"""

from __future__ import annotations

import numpy as np

from ..data.curves import ScalarCurves, gemm_tail_s
from .ops import EFF_ATTENTION, EFF_COMM, EFF_GEMM
from .roofline import CUDA_GRAPH_MAX_TOKENS, busy_s, hbm_seconds_per_byte, launch_beyond_graph_s
from .shapes import FEATURES, NUM_FEATURES, attention_length, feature_vector
from .step import StepModel

__all__ = ["FastStep", "F"]

# Feature positions, spelled out once for the scheduler's hand-built feature vectors.
F = {name: i for i, name in enumerate(FEATURES)}
_TOKENS, _LOGITS = F["tokens"], F["logits"]
_PREFILL_TOKENS, _PREFILL_SEQS = F["prefill_tokens"], F["prefill_seqs"]
_PREFILL_PAIRS = F["prefill_pairs"]


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
        link_bw = table.link_bytes_per_s[index]
        link_latency = table.link_latency_s[index]
        with np.errstate(divide="ignore", invalid="ignore"):
            link = np.where(
                comm[:, None], kernels * link_latency[:, None] + nbytes / link_bw[:, None], 0.0
            )
        fixed = dense("fixed_s") if host_overhead else np.zeros_like(kernels)
        ops = table.num_ops
        self._ops = ops
        overhead_graph = np.where(keep, kernels * eff.kernel_graph_s, 0.0) + fixed
        send = table.names.index("pp_send")
        # Stacked so that one product gives everything linear: per-op compute at full
        # efficiency, CUDA-core, HBM and launch seconds (out of a graph, beyond the graph
        # cost) [4 x ops], then the summed overhead inside a graph with the host time, the
        # summed link time and the pp_send link time [3].
        self._matrix = np.concatenate(
            [
                np.where(keep, dense("ideal_s"), 0.0),
                np.where(keep, dense("vector_flops") / hardware.vector_flops_per_s, 0.0),
                np.where(keep, nbytes * hbm_seconds_per_byte(table, hardware)[:, None], 0.0),
                np.where(keep, kernels * launch_beyond_graph_s(eff, self.cuda_graphs), 0.0),
                overhead_graph.sum(axis=0)[None],
                link.sum(axis=0)[None],
                link[send][None],
            ]
        )
        # The direction a run of decode steps moves in: every context grows by one token.
        direction = np.zeros(NUM_FEATURES)
        direction[F["decode_kv"]] = direction[F["decode_pairs"]] = 1.0
        self._matrix_direction = self._matrix @ direction
        self._eff = eff
        # GEMMs grouped by the features their row count M reads (most read ``tokens``; the
        # lm_head reads ``logits``): one efficiency lookup per group per step.
        rows = dense("rows")
        low_precision = table.low_precision[index]
        groups: dict[tuple, list[int]] = {}
        for j in np.flatnonzero(cls == EFF_GEMM).tolist():
            terms = tuple((int(f), float(rows[j, f])) for f in np.flatnonzero(rows[j]))
            groups.setdefault((terms, bool(low_precision[j])), []).append(j)
        self._groups = [
            (terms, lowp, np.array(members)) for (terms, lowp), members in groups.items()
        ]
        self._is_gemm = cls == EFF_GEMM
        self._kernels = kernels  # [ops, F]: GEMM launches set their fixed tail (gemm_tail_s)
        self._attention_ops = np.flatnonzero(cls == EFF_ATTENTION)
        self._inverse_base = np.full(ops, 1.0 / eff.decode_attention_compute)
        self._curves = ScalarCurves(eff)
        self._gemm_cache: dict[tuple[float, bool], float] = {}
        self._attention_cache: dict[float, float] = {}
        self._key_columns = sorted(
            {f for terms, _, _ in self._groups for f, _ in terms}
            | set(np.flatnonzero(kernels[self._is_gemm].any(axis=0)).tolist())
            | {_TOKENS, _PREFILL_PAIRS, _PREFILL_SEQS}
        )
        self._cache: dict[tuple, tuple[np.ndarray, bool, np.ndarray]] = {}
        self._segments: dict[tuple, tuple[list[float], list[float], list[float]]] = {}
        self._segment_arrays: dict[tuple, tuple[np.ndarray, ...]] = {}

    def _gemm_efficiency(self, rows: float, low_precision: bool) -> float:
        key = (rows, low_precision)
        value = self._gemm_cache.get(key)
        if value is None:
            value = self._curves.gemm(max(rows, 1.0), low_precision)
            self._gemm_cache[key] = value
        return value

    def _attention_efficiency(self, query_len: float) -> float:
        value = self._attention_cache.get(query_len)
        if value is None:
            value = self._curves.attention(max(query_len, 1.0))
            self._attention_cache[query_len] = value
        return value

    def _inverse_efficiency(self, x) -> tuple[np.ndarray, bool, np.ndarray]:
        """1 / compute efficiency of every op ``[ops]``, whether the step runs in a graph, and
        the GEMM tails ``[ops]`` (seconds added to each op's memory-bound side)."""
        key = tuple([x[i] for i in self._key_columns])
        hit = self._cache.get(key)
        if hit is not None:
            return hit
        inverse = self._inverse_base.copy()
        rows_of = np.zeros(self._ops)
        for terms, low_precision, members in self._groups:
            rows = 0.0
            for feature, coefficient in terms:
                rows += coefficient * x[feature]
            inverse[members] = 1.0 / self._gemm_efficiency(rows, low_precision)
            rows_of[members] = rows
        tail = gemm_tail_s(self._is_gemm, rows_of, self._kernels @ np.asarray(x), self._eff)
        if self._attention_ops.size:
            query_len = float(attention_length(x[_PREFILL_PAIRS], x[_PREFILL_SEQS]))
            inverse[self._attention_ops] = 1.0 / self._attention_efficiency(query_len)
        graph = bool(self.cuda_graphs and x[_TOKENS] <= CUDA_GRAPH_MAX_TOKENS)
        hit = (inverse, graph, tail)
        if len(self._cache) > 100_000:  # bounded: mixed steps rarely repeat a key
            self._cache.clear()
        self._cache[key] = hit
        return hit

    def _combine(self, linear: np.ndarray, inverse_eff: np.ndarray, graph: bool, tail: np.ndarray):
        """(latency, stage) from the stacked linear terms ``[4 x ops + 3, ...]``."""
        o = self._ops
        inverse = inverse_eff if linear.ndim == 1 else inverse_eff[:, None]
        compute = linear[:o] * inverse + linear[o : 2 * o]
        memory = linear[2 * o : 3 * o] + (tail if linear.ndim == 1 else tail[:, None])
        total = busy_s(compute, memory, linear[3 * o : 4 * o], graph).sum(axis=0)
        total = total + linear[4 * o] + linear[4 * o + 1]
        if self.pp == 1:
            return total, total
        send = linear[4 * o + 2]
        return total, (total - send) / self.pp + send / (self.pp - 1)

    def time(self, x: np.ndarray) -> tuple[float, float]:
        """(latency_s, stage_s) of one step with features ``x`` ``[F]``."""
        if not self.valid:
            return float("inf"), float("inf")
        inverse_eff, graph, tail = self._inverse_efficiency(x)
        latency, stage = self._combine(self._matrix @ x, inverse_eff, graph, tail)
        return float(latency), float(stage)

    def decode_segments(
        self, x_base: np.ndarray, query: int = 1
    ) -> tuple[list[float], list[float], list[float]]:
        """A decode step's latency as a piecewise-linear function of its context sum C.

        ``x_base`` is a decode-only step with no context (decode_kv = decode_pairs = 0); the
        step at context C has decode_kv = C and decode_pairs = ``query`` x C (``query`` tokens
        per sequence, g + 1 for a speculative verify). Each op's time is the larger of two
        lines in C, so the total is linear between the points where an op changes bound.
        Returns (breaks, intercepts, slopes): on ``breaks[i-1] <= C < breaks[i]`` the latency
        is ``intercepts[i] + slopes[i] x C``. Pipeline parallelism is not folded in.
        """
        key = (query, *x_base.tolist())
        hit = self._segments.get(key)
        if hit is not None:
            return hit
        inverse_eff, graph, tail = self._inverse_efficiency(x_base)
        o = self._ops
        direction = np.zeros(NUM_FEATURES)
        direction[F["decode_kv"]], direction[F["decode_pairs"]] = 1.0, float(query)
        base, slope = self._matrix @ x_base, self._matrix @ direction
        # Each op follows the highest of its lines in C: compute, memory and, out of a graph,
        # launching (flat in C), as ``roofline.busy_s`` takes them. The total is linear
        # between the contexts where any two cross.
        lines = [
            (base[:o] * inverse_eff + base[o : 2 * o], slope[:o] * inverse_eff + slope[o : 2 * o]),
            (base[2 * o : 3 * o] + tail, slope[2 * o : 3 * o]),
        ]
        if not graph:
            lines.append((base[3 * o : 4 * o], slope[3 * o : 4 * o]))
        fixed0 = base[4 * o] + base[4 * o + 1]
        fixed1 = slope[4 * o] + slope[4 * o + 1]
        crossings = []
        with np.errstate(divide="ignore", invalid="ignore"):
            for i, (a0, a1) in enumerate(lines):
                for b0, b1 in lines[i + 1 :]:
                    crossings.append((b0 - a0) / (a1 - b1))
        crossing = np.concatenate(crossings)
        breaks = sorted(set(crossing[np.isfinite(crossing) & (crossing > 0)].tolist()))
        probes = [0.0] + [b for b in breaks]
        intercepts0 = np.stack([line[0] for line in lines])  # [lines, ops]
        slopes1 = np.stack([line[1] for line in lines])
        columns = np.arange(o)
        intercepts, slopes = [], []
        for i, start in enumerate(probes):
            # A context inside segment i decides which line each op follows there.
            end = breaks[i] if i < len(breaks) else start * 2 + 1.0
            probe = (start + end) / 2
            top = np.argmax(intercepts0 + slopes1 * probe, axis=0)
            intercepts.append(float(intercepts0[top, columns].sum() + fixed0))
            slopes.append(float(slopes1[top, columns].sum() + fixed1))
        hit = (breaks, intercepts, slopes)
        self._segments[key] = hit
        return hit

    def decode_latencies(
        self,
        batch: float,
        contexts: np.ndarray,
        k: int = 1,
        *,
        query: int = 1,
        experts: int = 0,
        experts_per_token: int = 0,
    ) -> np.ndarray:
        """For each context sum in ``contexts``: the total latency of ``k`` decode steps of
        ``batch`` sequences with ``query`` tokens each, starting at that context and growing
        by ``batch`` tokens per step (k = 1: one step; k = g: a drafter's steps)."""
        key = (batch, query, experts, experts_per_token)
        arrays = self._segment_arrays.get(key)
        if arrays is None:
            x_base = feature_vector(
                decode_tokens=batch * query, experts=experts, experts_per_token=experts_per_token
            )
            breaks, intercepts, slopes = self.decode_segments(x_base, query)
            arrays = (np.asarray(breaks), np.asarray(intercepts), np.asarray(slopes),
                      np.append(np.asarray(breaks), np.inf))  # fmt: skip
            self._segment_arrays[key] = arrays
        breaks_a, intercepts_a, slopes_a, bounds_a = arrays
        contexts = np.asarray(contexts, dtype=float)
        i = np.searchsorted(breaks_a, contexts, side="right")
        alpha, beta = intercepts_a[i], slopes_a[i]
        total = k * (alpha + beta * contexts) + beta * batch * k * (k - 1) / 2
        if breaks_a.size:  # runs that cross a break: step by step
            for j in np.flatnonzero(contexts + batch * (k - 1) >= bounds_a[i]).tolist():
                steps = contexts[j] + batch * np.arange(k)
                at = np.searchsorted(breaks_a, steps, side="right")
                total[j] = float((intercepts_a[at] + slopes_a[at] * steps).sum())
        return total

    def decode_steps(
        self,
        batch: float,
        contexts: np.ndarray,
        *,
        query: int = 1,
        experts: int = 0,
        experts_per_token: int = 0,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(latency_s, stage_s) arrays of decode steps of ``batch`` sequences with ``query``
        tokens each, one step per context sum in ``contexts`` (a speculative run's rounds,
        whose contexts grow by the tokens each round accepted)."""
        contexts = np.asarray(contexts, dtype=float)
        if not self.valid:
            return np.full(contexts.shape, np.inf), np.full(contexts.shape, np.inf)
        x0 = feature_vector(
            decode_tokens=batch * query, experts=experts, experts_per_token=experts_per_token
        )
        inverse_eff, graph, tail = self._inverse_efficiency(x0)
        direction = np.zeros(NUM_FEATURES)
        direction[F["decode_kv"]], direction[F["decode_pairs"]] = 1.0, float(query)
        linear = (self._matrix @ x0)[:, None] + (self._matrix @ direction)[:, None] * contexts
        return self._combine(linear, inverse_eff, graph, tail)

    def run_decode(self, x0: np.ndarray, growth: float, k: int) -> tuple[np.ndarray, np.ndarray]:
        """``run`` along the decode direction: decode_kv and decode_pairs grow by ``growth``
        per step (the number of sequences, for one query token each)."""
        if not self.valid:
            return np.full(k, np.inf), np.full(k, np.inf)
        inverse_eff, graph, tail = self._inverse_efficiency(x0)
        j = np.arange(k, dtype=float)
        linear = (self._matrix @ x0)[:, None] + (growth * self._matrix_direction)[:, None] * j
        return self._combine(linear, inverse_eff, graph, tail)

    def run(self, x0: np.ndarray, dx: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
        """(latency_s, stage_s) arrays ``[k]`` of the steps ``x0 + j dx`` for j = 0..k-1.

        ``dx`` must leave the efficiency inputs unchanged (tokens, logits, prefill shape): a run
        of decode steps only grows the contexts.
        """
        if not self.valid:
            return np.full(k, np.inf), np.full(k, np.inf)
        inverse_eff, graph, tail = self._inverse_efficiency(x0)
        j = np.arange(k, dtype=float)
        linear = (self._matrix @ x0)[:, None] + (self._matrix @ dx)[:, None] * j[None, :]
        return self._combine(linear, inverse_eff, graph, tail)
