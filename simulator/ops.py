"""The operator table: what each kernel of a Llama step costs, on one GPU, for N configurations.

Each operator's FLOPs, HBM bytes, kernel launches (or collective calls) and GEMM row count are
*linear in the step features* of ``shapes.py``; the coefficients depend on the model and the
configuration (tp, pp, cp, ep, dtypes). So the table is a set of tensors ``[N, ops, features]``
and the work of any batch of steps is one matrix product. This file only counts; ``roofline.py``
turns counts into time.

What is counted (per GPU; the op rows sum over all layers, i.e. the latency path through every
pipeline stage):

- Linears: ``2 M K N`` FLOPs; bytes = weights once per step (``has_tokens``) + input + output.
  Quantized weights shrink the weight bytes (int4 carries one bf16 scale per group); W8A8 halves
  the input bytes and runs at the fp8/int8 peak; weight-only schemes compute at the bf16 peak and
  pay a dequantization on CUDA cores per 64-row tile of M; INT8 W8A8 keeps
  ``int8_outlier_fraction`` of the input channels in a bf16 side GEMM.
- Attention: causal prefill computes ``4 h d`` FLOPs per query-key pair (the triangle, not the
  square); FlashAttention reads Q, K/V and writes O once from HBM (its K/V re-reads per query
  tile hit L2); naive attention also writes and re-reads the ``h x q x k`` score matrix (four
  passes). Decode attention reads every cached K/V token of every sequence. KV heads replicate
  when tp exceeds them (``ceil``).
- MoE: the router, a grouped GEMM over the routed token-expert pairs (weights of the experts that
  receive at least one token), the shared expert, and the all-to-all dispatch/combine when ep > 1.
- The embedding is a gather (no FLOPs); the lm_head runs only for rows that need logits (the
  last prompt token of a prefill, every decode token); sampling reads the logits.
- Communication: TP all-reduce after attention and after the MLP (and for the vocab-parallel
  embedding), a logits gather, PP point-to-point per stage boundary, EP all-to-all, and the
  context-parallel K/V ring exchange. Bytes are per GPU on the link (ring all-reduce moves
  ``2 (n - 1) / n`` of the message); calls carry the latency term.
- Element-wise kernels (fused add+RMSNorm, RoPE, KV-cache write, SiLU-and-mul, dynamic
  activation quantization) are memory traffic plus a launch each.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .configs import ConfigArrays
from .shapes import FEATURES, NUM_FEATURES
from .specs import HardwareSpec, ModelSpec

__all__ = [
    "OpTable",
    "build_op_table",
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
_BF16_BYTES = 2.0  # activations between kernels, router, embedding and lm_head stay bf16
_DEQUANT_TILE_ROWS = 64.0  # rows of M per weight dequantization in weight-only GEMM kernels
_DEQUANT_FLOPS = {
    2: 2.0,
    3: 2.0,
    4: 4.0,
}  # per weight element: fp8/int8 convert+scale; int4 unpack too


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


class _Builder:
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


def _scale(terms: dict, factor) -> dict:
    return {feature: value * factor for feature, value in terms.items()}


def build_op_table(model: ModelSpec, hardware: HardwareSpec, configs: ConfigArrays) -> OpTable:
    """Count every operator of one step for each configuration (see the module docstring)."""
    eff = hardware.efficiency
    tp, cp, ep = configs.tp, configs.cp, configs.ep
    wb = configs.weight_bytes_per_element
    kvb = configs.kv_bytes_per_element
    lowp = configs.low_precision_compute
    in_bytes = np.where(lowp, 1.0, _BF16_BYTES)  # W8A8 GEMMs read quantized activations
    peak = configs.compute_peak(hardware)
    peak_bf16 = hardware.peak("bf16")
    outlier = np.where(configs.compute_code == 3, configs.int8_outlier_fraction, 0.0)
    dequant = np.select(
        [configs.weight_only & (configs.weight_code == c) for c in _DEQUANT_FLOPS],
        list(_DEQUANT_FLOPS.values()),
        0.0,
    )
    dynamic = lowp & configs.dynamic_scaling

    layers = model.num_hidden_layers
    dense_layers, moe_layers = model.num_dense_layers, model.num_moe_layers
    hidden, head_dim, vocab = model.hidden_size, model.head_dim, model.vocab_size
    heads_per_gpu = model.num_attention_heads / tp
    kv_heads_per_gpu = np.maximum(model.num_key_value_heads / tp, 1.0)  # replicated past tp > K
    q_width = heads_per_gpu * head_dim
    kv_width = kv_heads_per_gpu * head_dim
    ffn_per_gpu = model.intermediate_size / tp

    # Tokens this GPU pushes through its linears: context parallelism splits prefill tokens.
    local_tokens = {"tokens": 1.0, "prefill_tokens": -(1.0 - 1.0 / cp)}
    once = {"has_tokens": 1.0}
    b = _Builder(len(configs))

    def gemm(
        name: str, k, n, count, *, rows=local_tokens, quantized=True, weight_fraction=once
    ) -> None:
        """A linear of ``rows x k`` by ``k x n`` repeated ``count`` times per step."""
        weight_bytes = wb if quantized else _BF16_BYTES
        act_in = in_bytes if quantized else _BF16_BYTES
        op_peak = peak if quantized else peak_bf16
        side = outlier if quantized else 0.0  # bf16 side GEMM over the outlier channels
        flops = _scale(rows, 2.0 * k * n * count)
        side_flops = _scale(rows, 2.0 * k * side * n * count)
        b.add(
            name,
            "gemm",
            EFF_GEMM,
            flops={f: flops[f] + side_flops[f] for f in rows},
            ideal_s={f: flops[f] / op_peak + side_flops[f] / peak_bf16 for f in rows},
            vector_flops={
                **_scale(weight_fraction, k * n * count * (dequant if quantized else 0.0)),
                **_scale(
                    rows, k * n * count / _DEQUANT_TILE_ROWS * (dequant if quantized else 0.0)
                ),
            },
            bytes={
                **_scale(weight_fraction, k * n * count * (weight_bytes + side * _BF16_BYTES)),
                **_scale(rows, count * (k * act_in + n * _BF16_BYTES)),
            },
            kernels=_scale(weight_fraction, count),
            rows=rows,
            low_precision=lowp if quantized else False,
        )

    def elementwise(
        name: str, bytes_per_token, kernels, *, flops_per_token=0.0, rows=local_tokens, when=once
    ) -> None:
        b.add(
            name,
            "elementwise",
            EFF_NONE,
            bytes=_scale(rows, bytes_per_token),
            vector_flops=_scale(rows, flops_per_token),
            kernels=_scale(when, kernels),
        )

    # --- embedding and attention block ---------------------------------------------------------
    elementwise("embedding", 2.0 * hidden * _BF16_BYTES, 1.0)
    elementwise(
        "norm",
        4.0 * hidden * _BF16_BYTES * (2 * layers + 1),
        2.0 * layers + 1,
        flops_per_token=5.0 * hidden * (2 * layers + 1),
    )
    gemm("qkv_proj", hidden, q_width + 2 * kv_width, layers)
    elementwise(
        "rope",
        2.0 * (q_width + kv_width) * _BF16_BYTES * layers,
        layers,
        flops_per_token=6.0 * (q_width + kv_width) * layers,
    )
    elementwise("kv_cache_write", 2.0 * kv_width * (_BF16_BYTES + kvb) * layers, layers)

    naive = configs.naive_attention
    attention_kernels = np.where(naive, 4.0, 1.0) * layers
    prefill_flops = 4.0 * heads_per_gpu * head_dim * layers / cp
    b.add(
        "attention_prefill",
        "attention",
        EFF_ATTENTION,
        flops={"prefill_pairs": prefill_flops},
        ideal_s={"prefill_pairs": prefill_flops / peak_bf16},
        bytes={
            "prefill_tokens": 2.0 * q_width * _BF16_BYTES * layers / cp,
            "prefill_kv": 2.0 * kv_width * kvb * layers,
            "naive_scores": np.where(naive, 4.0 * heads_per_gpu * _BF16_BYTES * layers / cp, 0.0),
        },
        kernels={"has_prefill": attention_kernels},
    )
    decode_flops = 4.0 * heads_per_gpu * head_dim * layers / cp
    b.add(
        "attention_decode",
        "attention",
        EFF_DECODE_ATTENTION,
        flops={"decode_pairs": decode_flops},
        ideal_s={"decode_pairs": decode_flops / peak_bf16},
        bytes={
            "decode_kv": 2.0 * kv_width * kvb * layers / cp,
            "decode_tokens": 2.0 * q_width * _BF16_BYTES * layers,
            "decode_pairs": np.where(naive, 4.0 * heads_per_gpu * _BF16_BYTES * layers / cp, 0.0),
        },
        kernels={"has_decode": attention_kernels},
    )
    gemm("o_proj", q_width, hidden, layers)

    # --- MLP: dense layers --------------------------------------------------------------------
    if dense_layers:
        gemm("gate_up_proj", hidden, 2 * ffn_per_gpu, dense_layers)
        elementwise(
            "act_mul",
            3.0 * ffn_per_gpu * _BF16_BYTES * dense_layers,
            dense_layers,
            flops_per_token=4.0 * ffn_per_gpu * dense_layers,
        )
        gemm("down_proj", ffn_per_gpu, hidden, dense_layers)

    # --- MLP: mixture-of-experts layers -------------------------------------------------------
    quant_inputs = hidden * 2 + q_width + (ffn_per_gpu if dense_layers else 0.0)
    if moe_layers:
        experts, top_k = model.num_local_experts, model.num_experts_per_tok
        expert_ffn = model.moe_intermediate_size
        gemm("router", hidden, experts, moe_layers, quantized=False)
        # The pairs (token, expert) are spread over the ep GPUs; each expert is split tp/ep ways,
        # so per GPU the grouped GEMM does 1/tp of all pair-work and reads 1/tp of the weights of
        # the experts that got at least one token.
        pair_rows = _scale(local_tokens, top_k / ep)
        expert_width = expert_ffn * ep / tp
        touched = {"moe_touched": 1.0}
        for name, k, n in (
            ("experts_gate_up", hidden, 2 * expert_width),
            ("experts_down", expert_width, hidden),
        ):
            flops = _scale(pair_rows, 2.0 * k * n * moe_layers)
            b.add(
                name,
                "gemm",
                EFF_GEMM,
                flops=flops,
                ideal_s=_scale(flops, 1.0 / peak),
                vector_flops={
                    **_scale(touched, experts / ep * k * n * moe_layers * dequant),
                    **_scale(pair_rows, k * n * moe_layers * dequant / _DEQUANT_TILE_ROWS),
                },
                bytes={
                    **_scale(touched, experts / ep * k * n * wb * moe_layers),
                    **_scale(pair_rows, moe_layers * (k * in_bytes + n * _BF16_BYTES)),
                },
                kernels=_scale(once, moe_layers),
                # Rows per expert: all routed pairs over all experts.
                rows=_scale(local_tokens, top_k / experts),
                low_precision=lowp,
            )
        elementwise(
            "experts_permute_act",
            moe_layers * (top_k / ep * 4.0 * hidden + 3.0 * top_k * expert_ffn / tp) * _BF16_BYTES,
            4.0 * moe_layers,
            flops_per_token=4.0 * top_k * expert_ffn / tp * moe_layers,
        )
        if model.num_shared_experts:
            shared_ffn = model.num_shared_experts * expert_ffn / tp
            gemm("shared_expert", hidden, 3 * shared_ffn, moe_layers)
        quant_inputs = quant_inputs + (hidden + top_k * expert_ffn / tp) * moe_layers / layers

    if np.any(dynamic):
        # Dynamic per-token scales: one extra read of each GEMM input to find its absolute max.
        elementwise(
            "act_quant",
            np.where(dynamic, quant_inputs * _BF16_BYTES * layers, 0.0),
            np.where(dynamic, 4.0 * layers, 0.0),
        )

    # --- output --------------------------------------------------------------------------------
    logits = {"logits": 1.0}
    gemm("lm_head", hidden, vocab / tp, 1, rows=logits, quantized=False)
    elementwise("sampling", 3.0 * vocab * 4.0, 3.0, rows=logits)

    _add_communication(
        b,
        model,
        hardware,
        configs,
        local_tokens,
        layers,
        dense_layers,
        moe_layers,
        kv_width,
        q_width,
        kvb,
    )
    b.add(
        "scheduler",
        "other",
        EFF_NONE,
        fixed_s={"has_tokens": np.full(len(configs), eff.step_overhead_s)},
    )
    return b.build()


def _add_communication(
    b: _Builder,
    model: ModelSpec,
    hardware: HardwareSpec,
    configs: ConfigArrays,
    local_tokens: dict,
    layers: int,
    dense_layers: int,
    moe_layers: int,
    kv_width,
    q_width,
    kvb,
) -> None:
    """Collectives with an alpha-beta cost: ``calls x latency + bytes / achievable bandwidth``.

    A group that fits in one node uses the scale-up link (NVLink); a larger one is bound by the
    per-GPU network. Latency grows by ``collective_latency_per_rank_s`` per extra rank.
    """
    eff = hardware.efficiency
    tp, pp, cp, ep = configs.tp, configs.pp, configs.cp, configs.ep
    hidden = model.hidden_size
    node = hardware.gpus_per_node

    def link(group_gpus):
        inside = group_gpus <= node
        bandwidth = np.where(
            inside,
            hardware.scale_up_bytes_per_s * eff.link,
            hardware.scale_out_bytes_per_s * eff.network,
        )
        latency = np.where(inside, eff.collective_latency_s, eff.network_latency_s)
        return bandwidth, latency + eff.collective_latency_per_rank_s * (group_gpus - 1)

    # TP all-reduce: after attention (every layer), after dense MLPs, after MoE layers that do
    # not use all-to-all (ep == 1) or whose experts are still split inside the group (ep < tp),
    # and once for the vocab-parallel embedding.
    multi = tp > 1
    calls = np.where(multi, layers + dense_layers + moe_layers * (ep < tp) + 1, 0.0)
    ring = 2.0 * (tp - 1) / tp
    bandwidth, latency = link(tp * cp)
    b.add(
        "tp_allreduce",
        "communication",
        EFF_COMM,
        bytes=_scale(local_tokens, calls * ring * hidden * _BF16_BYTES),
        kernels={"has_tokens": calls},
        link_bytes_per_s=bandwidth,
        link_latency_s=latency,
    )
    b.add(
        "tp_logits_gather",
        "communication",
        EFF_COMM,
        bytes={"logits": np.where(multi, (tp - 1) / tp * model.vocab_size * 4.0, 0.0)},
        kernels={"has_tokens": np.where(multi, 1.0, 0.0)},
        link_bytes_per_s=bandwidth,
        link_latency_s=latency,
    )

    if moe_layers:
        # Dispatch and combine: each GPU sends its 1/ep slice of the tokens to the top-k experts'
        # owners and gets the results back; (ep - 1)/ep of that leaves the GPU.
        a2a_calls = np.where(ep > 1, 2.0 * moe_layers, 0.0)
        per_token = model.num_experts_per_tok * hidden * _BF16_BYTES / ep * (ep - 1) / ep
        bandwidth, latency = link(ep)
        b.add(
            "ep_all_to_all",
            "communication",
            EFF_COMM,
            bytes=_scale(local_tokens, a2a_calls * per_token),
            kernels={"has_tokens": a2a_calls},
            link_bytes_per_s=bandwidth,
            link_latency_s=latency,
        )

    # PP: activations cross each of the pp - 1 stage boundaries once per step.
    boundaries = pp - 1
    bandwidth, latency = link(tp * pp * cp)
    b.add(
        "pp_send",
        "communication",
        EFF_COMM,
        bytes=_scale(local_tokens, boundaries * hidden * _BF16_BYTES),
        kernels={"has_tokens": boundaries},
        link_bytes_per_s=bandwidth,
        link_latency_s=latency,
    )

    # CP: each GPU holds 1/cp of a long prompt; ring attention passes K/V around the cp GPUs
    # (cp - 1 hops per layer), and decodes merge partial attention outputs (fp32) once per layer.
    share = (cp - 1) / cp
    bandwidth, latency = link(tp * cp)
    b.add(
        "cp_kv_exchange",
        "communication",
        EFF_COMM,
        bytes={
            "prefill_kv": share * 2.0 * kv_width * kvb * layers,
            "decode_tokens": share * q_width * 4.0 * layers,
        },
        kernels={"has_prefill": (cp - 1) * layers, "has_decode": np.where(cp > 1, layers, 0.0)},
        link_bytes_per_s=bandwidth,
        link_latency_s=latency,
    )
