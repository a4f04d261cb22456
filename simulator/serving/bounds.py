"""Capacity bounds: the most a replica could serve of a workload, from the step model alone.

A serving simulation answers "does this configuration meet the SLOs at rate r?" in tens of
milliseconds; a search must rule most configurations out without asking. The steady-state model
here answers for thousands of configurations at once, with a rate the simulation does not beat.

**The mean iteration.** At steady state a replica runs iterations back to back. Let ``u`` be the
requests that arrive during one iteration, on average. Then

- ``b = u D / E`` sequences decode in every iteration (Little's law: a request decodes for
  ``D / E`` rounds, ``D`` = output tokens - 1, ``E`` = tokens per round: 1, or
  ``(1 - a^(g+1)) / (1 - a)`` with ``g`` drafted tokens accepted at rate ``a``), reading the
  mean context a decoding sequence holds;
- arrivals are random, so a share ``exp(-u)`` of iterations find no new prompt and only decode;
  the others also prefill the prompts that came during the iteration before (``u / (1 -
  exp(-u))`` of them), in chunks when the token budget is short;

and the iteration takes ``h(u)``, the step model's time for that mix (plus the drafter's).
The arrival rate it sustains is ``rate(u) = u / h(u)``, the mean time per output token is
``h(u) / E``, the mean gap between emissions ``h(u)``. Everything follows from one number
``u``, so a bisection over ``u`` runs for every configuration in parallel.

**Why the simulation does not beat it.** Each idealization errs toward more capacity:

- decodes read the mean context and hold the mean KV, with no fluctuation to preempt them, and
  reach ``max_num_seqs`` with no request left waiting;
- no queueing: TTFT is only the request's own prefill, in chunks shared with the decodes;
- mixture-of-experts iterations touch only the experts the decodes touch;
- a percentile of ITL or E2E at 90 or above is at least its mean; one of TPOT, at least the
  mean plus the spread that rounds with prefills alone give its shortest requests
  (``MeanIteration.tpot_s``, ``mean_iteration.py``); below the 90th only the throughput limits apply.

So the capacity is at most ``rate(u*)``, where ``u*`` is the largest ``u`` at which nothing
fails: TPOT / ITL / E2E within their targets, the request at the TTFT percentile
prefilled in time, ``b`` within ``max_num_seqs`` and the KV cache, the iteration within the
token budget. The bound is a statement about the steady state of the model, not a theorem about
every finite run, so it carries ``BOUND_SLACK``; ``tests/simulator/test_bounds.py`` holds it
above the simulated capacity of sampled configurations, and ``benchmarks/bench_search.py``
above every configuration of the search spaces it enumerates.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from ..cost.configs import ConfigArrays
from ..cost.memory import prefix_hits
from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec, SpeculativeConfig
from .mean_iteration import MEAN_PERCENTILE, MeanIteration
from .speculative import expected_tokens_per_round

__all__ = [
    "bound_of",
    "tpot_at",
    "tpot_floor",
    "TrafficShape",
    "Drafter",
    "CapacityBounds",
    "capacity_bounds",
    "MEAN_PERCENTILE",
    "BOUND_SLACK",
    "LIMITS",
]

# A finite run starts empty, and where max_num_seqs or the token budget binds, its queue grows
# too slowly to be caught within a run of a few hundred requests: the simulation then passes
# rates up to 15 % past the steady state (the most seen over the 133 best Llama-3.1-8B
# configurations on two H100s, 500 chat requests, max_num_seqs 256; 2026-12-06). The bound
# carries that, and a margin.
BOUND_SLACK = 1.25
# What sets the bound (CapacityBounds.limit indexes this).
LIMITS = ("slo", "max_num_seqs", "kv_cache", "token_budget", "cannot run")
_BISECTION_STEPS = 14
# Knobs that change only the memory plan, never a step's time or the token budget.
_MEMORY_ONLY = {"max_num_seqs", "dp", "gpu_memory_utilization", "max_model_len"}


@dataclass(frozen=True)
class TrafficShape:
    """What the bound needs of the traffic: means over the sampled requests, in tokens."""

    prompt: float  # mean prompt
    new_prompt: float  # mean prompt tokens computed (prefix-cache hits skipped)
    pairs: float  # mean causal query-key pairs of a prompt's computed part
    naive_scores: float  # mean score-matrix elements of a prompt (non-fused attention)
    decodes: float  # mean output tokens after the first
    context: float  # mean KV length of a decoding sequence, weighted by its decoding time
    new_prompts: np.ndarray  # sorted computed prompt lengths, for TTFT percentiles
    decode_counts: np.ndarray  # sorted decode tokens per request, for E2E percentiles

    @classmethod
    def from_requests(cls, prompt_tokens, output_tokens, *, prefix_sharing: float = 0.0,
                      block_size: int = 16) -> TrafficShape:  # fmt: skip
        """From sampled lengths; prefix hits in whole blocks, as the simulation counts them."""
        prompt = np.asarray(prompt_tokens, dtype=float)
        output = np.asarray(output_tokens, dtype=float)
        cached = prefix_hits(prompt, prefix_sharing, block_size)
        new = prompt - cached
        decodes = np.maximum(output - 1.0, 0.0)
        weight = max(float(decodes.sum()), 1e-9)
        return cls(
            prompt=float(prompt.mean()),
            new_prompt=float(new.mean()),
            pairs=float((new * cached + new * (new + 1) / 2).mean()),
            naive_scores=float((new * prompt).mean()),
            decodes=max(float(decodes.mean()), 1e-9),
            context=float((decodes * prompt + decodes * (decodes - 1) / 2).sum() / weight),
            new_prompts=np.sort(new),
            decode_counts=np.sort(decodes),
        )


@dataclass(frozen=True)
class Drafter:
    """A speculative option: ``tokens`` drafted per round, each accepted with ``acceptance``.

    ``method``: ``eagle`` (a head costing ``memory.eagle_layers_per_token`` target layers per
    drafted token), ``draft`` (``draft_model`` at tp 1 beside the target) or ``ngram`` (free)."""

    method: str
    tokens: int
    acceptance: float
    draft_model: ModelSpec | None = None

    @property
    def tokens_per_round(self) -> float:
        return expected_tokens_per_round(self.tokens, self.acceptance)

    @classmethod
    def of(cls, speculative: SpeculativeConfig | None) -> Drafter | None:
        """The drafter a deployment's speculative decoding describes (None: no speculation)."""
        if speculative is None:
            return None
        from ..data.models import get_model

        return cls(
            method=speculative.method,
            tokens=speculative.num_speculative_tokens,
            acceptance=speculative.acceptance_rate,
            draft_model=get_model(speculative.draft_model or "")
            if speculative.method == "draft"
            else None,
        )


