"""Each engine's memory budget rule: from the plan's bytes to the one fraction the engine takes.

The plan knows, per GPU, the bytes of weights ``w`` (a speculative drafter's included),
peak activations ``a``, the runtime reserve ``r`` (CUDA context, NCCL and CUDA-graph
workspaces) and the KV cache ``kv`` it wants, out of ``hbm`` bytes of memory as the driver
reports it (an H100 SXM 80GB reports 81,559 MiB). Each engine asks for a single fraction, and
each means a different thing by it:

* **vLLM** ``--gpu-memory-utilization f``: the share of *total* memory the whole instance may
  use. vLLM profiles weights + activations + its own non-torch memory and gives the KV cache
  what is left: ``kv = f*hbm - (w + a + r)``, total use ``f*hbm``.
* **SGLang** ``--mem-fraction-static f``: the share of the memory *free at start* (``hbm``
  less the CUDA context, ``c``) for the *static* pools, weights + KV cache; activations and
  CUDA graphs live in the rest: ``kv = f*(hbm - c) - w``, total use ``f*(hbm - c) + a + r``
  (``r`` holds ``c``).
* **TensorRT-LLM** ``kv_cache_config.free_gpu_memory_fraction f``: the share of memory still
  *free* once weights and runtime buffers are allocated (measured after a warm-up forward):
  ``kv = f*(hbm - w - a - r)``, total use ``w + a + r + kv``.

A fraction is printed with few decimals, and rounding is where plans break: rounding vLLM's or
TRT-LLM's fraction down starves the KV cache below what the plan promised, while rounding
SGLang's up eats the activation headroom outside it. So the fraction is the smallest value on
a 0.001 grid (finer if the plan leaves less room than one step) whose KV cache is at least the
plan's and whose total stays within ``hbm``. A plan no value satisfies, or one needing more
than ``MAX_FRACTION`` (engines need a little memory nobody models), raises ``ConfigError``.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

from simulator.cost.memory import RESERVED_CONTEXT_BYTES
from simulator.errors import ConfigError

if TYPE_CHECKING:
    from tuner.engines.inputs import EngineInputs

__all__ = [
    "MAX_FRACTION",
    "FRACTION_FLAG",
    "memory_fraction",
    "kv_cache_bytes_given",
    "total_bytes_used",
]

MAX_FRACTION = 0.98
# Grids tried in turn: 0.001 reads well; finer ones only when the plan's headroom is tiny.
_DENOMINATORS = (1_000, 10_000, 100_000)
# What each engine calls the knob, for messages.
FRACTION_FLAG = {
    "vllm": "--gpu-memory-utilization",
    "sglang": "--mem-fraction-static",
    "trtllm": "kv_cache_config.free_gpu_memory_fraction",
}


def _free_at_start(inputs: EngineInputs) -> float:
    """What SGLang measures free before it loads weights: the memory less the CUDA context."""
    return inputs.hbm_bytes - RESERVED_CONTEXT_BYTES


def _non_kv(inputs: EngineInputs) -> float:
    return inputs.weights_bytes + inputs.activation_bytes + inputs.reserved_bytes


def kv_cache_bytes_given(engine: str, inputs: EngineInputs, fraction: float) -> float:
    """Bytes the engine would give the KV cache under its rule for this fraction."""
    if engine == "vllm":
        return fraction * inputs.hbm_bytes - _non_kv(inputs)
    if engine == "sglang":
        return fraction * _free_at_start(inputs) - inputs.weights_bytes
    if engine == "trtllm":
        return fraction * (inputs.hbm_bytes - _non_kv(inputs))
    raise ConfigError(f"unknown engine {engine!r}")


def total_bytes_used(engine: str, inputs: EngineInputs, fraction: float) -> float:
    """Peak bytes per GPU under the engine's rule: everything it allocates at this fraction."""
    kv = kv_cache_bytes_given(engine, inputs, fraction)
    if engine == "sglang":
        # The static pools are a share of the free memory; activations and graphs sit outside.
        pools = fraction * _free_at_start(inputs)
        return pools + inputs.activation_bytes + inputs.reserved_bytes
    return _non_kv(inputs) + kv


def _fraction_needed(engine: str, inputs: EngineInputs) -> float:
    hbm, kv = inputs.hbm_bytes, inputs.kv_cache_bytes
    if engine == "vllm":
        return (_non_kv(inputs) + kv) / hbm
    if engine == "sglang":
        return (inputs.weights_bytes + kv) / _free_at_start(inputs)
    if engine == "trtllm":
        free = hbm - _non_kv(inputs)
        if free <= 0:
            raise ConfigError(
                f"weights, activations and reserve ({_gib(_non_kv(inputs))}) leave no free "
                f"memory on a {_gib(hbm)} GPU for TensorRT-LLM's KV cache"
            )
        return kv / free
    raise ConfigError(f"unknown engine {engine!r}")


def memory_fraction(engine: str, inputs: EngineInputs) -> float:
    """The engine's memory fraction for this plan, rounded so the plan still holds."""
    if inputs.kv_cache_bytes <= 0:
        raise ConfigError("the plan gives the KV cache no memory (kv_cache_bytes <= 0)")
    needed = _fraction_needed(engine, inputs)
    knob = FRACTION_FLAG[engine]
    if needed <= 0:
        raise ConfigError(f"{knob} would be {needed:.4f} for this plan; it must be above 0")
    if needed > MAX_FRACTION:
        raise ConfigError(
            f"{knob} would have to be {needed:.4f} (> {MAX_FRACTION}) to hold the plan's "
            f"{_gib(inputs.kv_cache_bytes)} KV cache on a {_gib(inputs.hbm_bytes)} GPU; "
            "plan a smaller KV cache or more GPUs"
        )
    for denominator in _DENOMINATORS:
        # Smallest grid point at or above the need; the loop absorbs float error in ceil.
        steps = math.ceil(needed * denominator - 1e-9)
        while kv_cache_bytes_given(engine, inputs, steps / denominator) < inputs.kv_cache_bytes:
            steps += 1
        fraction = steps / denominator
        fits = total_bytes_used(engine, inputs, fraction) <= inputs.hbm_bytes
        if fits and fraction <= MAX_FRACTION:
            return fraction
    raise ConfigError(
        f"the plan fills the {_gib(inputs.hbm_bytes)} GPU too exactly for {knob}: no fraction "
        "gives its KV cache without exceeding memory; leave a little headroom"
    )


def _gib(num_bytes: float) -> str:
    return f"{num_bytes / 2**30:.2f} GiB"
