"""Request-level serving simulation: traffic through a router onto engine replicas.

``simulate(model, hardware, config, workload)`` samples the workload's requests, routes each
arrival to one of ``dp`` replicas (round-robin, or the replica with the fewest outstanding
requests), runs every replica iteration by iteration (``scheduler.py``, or
``static_batching.py``) with each iteration timed by the step model, and reports what the
requests saw: TTFT, TPOT, ITL, E2E and queueing percentiles, throughputs, goodput under the
SLOs, KV-cache utilization and preemptions, in the ``Prediction`` contract.

The replicas are stepped in time order (always the one whose next iteration starts first), so
a router decision sees every replica as it is at the arrival time, and closed-loop users
(whose next request is sent when the previous one finishes) stay causal.

Every arrival also samples the waiting queue and the requests in the system (Poisson arrivals
see time averages): the queue's growth over the run flags overload (``serving_results.py``),
and the mean in the system is Little's L, checked against the arrival rate x mean E2E.

Files: ``scheduler.py`` (one replica, vLLM v1's iteration), ``decodes.py`` (the running decode
set), ``decode_runs.py`` (decode iterations timed in runs), ``static_batching.py``,
``speculative.py``, ``step_fast.py`` (the step model of one configuration), and
``serving_results.py`` (metrics, the Prediction contract).
"""

from __future__ import annotations

import heapq
import math
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import numpy as np

from ..cost.memory import prefix_hits
from ..cost.step import StepModel
from ..cost.step_fast import F, FastStep
from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec
from ..data.workload import Requests, Workload, parse_slo, sample_requests
from ..results import Prediction, Unfit
from .early_stop import MissWatch, stopped_result
from .results import ServingResult, build_result, weighted_percentiles
from .scheduler import ContinuousEngine
from .static_batching import StaticEngine

__all__ = ["simulate", "ServingResult", "Router", "Iteration", "weighted_percentiles"]

Router = Literal["least_outstanding", "round_robin"]


@dataclass
class Iteration:
    """One engine iteration as the scheduler decided it: what an external clock must run.

    ``prefill``: (request, tokens already computed, tokens in this chunk) per prompt chunk;
    ``decode``: the requests that each emit a token; ``predicted_s``: the step model's time for
    it (what a fake clock returns); ``duration_s``: what the clock said it took; ``released``:
    the requests that finished or were preempted since the replica's last iteration (their KV
    is free); ``emitting``: the tokens it emits (the host's sampling and streaming work);
    ``accepted``: under speculative decoding, the drafts each decode keeps (drawn from the
    acceptance rate before the round runs), in ``decode``'s order."""

    replica: int
    start_s: float
    prefill: list[tuple[int, int, int]]
    decode: list[int]
    predicted_s: float
    duration_s: float = 0.0
    released: list[int] = field(default_factory=list)
    emitting: int = 0  # tokens it emits: every decode, and each chunk that ends its prompt
    accepted: list[int] | None = None


class Run:
    """Shared state of one simulation: request lengths, per-request results, the step model."""

    def __init__(
        self,
        *,
        model: ModelSpec,
        config: DeploymentConfig,
        fast: FastStep,
        requests: Requests,
        cached: np.ndarray,
        total_blocks: int,
        shared_prefix_blocks: int,
        spec,
        on_finish,
        clock=None,
    ):
        n = len(requests)
        self.config = config
        self.fast = fast
        self.spec = spec
        self.experts = model.num_local_experts
        self.experts_per_token = model.num_experts_per_tok
        self.decode_kv_index = F["decode_kv"]
        self.decode_pairs_index = F["decode_pairs"]
        self.total_blocks = total_blocks
        self.shared_prefix_blocks = shared_prefix_blocks
        # Python lists: the engines index them one request at a time.
        self.prompt = requests.prompt_tokens.tolist()
        self.output = requests.output_tokens.tolist()
        self.cached = cached.tolist()
        self.emitted = [0] * n
        self.preemptions = [0] * n
        self.admit_s = [math.nan] * n
        self.first_s = [math.nan] * n
        self.finish_s = [math.nan] * n
        self.last_emit_s = [math.nan] * n
        # Decode iterations as runs (first duration, growth per step, steps, sequences
        # emitting in each): step j of a run took ``first + growth x j``.
        self.itl_runs: list[tuple[float, float, int, int]] = []
        self.itl_extra: list[float] = []  # gaps across a preemption
        self.on_finish = on_finish
        # An external clock (a GPU running each iteration, or a fake one in a test): every
        # iteration is handed to it and lasts what it returns; ``iterations`` logs them.
        self.clock = clock
        self.iterations: list[Iteration] = []
        self.released: list[int] = []  # since the last external iteration (``release``)

    def release(self, rid: int) -> None:
        """A request finished or was preempted: an external clock frees its KV."""
        if self.clock is not None:
            self.released.append(rid)