@dataclass(frozen=True)
class CapacityBounds:
    """Per configuration ``[N]``: the bound and what sets it."""

    rate_per_s: np.ndarray  # requests/s one replica cannot exceed within the SLOs (0: none)
    limit: np.ndarray  # index into LIMITS
    batch: np.ndarray  # decoding sequences at the bound
    tpot_floor_s: np.ndarray  # time per output token of one request alone
    ttft_floor_s: np.ndarray  # prefill of the TTFT-percentile prompt alone
    kv_blocks: np.ndarray  # KV-cache blocks of one replica, as the simulation sizes them


def capacity_bounds(
    model: ModelSpec,
    hardware: HardwareSpec,
    configs: ConfigArrays,
    traffic: TrafficShape,
    slos=(),
    *,
    drafters: Sequence[Drafter | None] = (None,),
    drafter: np.ndarray | None = None,
) -> CapacityBounds:
    """The capacity bound of each configuration (see the module docstring). Row ``i`` drafts
    with ``drafters[drafter[i]]`` (None: no speculation; ``drafter`` defaults to all zeros)."""
    choice = np.zeros(len(configs), dtype=int) if drafter is None else np.asarray(drafter)
    # Rows that differ only in memory knobs share one search for the SLO limit.
    step_columns = [f.name for f in fields(ConfigArrays) if f.name not in _MEMORY_ONLY]
    matrix = np.stack(
        [getattr(configs, name).astype(float) for name in step_columns] + [choice], axis=1
    )
    _, first, row = np.unique(matrix, axis=0, return_index=True, return_inverse=True)
    row = row.reshape(-1)
    full = MeanIteration(model, hardware, configs, traffic, drafters, choice)
    distinct = MeanIteration(
        model, hardware, configs.select(first), traffic, drafters, choice[first]
    )

    kv_tokens, kv_per_sequence = full.kv_room()
    max_batch = np.minimum(configs.max_num_seqs, np.floor(kv_tokens / kv_per_sequence))
    budget = configs.max_num_batched_tokens * configs.pp
    per_request = traffic.new_prompt + traffic.decodes * full.query / full.per_round
    u_batch = max_batch * full.per_round / traffic.decodes
    u_budget = budget / per_request
    u_high = np.minimum(u_batch, u_budget)  # [N]

    # Largest u meeting the SLOs, per distinct row, below the largest u any of its
    # configurations can reach: a bisection in log u where that top fails.
    top = np.zeros(len(first))
    np.maximum.at(top, row, u_high)
    met_top = distinct.slos_met(top, slos)
    low, high = top * 1e-4, top.copy()
    searching = ~met_top & distinct.slos_met(low, slos)
    for _ in range(_BISECTION_STEPS):
        mid = np.sqrt(low * high)
        met = distinct.slos_met(mid, slos)
        low = np.where(searching & met, mid, low)
        high = np.where(searching & ~met, mid, high)
    # The bracket's top end, so the bound stays a bound wherever the bisection stopped.
    u_slo = np.where(met_top, np.inf, np.where(searching, high, 0.0))[row]

    u_star = np.minimum(u_high, u_slo)
    with np.errstate(divide="ignore", invalid="ignore"):
        rate = np.where(u_star > 0, u_star / full.iteration_s(np.maximum(u_star, 1e-12)), 0.0)
    runs = full.step.valid & (kv_tokens >= kv_per_sequence) & np.isfinite(rate)
    limit = np.select(
        [~runs, u_slo < u_high, u_budget < u_batch, max_batch < configs.max_num_seqs],
        [LIMITS.index("cannot run"), LIMITS.index("slo"), LIMITS.index("token_budget"),
         LIMITS.index("kv_cache")],
        LIMITS.index("max_num_seqs"),
    )  # fmt: skip
    tpot_floor, ttft_floor = distinct.floors(slos)
    return CapacityBounds(
        rate_per_s=np.where(runs, rate * BOUND_SLACK, 0.0),
        limit=limit,
        batch=np.where(runs, u_star * traffic.decodes / full.per_round, 0.0),
        tpot_floor_s=tpot_floor[row],
        ttft_floor_s=ttft_floor[row],
        kv_blocks=np.floor(kv_tokens / configs.block_size).astype(int),
    )


