"""Collectives: the alpha-beta cost of every communication a parallel step needs.

``calls x latency + bytes / achievable bandwidth``, per GPU. A group that fits in one node uses
the scale-up link (NVLink, or PCIe on GPUs without it); a larger group is bound by the per-GPU
network. Latency grows by ``collective_latency_per_rank_s`` per extra rank. Bytes are what each
GPU moves on the link: a ring all-reduce moves ``2 (n - 1) / n`` of the message (the same as a
reduce-scatter followed by an all-gather, which sequence-parallel engines run instead).
"""

from __future__ import annotations

import numpy as np

from ..data.architecture import Architecture, Widths
from ..data.specs import HardwareSpec
from .configs import ConfigArrays
from .optable import BF16_BYTES, EFF_COMM, OpBuilder, scale_terms

__all__ = ["add_collectives"]


def add_collectives(
    b: OpBuilder,
    arch: Architecture,
    hardware: HardwareSpec,
    configs: ConfigArrays,
    widths: Widths,
    *,
    local_tokens: dict,
    kv_bytes: np.ndarray,
) -> None:
    """Collectives with an alpha-beta cost: ``calls x latency + bytes / achievable bandwidth``.

    A group that fits in one node uses the scale-up link (NVLink); a larger one is bound by the
    per-GPU network. Latency grows by ``collective_latency_per_rank_s`` per extra rank.
    """
    model, eff = arch.model, hardware.efficiency
    layers, dense_layers, moe_layers = arch.layers, arch.dense_layers, arch.moe_layers
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
        bytes=scale_terms(local_tokens, calls * ring * hidden * BF16_BYTES),
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
        per_token = model.num_experts_per_tok * hidden * BF16_BYTES / ep * (ep - 1) / ep
        bandwidth, latency = link(ep)
        b.add(
            "ep_all_to_all",
            "communication",
            EFF_COMM,
            bytes=scale_terms(local_tokens, a2a_calls * per_token),
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
        bytes=scale_terms(local_tokens, boundaries * hidden * BF16_BYTES),
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
            "prefill_kv": share * widths.cache * kv_bytes * layers,
            "decode_tokens": share * widths.q_width * 4.0 * layers,
        },
        kernels={"has_prefill": (cp - 1) * layers, "has_decode": np.where(cp > 1, layers, 0.0)},
        link_bytes_per_s=bandwidth,
        link_latency_s=latency,
    )
