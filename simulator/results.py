"""Prediction and Measurement: one schema, so validating a prediction is a join on field names.

The JSON of a ``Prediction`` is a public contract (scripts and dashboards read it). Field names
below are fixed; new fields may be added beside them, never renamed. Times are seconds, sizes
bytes, rates per second. A ``Measurement`` is a ``Prediction`` plus the machine it ran on.

Step-level runs (``tune predict`` without a workload) fill ``prefill``, ``decode``, ``memory`` and
``ops``. Request-level runs (with a workload) also fill the latency percentiles, throughputs and
goodput.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

__all__ = [
    "Bound",
    "OpResult",
    "PhaseResult",
    "MemoryBreakdown",
    "Percentiles",
    "Prediction",
    "Measurement",
    "StepMeasurement",
    "percentiles",
    "relative_error",
]

Bound = Literal["memory", "compute", "communication", "overhead"]
# Why a configuration cannot run (``Prediction.unfit``), beside the one-line ``reason``:
# invalid: the parallel layout or dtype cannot be built; memory: weights, activations and one
# max_model_len sequence exceed the budget; kv_cache: the cache cannot hold the longest request;
# request_too_long: a request exceeds max_model_len; unsupported: a combination not modelled.
Unfit = Literal["invalid", "memory", "kv_cache", "request_too_long", "unsupported"]
OpSource = Literal["spec", "literature", "calibrated", "measured"]


class _Result(BaseModel):
    # Every field is declared: the schema is the contract (scripts and dashboards read it).
    model_config = ConfigDict(extra="forbid")


class OpResult(_Result):
    """One operator of one phase on one GPU, summed over the layers of the (slowest) stage."""

    name: str
    phase: str
    kind: str  # gemm | attention | elementwise | communication | other
    flops: float
    bytes: float
    time_s: float
    compute_s: float
    memory_s: float
    overhead_s: float
    bound: Bound
    share: float  # of the phase time
    kernels: float
    source: OpSource = "literature"


class PhaseResult(_Result):
    """A prefill or a decode step: its time, what bounds it, and its shape."""

    time_s: float
    step_time_s: float | None = None  # decode: time of one step (== time_s)
    stage_time_s: float | None = None  # the slowest pipeline stage (== time_s when pp == 1)
    bound: Bound
    tokens: int
    batch: int
    prompt: int | None = None
    context: int | None = None
    flops: float = 0.0
    bytes: float = 0.0
    communication_s: float = 0.0
    tokens_per_s: float = 0.0
    bound_shares: dict[str, float] = Field(default_factory=dict)
    # Measured phases only: the step's bytes and FLOPs over its measured time.
    achieved_bytes_per_s: float | None = None
    achieved_flops_per_s: float | None = None


class MemoryBreakdown(_Result):
    """Per-GPU memory (the fullest GPU of the replica)."""

    weights_bytes: float
    kv_cache_bytes: float  # what is left for the KV cache under the memory budget
    activation_bytes: float
    reserved_bytes: float
    capacity_bytes: float  # HBM x gpu_memory_utilization
    kv_bytes_per_token: float
    kv_tokens_capacity: float
    required_kv_bytes: float = 0.0  # KV the asked-for batch x context needs
    max_batch_at_context: int = 0


class Percentiles(_Result):
    mean: float
    p50: float
    p90: float
    p99: float


class Prediction(_Result):
    model: str
    hardware: str
    config: dict
    fits: bool
    reason: str | None = None
    unfit: Unfit | None = None  # what kind of reason, when ``fits`` is False
    num_gpus: int = 1
    prefill: PhaseResult | None = None
    decode: PhaseResult | None = None
    memory: MemoryBreakdown | None = None
    ops: list[OpResult] = Field(default_factory=list)
    # Request-level (workload) results.
    ttft_s: Percentiles | None = None
    tpot_s: Percentiles | None = None
    itl_s: Percentiles | None = None
    e2e_s: Percentiles | None = None
    queue_s: Percentiles | None = None
    output_tokens_per_s: float | None = None
    total_tokens_per_s: float | None = None
    requests_per_s: float | None = None
    goodput_requests_per_s: float | None = None
    output_tokens_per_s_per_gpu: float | None = None
    output_tokens_per_s_per_user: float | None = None
    cost_per_million_tokens: float | None = None
    # Request-level run details (the serving simulation; None for a step-level prediction).
    workload: dict | None = None  # name, arrival, lengths and prefix sharing of the run
    router: str | None = None  # how requests were spread over replicas (dp > 1)
    duration_s: float | None = None  # first arrival to last finish
    slos: list[dict] = Field(default_factory=list)  # each SLO: target, value, met
    slos_met: bool | None = None  # every SLO met and the queue did not grow
    overloaded: bool | None = None  # the run never settled (see serving_results.overloaded)
    kv_blocks: int | None = None  # KV-cache blocks per replica
    kv_utilization: float | None = None  # mean share of the blocks in use over busy time
    kv_utilization_peak: float | None = None
    preemptions: int | None = None
    preempted_requests: int | None = None
    mean_batch: float | None = None  # sequences per iteration, averaged over busy time
    busy_fraction: float | None = None  # share of the run each replica spent iterating
    iterations: int | None = None
    speculative: dict | None = None  # acceptance statistics of a speculative run
    # The likely range of each latency, from the calibration's step-time residuals on this GPU
    # (simulator/cost/bands.py): "ttft_p99" -> [low, high] seconds, and "prefill" / "decode"
    # for the step times. Empty when the profile has no measured residuals.
    bands: dict[str, tuple[float, float]] = Field(default_factory=dict)
    source: str = "rooftune roofline"


class Measurement(Prediction):
    """What a real run measured, in the Prediction's schema, plus the machine it ran on."""

    # Validators built on first use, not at import: only the measuring verbs make one, and
    # building a second Prediction schema cost every ``tune predict`` about 2 ms.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    machine: dict = Field(default_factory=dict)
    source: str = "measured"