def tpot_at(
    model: ModelSpec,
    hardware: HardwareSpec,
    configs: ConfigArrays,
    traffic: TrafficShape,
    rates: np.ndarray,
    *,
    percentile: float = 99.0,
    drafters: Sequence[Drafter | None] = (None,),
    drafter: np.ndarray | None = None,
) -> np.ndarray:
    """The steady state's lower bound on a TPOT percentile when configuration ``i`` serves
    ``rates[i]`` requests/s (inf where it cannot: past its batch, KV or token-budget limit)."""
    choice = np.zeros(len(configs), dtype=int) if drafter is None else np.asarray(drafter)
    mean = MeanIteration(model, hardware, configs, traffic, drafters, choice)
    kv_tokens, kv_per_sequence = mean.kv_room()
    max_batch = np.minimum(configs.max_num_seqs, np.floor(kv_tokens / kv_per_sequence))
    per_request = traffic.new_prompt + traffic.decodes * mean.query / mean.per_round
    high = np.minimum(
        max_batch * mean.per_round / traffic.decodes,
        configs.max_num_batched_tokens * configs.pp / per_request,
    )
    rates = np.asarray(rates, dtype=float)
    reachable = (high > 0) & (high / mean.iteration_s(np.maximum(high, 1e-12)) >= rates)
    low = np.zeros_like(high)
    for _ in range(2 * _BISECTION_STEPS):  # the u whose rate u / h(u) is the one asked
        mid = (low + high) / 2
        fast_enough = mid / mean.iteration_s(np.maximum(mid, 1e-12)) >= rates
        high = np.where(fast_enough, mid, high)
        low = np.where(fast_enough, low, mid)
    tpot = mean.tpot_s(np.maximum(high, 1e-12), percentile)
    return np.where(reachable & mean.step.valid, tpot, np.inf)


def tpot_floor(
    model: ModelSpec,
    hardware: HardwareSpec,
    configs: ConfigArrays,
    traffic: TrafficShape,
    rates: np.ndarray,
    *,
    drafters: Sequence[Drafter | None] = (None,),
    drafter: np.ndarray | None = None,
    steps: int = 3,
) -> np.ndarray:
    """A cheap lower bound on ``tpot_at`` (any percentile): the mean round per token at a load
    below the steady state's. ``tpot_at`` solves ``u = rate h(u)`` for the load ``u``; from
    ``u = 0``, each of ``steps`` rounds of ``u <- rate h(u)`` stays below that solution while
    ``h`` grows with the load, and the mean round per token grows with it too, where the
    percentile only adds a spread. It orders configurations for a search that needs the
    exact value only for the few that could rank first: ``steps`` step evaluations, not
    ``tpot_at``'s dozens."""
    choice = np.zeros(len(configs), dtype=int) if drafter is None else np.asarray(drafter)
    mean = MeanIteration(model, hardware, configs, traffic, drafters, choice)
    rates = np.asarray(rates, dtype=float)
    u = np.zeros(len(configs))
    for _ in range(steps):
        u = rates * mean.iteration_s(np.maximum(u, 1e-12))
    per_token = mean.iteration_s(np.maximum(u, 1e-12)) / mean.per_round
    return np.where(mean.step.valid, per_token, np.inf)


def bound_of(
    model: ModelSpec, hardware: HardwareSpec, config: DeploymentConfig, workload, slos=()
) -> tuple[float, str]:
    """(the capacity bound of one deployment's replica under ``workload``, what sets it)."""
    from ..data.workload import sample_requests

    requests = sample_requests(workload)
    shape = TrafficShape.from_requests(
        requests.prompt_tokens,
        requests.output_tokens,
        prefix_sharing=workload.prefix_sharing,
        block_size=config.block_size,
    )
    result = capacity_bounds(
        model,
        hardware,
        ConfigArrays.from_configs([config]),
        shape,
        tuple(slos) or workload.slos,
        drafters=[Drafter.of(config.speculative)],
    )
    return float(result.rate_per_s[0]), LIMITS[int(result.limit[0])]
