"""The operator table: what each kernel of a Llama step costs, on one GPU, for N configurations.

Each operator's FLOPs, HBM bytes, kernel launches (or collective calls) and GEMM row count are
*linear in the step features* of ``shapes.py``; the coefficients depend on the model and the
configuration (tp, pp, cp, ep, dtypes). So the table is a set of tensors ``[N, ops, features]``
and the work of any batch of steps is one matrix product. This file only counts (the table's
structure is ``optable.py``); ``roofline.py`` turns counts into time.

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
- Communication (``comm.py``): TP all-reduce after attention and after the MLP (and for the vocab-parallel
  embedding), a logits gather, PP point-to-point per stage boundary, EP all-to-all, and the
  context-parallel K/V ring exchange. Bytes are per GPU on the link (ring all-reduce moves
  ``2 (n - 1) / n`` of the message); calls carry the latency term.
- Element-wise kernels (fused add+RMSNorm, RoPE, KV-cache write, SiLU-and-mul, dynamic
  activation quantization) are memory traffic plus a launch each.
"""

from __future__ import annotations

import numpy as np

from ..data.architecture import architecture_of, per_gpu
from ..data.specs import HardwareSpec, ModelSpec
from .comm import add_collectives
from .configs import ConfigArrays
from .optable import (
    BF16_BYTES,
    EFF_ATTENTION,
    EFF_COMM,
    EFF_DECODE_ATTENTION,
    EFF_GEMM,
    EFF_NONE,
    OpBuilder,
    OpTable,
    scale_terms,
)

__all__ = [
    "OpTable",
    "build_op_table",
    "EFF_NONE",
    "EFF_GEMM",
    "EFF_ATTENTION",
    "EFF_DECODE_ATTENTION",
    "EFF_COMM",
]

_DEQUANT_TILE_ROWS = 64.0  # rows of M per weight dequantization in weight-only GEMM kernels
_DEQUANT_FLOPS = {
    2: 2.0,
    3: 2.0,
    4: 4.0,
}  # per weight element: fp8/int8 convert+scale; int4 unpack too