class StepMeasurement(_Result):
    """One step the executor timed: a prefill of ``prompt`` tokens or a decode step at
    ``context`` cached tokens, for ``batch`` sequences, with how the engine ran it.

    ``executor.bench`` saves these (their JSON form) and the calibration fit reads them back;
    ``tune measure`` turns a prefill and a decode record into a ``Measurement``. A point that
    did not run has ``fits`` false and says why in ``reason`` (``error`` for a crash). Bytes and
    FLOPs are the executor's own accounting of the step (``executor.engine.step_cost``, equal to
    the simulator's op table), so every time is also an achieved bandwidth and rate.
    ``variant`` is None for the engine as it serves by default, else what differs (graphs off,
    an FP8 KV cache, ...): comparisons the fit does not score.
    """

    # Validators built on first use (the executor, the calibration fit), not at import.
    model_config = ConfigDict(extra="forbid", defer_build=True)

    phase: Literal["prefill", "decode"]
    weights: str
    tp: int = 1
    batch: int
    prompt: int | None = None
    context: int | None = None
    kv_dtype: str = "bf16"
    cuda_graphs: bool = True
    gemv: bool = True
    prefill_backend: str | None = None
    decode_attention: str | None = None
    pdl: bool = True
    all_reduce: str | None = None
    variant: str | None = None
    fits: bool = False
    reason: str | None = None
    error: str | None = None
    time_s: float | None = None
    samples_s: list[float] = Field(default_factory=list)
    tokens_per_s: float | None = None
    weight_bytes: float | None = None
    kv_bytes: float | None = None
    bytes: float | None = None
    flops: float | None = None
    achieved_bytes_per_s: float | None = None
    achieved_flops_per_s: float | None = None
    peak_memory_bytes: int | None = None


def percentiles(values: np.ndarray | list[float]) -> Percentiles:
    """Mean, p50, p90, p99 of a sample (linear interpolation); NaN when the sample is empty."""
    array = np.asarray(values, dtype=float)
    if array.size == 0:
        nan = float("nan")
        return Percentiles(mean=nan, p50=nan, p90=nan, p99=nan)
    p50, p90, p99 = np.percentile(array, [50, 90, 99])
    return Percentiles(mean=float(array.mean()), p50=float(p50), p90=float(p90), p99=float(p99))


def relative_error(predicted: float, measured: float) -> float:
    """(predicted - measured) / measured: positive when the model is pessimistic."""
    return (predicted - measured) / measured if measured else float("nan")
