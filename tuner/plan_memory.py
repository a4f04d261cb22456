"""The plan's per-GPU memory section (``tuner.plan.MemoryPlan``) from the simulator's memory
breakdown: what the weights, activations, reserve and KV cache take of the budget, a
speculative drafter's share taken out of the cache as the simulation takes it, and the
headroom left against what the driver reports."""

from __future__ import annotations

from typing import Any

from simulator.data.specs import HardwareSpec
from tuner.plan import MemoryPlan

__all__ = ["memory_plan"]


def memory_plan(
    *,
    memory: Any,
    hardware: HardwareSpec,
    gpu_memory_utilization: float,
    kv_tokens_needed: float,
    drafter_weights_bytes: float = 0.0,
    drafter_kv_bytes_per_token: float = 0.0,
) -> MemoryPlan:
    """The per-GPU memory plan from the simulator's ``MemoryBreakdown``, with a speculative
    drafter's weights and KV taken out of the cache as the simulation takes them."""
    used = (
        memory.weights_bytes
        + memory.activation_bytes
        + memory.reserved_bytes
        + memory.kv_cache_bytes
    )
    per_token = memory.kv_bytes_per_token + drafter_kv_bytes_per_token
    kv_cache = memory.kv_cache_bytes - drafter_weights_bytes
    return MemoryPlan(
        hbm_bytes=hardware.hbm_bytes,
        device_memory_bytes=hardware.memory_reported_bytes,
        budget_bytes=memory.capacity_bytes,
        gpu_memory_utilization=gpu_memory_utilization,
        weights_bytes=memory.weights_bytes,
        drafter_weights_bytes=drafter_weights_bytes,
        activation_bytes=memory.activation_bytes,
        reserved_bytes=memory.reserved_bytes,
        kv_cache_bytes=kv_cache,
        kv_bytes_per_token=per_token,
        kv_tokens=max(kv_cache, 0.0) // per_token,
        kv_tokens_needed=kv_tokens_needed,
        headroom_bytes=hardware.memory_reported_bytes - used,
    )