def build_op_table(model: ModelSpec, hardware: HardwareSpec, configs: ConfigArrays) -> OpTable:
    """Count every operator of one step for each configuration (see the module docstring)."""
    eff = hardware.efficiency
    tp, cp, ep = configs.tp, configs.cp, configs.ep
    wb = configs.weight_bytes_per_element
    kvb = configs.kv_bytes_per_element
    lowp = configs.low_precision_compute
    in_bytes = np.where(lowp, 1.0, BF16_BYTES)  # W8A8 GEMMs read quantized activations
    peak = configs.compute_peak(hardware)
    peak_bf16 = hardware.peak("bf16")
    outlier = np.where(configs.compute_code == 3, configs.int8_outlier_fraction, 0.0)
    dequant = np.select(
        [configs.weight_only & (configs.weight_code == c) for c in _DEQUANT_FLOPS],
        list(_DEQUANT_FLOPS.values()),
        0.0,
    )
    dynamic = lowp & configs.dynamic_scaling

    arch = architecture_of(model)
    w = arch.widths(tp, ep)
    layers, dense_layers, moe_layers = arch.layers, arch.dense_layers, arch.moe_layers
    hidden, vocab = model.hidden_size, model.vocab_size
    q_width, ffn_per_gpu = w.q_width, w.ffn

    # Tokens this GPU pushes through its linears: context parallelism splits prefill tokens.
    local_tokens = {"tokens": 1.0, "prefill_tokens": -(1.0 - 1.0 / cp)}
    once = {"has_tokens": 1.0}
    b = OpBuilder(len(configs))

    def gemm(
        name: str, k, n, count, *, rows=local_tokens, quantized=True, weight_fraction=once
    ) -> None:
        """A linear of ``rows x k`` by ``k x n`` repeated ``count`` times per step."""
        weight_bytes = wb if quantized else BF16_BYTES
        act_in = in_bytes if quantized else BF16_BYTES
        op_peak = peak if quantized else peak_bf16
        side = outlier if quantized else 0.0  # bf16 side GEMM over the outlier channels
        flops = scale_terms(rows, 2.0 * k * n * count)
        side_flops = scale_terms(rows, 2.0 * k * side * n * count)
        b.add(
            name,
            "gemm",
            EFF_GEMM,
            flops={f: flops[f] + side_flops[f] for f in rows},
            ideal_s={f: flops[f] / op_peak + side_flops[f] / peak_bf16 for f in rows},
            vector_flops={
                **scale_terms(weight_fraction, k * n * count * (dequant if quantized else 0.0)),
                **scale_terms(
                    rows, k * n * count / _DEQUANT_TILE_ROWS * (dequant if quantized else 0.0)
                ),
            },
            bytes={
                **scale_terms(weight_fraction, k * n * count * (weight_bytes + side * BF16_BYTES)),
                **scale_terms(rows, count * (k * act_in + n * BF16_BYTES)),
            },
            kernels=scale_terms(weight_fraction, count),
            rows=rows,
            low_precision=lowp if quantized else False,
        )

    def linear_op(op: str, **kwargs) -> None:
        """The GEMM of ``op``: its matrices share their input, so their outputs add up."""
        linears = arch.op_linears(op)
        k = per_gpu(linears[0], tp, ep, arch.attention)[0]
        n = sum(per_gpu(m, tp, ep, arch.attention)[1] for m in linears)
        count = arch.layer_count(linears[0].layers)
        gemm(op, k, n, count, quantized=linears[0].quantized, **kwargs)

    def elementwise(
        name: str, bytes_per_token, kernels, *, flops_per_token=0.0, rows=local_tokens, when=once
    ) -> None:
        b.add(
            name,
            "elementwise",
            EFF_NONE,
            bytes=scale_terms(rows, bytes_per_token),
            vector_flops=scale_terms(rows, flops_per_token),
            kernels=scale_terms(when, kernels),
        )

    attention_ops = [op for op in arch.ops if arch.op_linears(op)[0].block == "attention"]
    output_op = attention_ops.pop()  # the output projection runs after attention

    # --- embedding and attention block ---------------------------------------------------------
    elementwise("embedding", 2.0 * hidden * BF16_BYTES, 1.0)
    elementwise(
        "norm",
        4.0 * hidden * BF16_BYTES * (2 * layers + 1),
        2.0 * layers + 1,
        flops_per_token=5.0 * hidden * (2 * layers + 1),
    )
    for op in attention_ops:
        linear_op(op)
    if arch.attention.norms_per_layer:
        elementwise(
            "attention_norm",
            4.0 * w.normed * BF16_BYTES * layers,
            2.0 * layers,
            flops_per_token=5.0 * w.normed * layers,
        )
    elementwise(
        "rope",
        2.0 * w.rope * BF16_BYTES * layers,
        layers,
        flops_per_token=6.0 * w.rope * layers,
    )
    elementwise("kv_cache_write", w.cache * (BF16_BYTES + kvb) * layers, layers)

    naive = configs.naive_attention
    attention_kernels = np.where(naive, 4.0, 1.0) * layers
    prefill_flops = w.prefill_pair_flops * layers / cp
    b.add(
        "attention_prefill",
        "attention",
        EFF_ATTENTION,
        flops={"prefill_pairs": prefill_flops},
        ideal_s={"prefill_pairs": prefill_flops / peak_bf16},
        bytes={
            "prefill_tokens": w.attention_io * BF16_BYTES * layers / cp,
            "prefill_kv": w.cache * kvb * layers,
            "naive_scores": np.where(naive, 4.0 * w.heads * BF16_BYTES * layers / cp, 0.0),
        },
        kernels={"has_prefill": attention_kernels},
    )
    decode_flops = w.decode_pair_flops * layers / cp
    b.add(
        "attention_decode",
        "attention",
        EFF_DECODE_ATTENTION,
        flops={"decode_pairs": decode_flops},
        ideal_s={"decode_pairs": decode_flops / peak_bf16},
        bytes={
            "decode_kv": w.cache * kvb * layers / cp,
            "decode_tokens": w.decode_io * BF16_BYTES * layers,
            "decode_pairs": np.where(naive, 4.0 * w.heads * BF16_BYTES * layers / cp, 0.0),
        },
        kernels={"has_decode": attention_kernels},
    )
    linear_op(output_op)

    # --- MLP: dense layers --------------------------------------------------------------------
    if dense_layers:
        linear_op("gate_up_proj")
        elementwise(
            "act_mul",
            3.0 * ffn_per_gpu * BF16_BYTES * dense_layers,
            dense_layers,
            flops_per_token=4.0 * ffn_per_gpu * dense_layers,
        )
        linear_op("down_proj")

    # --- MLP: mixture-of-experts layers -------------------------------------------------------
    quant_inputs = hidden * 2 + q_width + (ffn_per_gpu if dense_layers else 0.0)
    if moe_layers:
        experts, top_k = model.num_local_experts, model.num_experts_per_tok
        expert_ffn = model.moe_intermediate_size
        linear_op("router")
        # The pairs (token, expert) are spread over the ep GPUs; each expert is split tp/ep ways,
        # so per GPU the grouped GEMM does 1/tp of all pair-work and reads 1/tp of the weights of
        # the experts that got at least one token.
        pair_rows = scale_terms(local_tokens, top_k / ep)
        touched = {"moe_touched": 1.0}
        for op in ("experts_gate_up", "experts_down"):
            linears = arch.op_linears(op)
            k = per_gpu(linears[0], tp, ep, arch.attention)[0]
            n = sum(per_gpu(m, tp, ep, arch.attention)[1] for m in linears)
            flops = scale_terms(pair_rows, 2.0 * k * n * moe_layers)
            b.add(
                op,
                "gemm",
                EFF_GEMM,
                flops=flops,
                ideal_s=scale_terms(flops, 1.0 / peak),
                vector_flops={
                    **scale_terms(touched, experts / ep * k * n * moe_layers * dequant),
                    **scale_terms(pair_rows, k * n * moe_layers * dequant / _DEQUANT_TILE_ROWS),
                },
                bytes={
                    **scale_terms(touched, experts / ep * k * n * wb * moe_layers),
                    **scale_terms(pair_rows, moe_layers * (k * in_bytes + n * BF16_BYTES)),
                },
                kernels=scale_terms(once, moe_layers),
                # Rows per expert: all routed pairs over all experts.
                rows=scale_terms(local_tokens, top_k / experts),
                low_precision=lowp,
            )
        elementwise(
            "experts_permute_act",
            moe_layers * (top_k / ep * 4.0 * hidden + 3.0 * top_k * expert_ffn / tp) * BF16_BYTES,
            4.0 * moe_layers,
            flops_per_token=4.0 * top_k * expert_ffn / tp * moe_layers,
        )
        if model.num_shared_experts:
            linear_op("shared_expert")
        quant_inputs = quant_inputs + (hidden + top_k * expert_ffn / tp) * moe_layers / layers

    if np.any(dynamic):
        # Dynamic per-token scales: one extra read of each GEMM input to find its absolute max.
        elementwise(
            "act_quant",
            np.where(dynamic, quant_inputs * BF16_BYTES * layers, 0.0),
            np.where(dynamic, 4.0 * layers, 0.0),
        )

    # --- output --------------------------------------------------------------------------------
    logits = {"logits": 1.0}
    linear_op("lm_head", rows=logits)
    elementwise("sampling", 3.0 * vocab * 4.0, 3.0, rows=logits)

    add_collectives(b, arch, hardware, configs, w, local_tokens=local_tokens, kv_bytes=kvb)
    b.add(
        "scheduler",
        "other",
        EFF_NONE,
        fixed_s={
            "has_tokens": np.full(len(configs), eff.step_overhead_s),
            "logits": np.full(len(configs), eff.token_overhead_s),  # a token out per logit row
        },
    )
    return b.build()