def _kv_blocks(step: StepModel, config: DeploymentConfig, spec) -> int:
    """KV blocks of one replica (a drafter's weights and KV come out of the budget)."""
    memory = step.memory
    if spec is None or not (spec.draft_weights_bytes or spec.draft_kv_bytes_per_token):
        return int(memory.kv_tokens[0] // config.block_size)
    free = float(memory.kv_cache_bytes[0]) - spec.draft_weights_bytes
    per_block = (
        float(memory.kv_bytes_per_token[0]) + spec.draft_kv_bytes_per_token
    ) * config.block_size
    return max(int(free // per_block), 0)


def _unfit(model, hardware, config, kind: Unfit, reason: str) -> ServingResult:
    return ServingResult(
        prediction=Prediction(
            model=model.name,
            hardware=hardware.name,
            config=config.model_dump(mode="json"),
            fits=False,
            reason=reason,
            unfit=kind,
            num_gpus=config.num_gpus,
        )
    )


def simulate(
    model: ModelSpec,
    hardware: HardwareSpec,
    config: DeploymentConfig,
    workload: Workload,
    *,
    seed: int | None = None,
    slos=(),
    progress: bool | str = False,
    step_model: StepModel | None = None,
    router: Router = "least_outstanding",
    clock: Callable[[Iteration], float] | None = None,
    stop_on_miss: bool = False,
) -> ServingResult:
    """Simulate ``workload`` on ``config`` (``dp`` replicas behind ``router``).

    ``seed`` defaults to the workload's; ``slos`` to the workload's SLOs; ``step_model`` may be
    a prebuilt ``StepModel`` of this one configuration (the capacity search reuses it);
    ``progress`` draws a bar on stderr (tqdm, when installed; a string labels it). ``clock``
    times each iteration instead of the step model (one scheduler, two clocks: the executor's
    serving loop runs each ``Iteration`` on the GPU and returns its measured time; continuous
    batching only, every iteration one at a time). A configuration that cannot run (invalid,
    does not fit, a request longer than ``max_model_len`` or than the KV cache) comes
    back with ``prediction.fits = False`` and a one-line ``reason``: nothing raises for it.
    ``stop_on_miss`` (a search's probes) ends an open-loop run as soon as it has certainly
    missed an SLO (``early_stop``): the result then holds that miss, the run's limits so far
    and ``stopped`` set, but no metrics.
    """
    from ..cost.predict import fit_reason

    seed = workload.seed if seed is None else seed
    slos = tuple(parse_slo(s) if isinstance(s, str) else s for s in slos) or workload.slos
    step = step_model or StepModel.build(model, hardware, config)
    unfit = fit_reason(step, 0, batch=1, tokens_per_sequence=config.max_model_len)
    if unfit is not None:
        return _unfit(model, hardware, config, *unfit)
    if config.scheduling == "static" and config.speculative is not None:
        return _unfit(
            model,
            hardware,
            config,
            "unsupported",
            "speculative decoding is simulated with continuous batching only",
        )
    requests = sample_requests(workload, seed)
    longest = int((requests.prompt_tokens + requests.output_tokens).max())
    if longest > config.max_model_len:
        return _unfit(
            model,
            hardware,
            config,
            "request_too_long",
            f"a request of {longest} tokens (prompt + output) exceeds "
            f"max_model_len={config.max_model_len}",
        )
    fast = FastStep(step)
    spec = None
    if config.speculative is not None:
        from .speculative import SpeculativeModel

        spec = SpeculativeModel(
            model=model, hardware=hardware, config=config, target=fast, seed=seed + 1
        )
    total_blocks = _kv_blocks(step, config, spec)
    block = config.block_size
    prompt = requests.prompt_tokens
    cached = prefix_hits(prompt, workload.prefix_sharing, block).astype(np.int64)
    shared_blocks = int(cached.max() // block) if cached.size else 0
    slots = requests.output_tokens + prompt - 1 + (0 if spec is None else spec.g + 1)
    needed = int(-(-slots.max() // block))
    if needed > total_blocks - shared_blocks:
        return _unfit(
            model,
            hardware,
            config,
            "kv_cache",
            f"the KV cache holds {total_blocks} blocks of {block} tokens; the longest "
            f"request needs {needed}",
        )

    n = len(requests)
    closed = workload.arrival.process == "closed"
    pending: list[tuple[float, int]] = []  # (arrival time, request) heap
    if closed:
        users = min(workload.arrival.concurrency or 1, n)
        pending = [(0.0, rid) for rid in range(users)]
    else:
        pending = list(zip(requests.arrival_s.tolist(), range(n), strict=True))
    heapq.heapify(pending)
    issued = [len(pending)]
    label = progress if isinstance(progress, str) else "simulating"
    bar = _progress_bar(n, label) if progress else None
    think = workload.arrival.think_s

    def on_finish(rid: int, end: float) -> None:
        if closed and issued[0] < n:
            heapq.heappush(pending, (end + think, issued[0]))
            issued[0] += 1
        if bar is not None:
            bar.update(1)

    run = Run(
        model=model,
        config=config,
        fast=fast,
        requests=requests,
        cached=cached,
        total_blocks=total_blocks,
        shared_prefix_blocks=shared_blocks,
        spec=spec,
        on_finish=on_finish,
        clock=clock,
    )
    if clock is not None and config.scheduling == "static":
        return _unfit(model, hardware, config, "unsupported",
                      "an external clock drives continuous batching only")  # fmt: skip
    engine_type = StaticEngine if config.scheduling == "static" else ContinuousEngine
    engines = [engine_type(run, r) for r in range(config.dp)]
    arrival = np.full(n, np.nan)
    replica = np.zeros(n, dtype=np.int64)
    queue_at_arrival = np.zeros(n)  # requests waiting for admission, seen by each arrival
    in_system_at_arrival = np.zeros(n)  # requests routed and not finished, seen by each arrival
    routed = 0
    watch = None
    if stop_on_miss and workload.is_open_loop and not workload.steady_state and clock is None:
        watch = MissWatch(slos, arrival, run)
    every, steps, miss = max(1, n // 64), 0, None
    try:
        while True:
            next_arrival = pending[0][0] if pending else math.inf
            engine = None
            for candidate in engines:
                if candidate.has_work and (engine is None or candidate.clock < engine.clock):
                    engine = candidate
            if engine is None and not pending:
                break
            if engine is None or next_arrival <= engine.clock:
                time_s, rid = heapq.heappop(pending)
                if len(engines) == 1:
                    target = 0
                elif router == "round_robin":
                    target = routed % len(engines)
                else:
                    loads = [e.outstanding(time_s) for e in engines]
                    target = loads.index(min(loads))
                arrival[rid] = time_s
                replica[rid] = target
                queue_at_arrival[rid] = sum(len(e.waiting) for e in engines)
                in_system_at_arrival[rid] = sum(e.outstanding(time_s) for e in engines)
                engines[target].add(rid, time_s)
                routed += 1
                if watch is not None and routed % every == 0:
                    miss = watch.check(time_s)  # every busy engine's clock is at or past it
                    if miss is not None:
                        break
                continue
            engine.step(next_arrival)
            steps += 1
            if watch is not None and not pending and steps % 64 == 0:
                now = min(e.clock for e in engines if e.has_work) if any(
                    e.has_work for e in engines) else engine.clock  # fmt: skip
                miss = watch.check(now)
                if miss is not None:
                    break
    finally:
        if bar is not None:
            bar.close()
    if miss is not None:
        return stopped_result(model, hardware, config, run, engines, miss)
    return build_result(
        model,
        hardware,
        config,
        workload,
        step,
        run,
        engines,
        spec,
        slos,
        router,
        arrival=arrival,
        replica=replica,
        queue_at_arrival=queue_at_arrival,
        in_system_at_arrival=in_system_at_arrival,
        requests=requests,
        cached=cached,
    )


def _progress_bar(total: int, label: str):
    try:
        from tqdm import tqdm
    except ImportError:  # optional: no bar without tqdm
        return None
    return tqdm(total=total, file=sys.stderr, unit="req", desc=label, leave=False)
