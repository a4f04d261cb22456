"""The pruning pass: the vectorized step model over every replica configuration of the space.

A request-level simulation costs tens of milliseconds; one more row of the step model costs
microseconds. So before any simulation, ``prune(space, traffic, slos)`` builds one
``StepModel`` over *all* distinct replica configurations (``SearchSpace.replica_keys``: GPU,
tp, pp, ep, dtypes, batching knobs) with ``ConfigArrays.from_arrays``, no per-config objects,
and sorts them into:

1. **invalid**: TP that does not divide the heads, fp8 on a GPU without fp8 tensor cores...;
2. **memory**: the KV cache left after weights, activations and reserve cannot hold
   ``max_num_seqs`` sequences of the mean request length, or one ``max_model_len`` sequence
   (the engine would refuse to start, or would never reach its own batch limit);
3. **slo**: even alone, one request misses an SLO: the decode step at batch 1 (with the best
   speculative setting allowed) is slower than the TPOT target, or the prefill of a median
   prompt is slower than the TTFT target. Percentile targets bound from below, so this is safe;
4. **dominated**: another configuration with the same GPUs per replica and batching knobs, no
   more quantization risk in its weights nor in its KV cache, is at least as fast on every
   step-model measure (decode latency and stage time, prefill time per token) and holds at
   least as many sequences.

What survives is ranked by an analytic estimate of goodput per GPU (a fixed point of Little's
law with an affine decode-time model); the top of that ranking seeds the study.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np

from simulator.configs import ConfigArrays
from simulator.step import StepModel
from tuner.choices import KV_SCHEMES, WEIGHT_SCHEMES
from tuner.space import Point, SearchSpace

__all__ = ["TrafficStats", "PruneResult", "prune", "hopeless_reason", "STATUS"]

STATUS = ("ok", "invalid", "memory", "slo", "dominated")
_OK, _INVALID, _MEMORY, _SLO, _DOMINATED = range(5)


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
    keys: list[tuple]
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
    decode_full_s: np.ndarray  # decode step latency at capacity_seqs
    decode_full_stage_s: np.ndarray
    prefill_token_s: np.ndarray  # prefill latency per token (median prompt)
    prefill_token_stage_s: np.ndarray
    tokens_per_s_per_gpu: np.ndarray  # saturated output tokens/s per GPU (no SLOs)

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

    def estimate(
        self, index: int, replicas: int, traffic: TrafficStats, tpot_target_s: float | None
    ) -> tuple[float, float]:
        """(goodput tokens/s per GPU, TPOT) at the operating point with ``replicas`` replicas."""
        gpus = replicas * self.keys[index][1] * self.keys[index][2]
        rate = traffic.rate / replicas
        t1, tb = self.decode_one_s[index], self.decode_full_s[index]
        seqs = max(self.capacity_seqs[index], 1.0)
        prefill = self.prefill_token_s[index] * traffic.mean_prompt / traffic.mean_output
        capacity = self.tokens_per_s_per_gpu[index] * gpus / replicas  # per replica
        if not np.isfinite(rate) or rate * traffic.mean_output >= 0.9 * capacity:
            tpot = tb + seqs * prefill
            goodput = capacity * replicas / gpus
        else:
            # Little's law: concurrency B = rate x time in system; decode time affine in B.
            slope = (tb - t1) / max(seqs - 1.0, 1.0)
            batch = 1.0
            for _ in range(8):
                tpot = t1 + slope * (batch - 1.0) + batch * prefill
                batch = min(seqs, max(1.0, rate * traffic.mean_output * tpot))
            tpot = t1 + slope * (batch - 1.0) + batch * prefill
            goodput = rate * traffic.mean_output * replicas / gpus
        if tpot_target_s is not None and tpot > tpot_target_s:
            goodput = 0.0
        return float(goodput), float(tpot)

    def ranked(
        self, traffic: TrafficStats, tpot_target_s: float | None, limit: int
    ) -> list[tuple[int, int, float]]:
        """Best surviving (key index, replicas, estimated goodput per GPU), best first."""
        rows = []
        for i in self.survivors():
            _, tp, pp = self.keys[i][:3]
            for replicas in range(1, self.space.max_replicas(tp, pp) + 1):
                goodput, tpot = self.estimate(int(i), replicas, traffic, tpot_target_s)
                rows.append((goodput, -tpot, int(i), replicas))
        rows.sort(reverse=True)
        # One row per layout (GPU, tp, pp, dtypes, replicas): batching variants of one layout
        # estimate alike, and seeds are worth more spread out.
        picked, layouts = [], set()
        for goodput, _, i, replicas in rows:
            layout = (*self.keys[i][:6], replicas)
            if layout not in layouts:
                layouts.add(layout)
                picked.append((i, replicas, goodput))
            if len(picked) == limit:
                break
        return picked


def _expected_accepted(acceptance: float, drafted: int) -> float:
    """Tokens produced per verification step: (1 - a^(g+1)) / (1 - a)."""
    return (1.0 - acceptance ** (drafted + 1)) / (1.0 - acceptance)


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
            "decode_full_s",
            "decode_full_stage_s",
            "prefill_token_s",
            "prefill_token_stage_s",
            "tokens_per_s_per_gpu",
        )
    }
    status = np.zeros(count, dtype=int)
    reasons: list[str | None] = [None] * count
    columns = list(zip(*keys, strict=True)) if keys else [()] * 9
    hw_names = np.array(columns[0])
    for hardware in space.hardware:
        rows = np.flatnonzero(hw_names == hardware.name)
        if rows.size == 0:
            continue
        col = {
            name: np.array([columns[j][i] for i in rows])
            for j, name in enumerate(
                ("hardware", "tp", "pp", "ep", "weights", "kv", "seqs", "chunked", "tokens")
            )
        }
        schemes = [WEIGHT_SCHEMES[w] for w in col["weights"]]
        configs = ConfigArrays.from_arrays(
            tp=col["tp"],
            pp=col["pp"],
            ep=col["ep"],
            weight_dtype=np.array([s.weight_dtype for s in schemes]),
            activation_dtype=np.array([s.activation_dtype for s in schemes]),
            kv_dtype=col["kv"],
            max_num_seqs=col["seqs"],
            max_num_batched_tokens=col["tokens"],
            max_model_len=space.max_model_len,
            gpu_memory_utilization=space.gpu_memory_utilization,
        )
        _evaluate(
            space,
            traffic,
            StepModel.build(space.model, hardware, configs),
            rows,
            col,
            out,
            status,
            reasons,
            ttft_target_s=ttft_target_s,
            tpot_target_s=tpot_target_s,
        )
    _mark_dominated(keys, status, reasons, out)
    return PruneResult(space=space, keys=keys, status=status, reasons=reasons, **out)


def _evaluate(
    space: SearchSpace,
    traffic: TrafficStats,
    step: StepModel,
    rows: np.ndarray,
    col: dict[str, np.ndarray],
    out: dict[str, np.ndarray],
    status: np.ndarray,
    reasons: list[str | None],
    *,
    ttft_target_s: float | None,
    tpot_target_s: float | None,
) -> None:
    mem, cfg = step.memory, step.configs
    seqs = col["seqs"].astype(float)
    need_tokens = np.maximum(
        seqs * mem.tokens_needed(traffic.mean_length, cfg.block_size),
        mem.tokens_needed(space.max_model_len, cfg.block_size),
    )
    need = mem.required_bytes(need_tokens)
    fits = step.fits(seqs, traffic.mean_length)
    capacity_seqs = np.minimum(seqs, mem.max_batch_at_context(traffic.mean_length, cfg.block_size))
    full = np.maximum(capacity_seqs, 1.0)
    context = traffic.median_prompt + traffic.mean_output / 2.0
    decode_one = step.decode(1, context)
    decode_full = step.decode(full, traffic.mean_prompt + traffic.mean_output / 2.0)
    prompt = np.minimum(traffic.median_prompt, cfg.max_num_batched_tokens)
    prefill = step.prefill(1, prompt)
    # A prompt longer than the token budget runs in chunks: at least that many steps.
    chunks = np.ceil(traffic.median_prompt / cfg.max_num_batched_tokens)
    ttft_floor = prefill.latency_s * chunks
    tpot_floor = decode_one.latency_s.copy()
    for method, drafted in space.spec_options()[1:]:
        verify = step.decode(1, context, query_tokens=drafted + 1).latency_s
        accepted = _expected_accepted(space.spec_acceptance[method], drafted)
        tpot_floor = np.minimum(tpot_floor, verify / accepted)
    gpus_per_replica = cfg.tp * cfg.pp
    prefill_per_token = prefill.latency_s / prompt
    prefill_stage_per_token = prefill.stage_s / prompt
    round_s = (
        decode_full.stage_s
        + full * prefill_stage_per_token * traffic.mean_prompt / traffic.mean_output
    )
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
        "decode_full_s": decode_full.latency_s,
        "decode_full_stage_s": decode_full.stage_s,
        "prefill_token_s": prefill_per_token,
        "prefill_token_stage_s": prefill_stage_per_token,
        "tokens_per_s_per_gpu": np.where(fits, full / round_s / gpus_per_replica, 0.0),
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


def _risk(key: tuple) -> tuple[int, int]:
    return WEIGHT_SCHEMES[key[4]].risk_rank, KV_SCHEMES[key[5]].risk_rank


def _mark_dominated(
    keys: list[tuple], status: np.ndarray, reasons: list[str | None], out: dict[str, np.ndarray]
) -> None:
    # Smaller is better on every column (capacity is negated).
    measures = np.stack(
        [
            out["decode_one_s"],
            out["decode_full_s"],
            out["decode_full_stage_s"],
            out["prefill_token_s"],
            out["prefill_token_stage_s"],
            -out["capacity_seqs"],
        ],
        axis=1,
    )  # [K, 6]
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, key in enumerate(keys):
        if status[i] == _OK:
            hw, tp, pp, _ep, _w, _kv, seqs, chunked, tokens = key
            groups[(hw, tp * pp, seqs, chunked, tokens)].append(i)
    for members in groups.values():
        if len(members) < 2:
            continue
        block = measures[members]  # [g, 6]
        risk = np.array([_risk(keys[i]) for i in members])  # [g, 2]: weights, KV
        # dominates[a, b]: a is no worse than b everywhere, strictly better somewhere, and no
        # riskier in weights *and* in KV cache (one risky part is not traded for another).
        a, b = block[:, None, :], block[None, :, :]
        scale = np.abs(b)
        no_worse = (a <= b + 1e-9 * scale).all(axis=2)
        better = (a < b - 1e-6 * scale).any(axis=2)
        dominates = no_worse & better & (risk[:, None, :] <= risk[None, :, :]).all(axis=2)
        for loser in range(len(members)):
            winners = np.flatnonzero(dominates[:, loser])
            if winners.size:
                k = keys[members[int(winners[0])]]
                status[members[loser]] = _DOMINATED
                reasons[members[loser]] = (
                    f"dominated by tp={k[1]} pp={k[2]} ep={k[3]} weights={k[4]}"
                    f" kv={k[5]} (faster on every step measure, no riskier)"
                )


def hopeless_reason(pruned: PruneResult, slos: list) -> str:
    """Why the pruning pass left nothing, naming the closest configuration."""
    counts = pruned.counts()
    where = f"{pruned.space.gpus} x {'/'.join(pruned.space.hardware_names)}"
    parts = [f"{n} {k}" for k, n in counts.items() if n and k != "ok"]
    slo_rows = np.flatnonzero(pruned.status == 3)
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


def _key_label(key: tuple) -> str:
    hw, tp, pp, ep, w, kv, seqs, chunked, tokens = key
    return f"tp{tp} pp{pp} {w} weights, {kv} KV, max_num_seqs {seqs}"
