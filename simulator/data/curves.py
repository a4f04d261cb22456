"""The efficiency curves of a GPU, read at any size of work.

The curves are piecewise linear in log-log (log efficiency vs log2 x) and clamped at both ends:
a GEMM of M tokens reaches ``gemm_efficiency(eff, M)`` of the tensor peak. Between two knots
time is then a power law of the work, so it rises from knot to knot without the dip a linear
interpolation makes where efficiency climbs fast (flash attention from 512 to 2048 tokens nearly
quadruples its efficiency per doubling while its time barely grows). The array lookups are
vectorized, so the same call serves one configuration or a whole search space; ``ScalarCurves``
reads the same segments one float at a time, for the serving simulation's steps.
"""

from __future__ import annotations

import bisect
import functools
import math
from typing import Any

import numpy as np

from .specs import Efficiency

__all__ = ["gemm_efficiency", "gemm_tail_s", "attention_efficiency", "ScalarCurves"]


@functools.lru_cache(maxsize=64)
def _log2_knots(xs: tuple[float, ...]) -> np.ndarray:
    return np.log2(np.asarray(xs, dtype=np.float64))


def _interp_log2(x: Any, xs: tuple[float, ...], ys: tuple[float, ...]) -> np.ndarray:
    """Piecewise linear in log2(x) through (xs, ys); np.interp clamps outside the knots."""
    x = np.asarray(x, dtype=np.float64)
    # Below the first knot the curve is flat anyway; the floor keeps log2 away from 0 and negatives.
    log_x = np.log2(np.maximum(x, xs[0]))
    return np.asarray(np.interp(log_x, _log2_knots(xs), np.asarray(ys, dtype=np.float64)))


def _interp_loglog(x: Any, xs: tuple[float, ...], ys: tuple[float, ...]) -> np.ndarray:
    """Piecewise linear in log y vs log2(x) through (xs, ys), clamped outside the knots."""
    return np.exp(_interp_log2(x, xs, tuple(np.log(ys))))


def gemm_efficiency(
    efficiency: Efficiency, tokens: Any, *, low_precision: bool | np.ndarray = False
) -> np.ndarray:
    """Fraction of the tensor peak a GEMM with ``tokens`` rows reaches; any shape in, same out.

    ``low_precision`` (a bool or a boolean array broadcastable with ``tokens``) marks fp8 / int8
    GEMMs, which are derated by ``low_precision_gemm_factor`` relative to their own peak.
    """
    curve = _interp_loglog(tokens, efficiency.gemm_tokens, efficiency.gemm_efficiency)
    derate = np.where(
        np.asarray(low_precision, dtype=bool), efficiency.low_precision_gemm_factor, 1.0
    )
    return np.asarray(curve * derate)


def gemm_tail_s(is_gemm: Any, rows: Any, kernels: Any, efficiency: Efficiency) -> np.ndarray:
    """The fixed ``gemm_tail_s`` of each GEMM kernel with more than one row (a one-token GEMM
    runs as a GEMV without it), added to the memory-bound side of the op; 0 for other ops."""
    multi_row = np.asarray(is_gemm, dtype=bool) & (np.asarray(rows) > 1.0)
    return np.where(multi_row, np.asarray(kernels) * efficiency.gemm_tail_s, 0.0)


def attention_efficiency(efficiency: Efficiency, seq_len: Any) -> np.ndarray:
    """Fraction of the tensor peak a FlashAttention prefill over ``seq_len`` query tokens reaches."""
    return _interp_loglog(seq_len, efficiency.attention_seq, efficiency.attention_efficiency)


class _LogLogLine:
    """``_interp_loglog`` through fixed knots, for one float at a time: the same segments, in
    plain floats (numpy's per-call overhead is most of the cost at one value)."""

    def __init__(self, xs: tuple[float, ...], ys: tuple[float, ...]):
        self._first = xs[0]
        self._log_x = [math.log2(x) for x in xs]
        self._log_y = [math.log(y) for y in ys]

    def __call__(self, x: float) -> float:
        log_x, log_y = self._log_x, self._log_y
        at = math.log2(max(x, self._first))
        if at >= log_x[-1]:
            return math.exp(log_y[-1])
        i = max(bisect.bisect_right(log_x, at) - 1, 0)
        share = (at - log_x[i]) / (log_x[i + 1] - log_x[i])
        return math.exp(log_y[i] + share * (log_y[i + 1] - log_y[i]))


class ScalarCurves:
    """``gemm_efficiency`` and ``attention_efficiency`` of one efficiency, one value at a time
    (the serving simulation asks them for one step at a time)."""

    def __init__(self, efficiency: Efficiency):
        self._gemm = _LogLogLine(efficiency.gemm_tokens, efficiency.gemm_efficiency)
        self._attention = _LogLogLine(efficiency.attention_seq, efficiency.attention_efficiency)
        self._derate = efficiency.low_precision_gemm_factor

    def gemm(self, tokens: float, low_precision: bool = False) -> float:
        return self._gemm(tokens) * (self._derate if low_precision else 1.0)

    def attention(self, seq_len: float) -> float:
        return self._attention(seq_len)
