"""The pruning pass: the vectorized step model over every replica configuration of the space.

A request-level simulation costs tens of milliseconds; one more row of the step model costs
microseconds. So before any simulation, ``prune(space, traffic, slos)`` builds one
``StepModel`` over *all* distinct replica configurations (``SearchSpace.replica_keys``: GPU,
tp, pp, ep, dtypes, batching knobs) with ``SearchSpace.config_arrays``, no per-config objects,
and sorts them into:

1. **invalid**: TP that does not divide the heads, fp8 on a GPU without fp8 tensor cores...;
2. **memory**: the KV cache left after weights, activations and reserve cannot hold
   ``max_num_seqs`` sequences of the mean request length, or one ``max_model_len`` sequence
   (the engine would refuse to start, or would never reach its own batch limit);
3. **slo**: even alone, one request misses an SLO: the decode step at batch 1 (with the best
   speculative setting allowed) is slower than the TPOT target, or the prefill of a median
   prompt is slower than the TTFT target. Percentile targets bound from below, so this is safe.

What survives becomes the search's candidates (``tuner.search.candidates``), each with its capacity
bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from simulator.cost.memory import kv_tokens_needed
from simulator.cost.step import StepModel
from simulator.serving.speculative import expected_tokens_per_round
from tuner.search.space import Point, ReplicaKey, SearchSpace

__all__ = ["TrafficStats", "PruneResult", "prune", "hopeless_reason", "STATUS"]

STATUS = ("ok", "invalid", "memory", "slo")
_OK, _INVALID, _MEMORY, _SLO = range(4)


@dataclass(frozen=True)
class TrafficStats:
    """What the pruning pass needs to know of the traffic (tokens, requests per second)."""

    mean_prompt: float
    mean_output: float
    median_prompt: float
    rate: float  # requests/s offered to the whole deployment; inf = offline

    @property
    def mean_length(self) -> float:
        return self.mean_prompt + self.mean_output


@dataclass
class PruneResult:
    """Per replica configuration ``[K]``: status, reason, the memory plan and the estimates."""

    space: SearchSpace
    keys: list[ReplicaKey]
    status: np.ndarray  # [K] index into STATUS
    reasons: list[str | None]
    fit_violation: np.ndarray  # [K] need / capacity - 1 (> 0 does not fit)
    weights_bytes: np.ndarray
    activation_bytes: np.ndarray
    reserved_bytes: np.ndarray
    kv_cache_bytes: np.ndarray
    capacity_bytes: np.ndarray
    kv_tokens: np.ndarray
    capacity_seqs: np.ndarray  # sequences of the mean length the KV cache holds (<= max_num_seqs)
    tpot_floor_s: np.ndarray
    ttft_floor_s: np.ndarray
    decode_one_s: np.ndarray  # decode step latency at batch 1

    def __post_init__(self) -> None:
        self._index = {key: i for i, key in enumerate(self.keys)}

    def __len__(self) -> int:
        return len(self.keys)

    def index(self, point: Point) -> int:
        return self._index[point.replica_key]

    def has(self, point: Point) -> bool:
        return point.replica_key in self._index

    def counts(self) -> dict[str, int]:
        return {name: int((self.status == code).sum()) for code, name in enumerate(STATUS)}

    def survivors(self) -> np.ndarray:
        return np.flatnonzero(self.status == _OK)


def prune(
    space: SearchSpace,
    traffic: TrafficStats,
    *,
    ttft_target_s: float | None = None,
    tpot_target_s: float | None = None,
) -> PruneResult:
    """Evaluate every replica configuration of ``space`` with the step model (see module doc)."""
    keys = list(space.replica_keys())
    count = len(keys)
    out = {
        name: np.zeros(count)
        for name in (
            "fit_violation",
            "weights_bytes",
            "activation_bytes",
            "reserved_bytes",
            "kv_cache_bytes",
            "capacity_bytes",
            "kv_tokens",
            "capacity_seqs",
            "tpot_floor_s",
            "ttft_floor_s",
            "decode_one_s",
        )
    }
    status = np.zeros(count, dtype=int)
    reasons: list[str | None] = [None] * count
    for hardware in space.hardware:
        rows = np.array([i for i, key in enumerate(keys) if key.hardware == hardware.name], int)
        if rows.size == 0:
            continue
        configs = space.config_arrays([keys[i] for i in rows])
        _evaluate(
            space,
            traffic,
            StepModel.build(space.model, hardware, configs),
            rows,
            out,
            status,
            reasons,
            ttft_target_s=ttft_target_s,
            tpot_target_s=tpot_target_s,
        )
    return PruneResult(space=space, keys=keys, status=status, reasons=reasons, **out)


def _evaluate(
    space: SearchSpace,
    traffic: TrafficStats,
    step: StepModel,
    rows: np.ndarray,
    out: dict[str, np.ndarray],
    status: np.ndarray,
    reasons: list[str | None],
    *,
    ttft_target_s: float | None,
    tpot_target_s: float | None,
) -> None:
    mem, cfg = step.memory, step.configs
    seqs = cfg.max_num_seqs.astype(float)
    need_tokens = kv_tokens_needed(
        seqs, traffic.mean_length, block_size=cfg.block_size, max_model_len=space.max_model_len
    )
    need = mem.required_bytes(need_tokens)
    fits = step.fits(seqs, traffic.mean_length)
    capacity_seqs = np.minimum(seqs, mem.max_batch_at_context(traffic.mean_length, cfg.block_size))
    context = traffic.median_prompt + traffic.mean_output / 2.0
    decode_one = step.decode(1, context)
    prompt = np.minimum(traffic.median_prompt, cfg.max_num_batched_tokens)
    prefill = step.prefill(1, prompt)
    # A prompt longer than the token budget runs in chunks: at least that many steps.
    chunks = np.ceil(traffic.median_prompt / cfg.max_num_batched_tokens)
    ttft_floor = prefill.latency_s * chunks
    options = space.spec_options()
    plain = ("none", 0) in options
    tpot_floor = decode_one.latency_s.copy() if plain else np.full(len(rows), np.inf)
    for method, drafted in options:
        if method == "none":
            continue
        verify = step.decode(1, context, query_tokens=drafted + 1).latency_s
        accepted = expected_tokens_per_round(drafted, space.spec_acceptance[method])
        tpot_floor = np.minimum(tpot_floor, verify / accepted)
    values = {
        "fit_violation": need / mem.capacity_bytes - 1.0,
        "weights_bytes": mem.weights_bytes,
        "activation_bytes": mem.activation_bytes,
        "reserved_bytes": mem.reserved_bytes,
        "kv_cache_bytes": mem.kv_cache_bytes,
        "capacity_bytes": np.broadcast_to(mem.capacity_bytes, rows.shape),
        "kv_tokens": mem.kv_tokens,
        "capacity_seqs": np.maximum(capacity_seqs, 0.0),
        "tpot_floor_s": tpot_floor,
        "ttft_floor_s": ttft_floor,
        "decode_one_s": decode_one.latency_s,
    }
    for name, value in values.items():
        out[name][rows] = value
    invalid = step.invalid_code
    for local, row in enumerate(rows):
        if invalid[local]:
            status[row] = _INVALID
            reasons[row] = cfg.reason(local, int(invalid[local]), step.model, step.hardware)
            out["fit_violation"][row] = max(out["fit_violation"][row], 1.0)
        elif not fits[local]:
            status[row] = _MEMORY
            reasons[row] = (
                f"KV cache holds {mem.kv_tokens[local]:,.0f} tokens; needs {need_tokens[local]:,.0f}"
                f" ({int(seqs[local])} x {traffic.mean_length:,.0f} tokens or one "
                f"max_model_len={space.max_model_len})"
            )
        elif tpot_target_s is not None and tpot_floor[local] > tpot_target_s:
            status[row] = _SLO
            reasons[row] = (
                f"TPOT at batch 1 is {tpot_floor[local] * 1e3:.1f} ms, above the "
                f"{tpot_target_s * 1e3:g} ms target"
            )
        elif ttft_target_s is not None and ttft_floor[local] > ttft_target_s:
            status[row] = _SLO
            reasons[row] = (
                f"prefill of a median prompt takes {ttft_floor[local]:.2f} s, above "
                f"the {ttft_target_s:g} s TTFT target"
            )


def hopeless_reason(pruned: PruneResult, slos: list) -> str:
    """Why the pruning pass left nothing, naming the closest configuration."""
    counts = pruned.counts()
    where = f"{pruned.space.gpus} x {'/'.join(pruned.space.hardware_names)}"
    parts = [f"{n} {k}" for k, n in counts.items() if n and k != "ok"]
    slo_rows = np.flatnonzero(pruned.status == _SLO)
    if slo_rows.size:
        tpot = min((s.target_s for s in slos if s.metric in ("tpot", "itl")), default=None)
        if tpot is not None:
            best = slo_rows[np.argmin(pruned.tpot_floor_s[slo_rows])]
            closest = (
                f"fastest is {_key_label(pruned.keys[best])} at "
                f"{pruned.tpot_floor_s[best] * 1e3:.1f} ms per token alone"
            )
        else:
            best = slo_rows[np.argmin(pruned.ttft_floor_s[slo_rows])]
            closest = (
                f"fastest is {_key_label(pruned.keys[best])} with a "
                f"{pruned.ttft_floor_s[best]:.2f} s prefill alone"
            )
        return f"no configuration on {where} can meet the SLOs ({', '.join(parts)}): {closest}"
    best = int(np.argmin(pruned.fit_violation))
    return (
        f"nothing fits on {where} ({', '.join(parts)}); closest: {_key_label(pruned.keys[best])}"
        f" needs {100 * (pruned.fit_violation[best]):.0f}% more memory per GPU than the "
        "budget; allow more GPUs or quantization (--allow-quant)"
    )


def _key_label(key: ReplicaKey) -> str:
    return f"tp{key.tp} pp{key.pp} {key.weights} weights, {key.kv} KV, max_num_seqs {key.max_num_seqs}"
