"""The operator table as data: per-op coefficients that are linear in the step features.

``ops.py`` fills it (compute and element-wise kernels), ``comm.py`` adds the collectives, and
``roofline.py`` turns it into time. Keeping the structure apart from the counting keeps each of
those files about one thing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .shapes import FEATURES, NUM_FEATURES

__all__ = [
    "OpTable",
    "OpBuilder",
    "scale_terms",
    "BF16_BYTES",
    "EFF_NONE",
    "EFF_GEMM",
    "EFF_ATTENTION",
    "EFF_DECODE_ATTENTION",
    "EFF_COMM",
]

# Efficiency class of an op: which curve sets its compute (or link) efficiency.
EFF_NONE = 0  # element-wise: memory traffic and CUDA-core FLOPs only
EFF_GEMM = 1  # tensor-core GEMM: efficiency vs rows M
EFF_ATTENTION = 2  # prefill attention: efficiency vs query length
EFF_DECODE_ATTENTION = 3  # paged decode attention: HBM-bound, own bandwidth derate
EFF_COMM = 4  # collective over the scale-up link or the network

_F = {name: i for i, name in enumerate(FEATURES)}
BF16_BYTES = 2.0  # activations between kernels, router, embedding and lm_head stay bf16
_TENSORS = ("flops", "ideal_s", "vector_flops", "bytes", "kernels", "rows", "fixed_s")


@dataclass(frozen=True)
class OpTable:
    """Per-op coefficients, linear in the step features, plus per-op attributes ``[N, ops]``.

    ``terms[key][op]`` lists ``(feature_index, coefficient)`` pairs (coefficient: an ``[N]``
    array or a scalar): the sparse form ``evaluate`` uses, so 10^5 configurations cost a few
    hundred array operations. ``dense(key)`` gives the same as a tensor ``[N, ops, features]``.
    Keys: flops (FLOPs performed), ideal_s (seconds at 100 % of each op's tensor peak),
    vector_flops (CUDA-core FLOPs: dequantization, element-wise math), bytes (HBM bytes; for
    communication ops, bytes on the link per GPU), kernels (launches; for communication ops,
    collective calls), rows (GEMM rows M, which set the GEMM efficiency), fixed_s (host time).
    """

    names: tuple[str, ...]
    kinds: tuple[str, ...]  # gemm | attention | elementwise | communication | other
    eff_class: np.ndarray  # [ops]
    size: int  # N configurations
    terms: dict[str, list[list[tuple[int, np.ndarray | float]]]]
    low_precision: np.ndarray  # [N, ops] fp8/int8 tensor-core GEMM
    link_bytes_per_s: np.ndarray  # [N, ops] achievable link bandwidth (communication ops)
    link_latency_s: np.ndarray  # [N, ops] latency of one call (communication ops)

    @property
    def num_ops(self) -> int:
        return len(self.names)

    def dense(self, key: str, index: int | None = None) -> np.ndarray:
        """Coefficients as ``[N, ops, features]`` (or ``[ops, features]`` for one config)."""
        n = 1 if index is None and self.size == 1 else self.size
        out = np.zeros((n, self.num_ops, NUM_FEATURES))
        for j, op_terms in enumerate(self.terms[key]):
            for feature, value in op_terms:
                out[:, j, feature] += np.broadcast_to(value, (self.size,))[:n]
        if index is not None:
            full = np.zeros((self.num_ops, NUM_FEATURES))
            for j, op_terms in enumerate(self.terms[key]):
                for feature, value in op_terms:
                    full[j, feature] += float(np.broadcast_to(value, (self.size,))[index])
            return full
        return out

    def apply(self, key: str, features: np.ndarray) -> np.ndarray:
        """Work of each op on each step: ``features`` ``[N or S, F]`` -> ``[N or S, ops]``."""
        rows = features.shape[0]
        out = np.zeros((rows, self.num_ops))
        for j, op_terms in enumerate(self.terms[key]):
            for feature, value in op_terms:
                out[:, j] += value * features[:, feature]
        return out


class OpBuilder:
    """Collects ops; each coefficient is ``{feature: [N] array}`` (missing features are 0)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.rows: list[dict] = []

    def add(
        self,
        name: str,
        kind: str,
        eff_class: int,
        *,
        flops=None,
        ideal_s=None,
        vector_flops=None,
        bytes=None,
        kernels=None,
        rows=None,
        fixed_s=None,
        low_precision=False,
        link_bytes_per_s=np.inf,
        link_latency_s=0.0,
    ) -> None:
        self.rows.append(
            dict(
                name=name,
                kind=kind,
                eff_class=eff_class,
                coef={
                    "flops": flops,
                    "ideal_s": ideal_s,
                    "vector_flops": vector_flops,
                    "bytes": bytes,
                    "kernels": kernels,
                    "rows": rows,
                    "fixed_s": fixed_s,
                },
                low_precision=low_precision,
                link_bytes_per_s=link_bytes_per_s,
                link_latency_s=link_latency_s,
            )
        )

    def build(self) -> OpTable:
        n = self.size
        terms: dict[str, list[list[tuple[int, np.ndarray | float]]]] = {k: [] for k in _TENSORS}
        for row in self.rows:
            for key in _TENSORS:
                op_terms = []
                for feature, value in (row["coef"][key] or {}).items():
                    value = np.asarray(value, dtype=float)
                    if not np.any(value):
                        continue  # a zero coefficient costs nothing to skip
                    op_terms.append((_F[feature], value if value.ndim else float(value)))
                terms[key].append(op_terms)
        per_op = {
            key: np.stack(
                [np.broadcast_to(np.asarray(r[key], dtype=float), (n,)) for r in self.rows], axis=1
            )
            for key in ("low_precision", "link_bytes_per_s", "link_latency_s")
        }
        return OpTable(
            names=tuple(r["name"] for r in self.rows),
            kinds=tuple(r["kind"] for r in self.rows),
            eff_class=np.array([r["eff_class"] for r in self.rows]),
            size=n,
            terms=terms,
            low_precision=per_op["low_precision"].astype(bool),
            link_bytes_per_s=per_op["link_bytes_per_s"],
            link_latency_s=per_op["link_latency_s"],
        )


def scale_terms(terms: dict, factor) -> dict:
    return {feature: value * factor for feature, value in terms.items()}
