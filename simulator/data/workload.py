"""Traffic: when requests arrive and how long their prompts and outputs are.

A ``Workload`` is data: an arrival process, a prompt-length and an output-length distribution
(or a trace file holding all three), a prefix-sharing rate and optional SLOs.

Arrival processes:

- ``poisson``: independent requests at ``rate_per_s`` (exponential gaps);
- ``gamma``: gaps from a Gamma distribution with the same mean and coefficient of variation
  ``cv``; cv > 1 gives bursts (cv = 1 is Poisson);
- ``closed``: ``concurrency`` users, each sending its next request when the previous one
  finishes (plus ``think_s``); the load adapts to the server;
- ``offline``: every request queued at time 0, as ``trtllm-bench`` and ``vllm bench
  throughput`` measure the maximum throughput;
- ``trace``: replay of a JSONL or CSV file of ``arrival_s, prompt_tokens, output_tokens``
  (``timestamp``/``input_tokens`` spellings accepted); a rate rescales its time axis. A trace
  without arrival times gives only lengths: it runs offline, or with a rate, as Poisson arrivals.

Lengths: ``fixed``, ``uniform`` (inclusive bounds), ``normal``, ``lognormal`` (given by the mean
and standard deviation of the lengths themselves) and ``empirical`` (values with weights), all
rounded to integers and clipped to ``[min, max]``.

Randomness is common across rates: gaps are drawn for a unit rate and divided by the rate, so
two runs with the same seed at different rates see the same requests in the same order, only
compressed in time (what a bisection on the rate wants).

Names: ``get_workload("chat")``, ``"isl128-osl2048"``, ``"path/to/trace.jsonl"``, and options
after a colon: ``"chat:concurrency=64"``, ``"code:cv=3,prefix=0.5,requests=2000"``. ``isl=`` and
``osl=`` fix every prompt's or output's length, as a benchmark runs: ``"chat:isl=1000,osl=1000"``
(an ``isl``/``osl`` pair alone, with no preset, is ``"isl1000-osl1000"``).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from ..errors import WorkloadError, one_line
from .slo import Slo, parse_slo
from .traces import load_trace

__all__ = [
    "LengthDist",
    "Arrival",
    "Workload",
    "Requests",
    "Slo",
    "parse_slo",
    "get_workload",
    "list_workloads",
    "sample_requests",
    "PRESETS",
]


# The most requests one simulation takes: bounded time and memory (a few GB at this size).
MAX_REQUESTS = 1_000_000


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LengthDist(_Frozen):
    """A distribution of token counts (see the module docstring for the kinds)."""

    kind: Literal["fixed", "uniform", "normal", "lognormal", "empirical"] = "fixed"
    mean: float | None = Field(default=None, gt=0)
    std: float = Field(default=0.0, ge=0)
    low: int | None = Field(default=None, ge=1)
    high: int | None = Field(default=None, ge=1)
    values: tuple[int, ...] = ()
    weights: tuple[float, ...] = ()
    min: int = Field(default=1, ge=1)
    max: int | None = Field(default=None, ge=1)

    @model_validator(mode="after")
    def _check(self) -> LengthDist:
        if self.kind in ("fixed", "normal", "lognormal") and self.mean is None:
            raise ValueError(f"a {self.kind} length needs a mean")
        if self.kind == "uniform" and (
            self.low is None or self.high is None or self.low > self.high
        ):
            raise ValueError("a uniform length needs low <= high")
        if self.kind == "empirical":
            if not self.values or any(v < 1 for v in self.values):
                raise ValueError("an empirical length needs positive values")
            if self.weights and (
                len(self.weights) != len(self.values)
                or any(w < 0 for w in self.weights)
                or sum(self.weights) <= 0
            ):
                raise ValueError("empirical weights: one non-negative weight per value")
        if self.max is not None and self.max < self.min:
            raise ValueError("max must be at least min")
        return self

    def sample(self, rng: np.random.Generator, size: int) -> np.ndarray:
        mean = float(self.mean or 0.0)  # set for fixed/normal/lognormal (validated)
        if self.kind == "fixed":
            x = np.full(size, mean)
        elif self.kind == "uniform":
            x = rng.integers(int(self.low or 1), int(self.high or 1) + 1, size).astype(float)
        elif self.kind == "normal":
            x = rng.normal(mean, self.std, size)
        elif self.kind == "lognormal":
            # Parameters of the underlying normal from the mean and std of the lengths.
            sigma2 = math.log1p((self.std / mean) ** 2)
            x = rng.lognormal(math.log(mean) - sigma2 / 2, math.sqrt(sigma2), size)
        else:
            weights = np.asarray(self.weights or [1.0] * len(self.values), dtype=float)
            x = rng.choice(np.asarray(self.values, dtype=float), size, p=weights / weights.sum())
        return np.clip(np.rint(x), self.min, self.max or np.inf).astype(np.int64)


class Arrival(_Frozen):
    process: Literal["poisson", "gamma", "closed", "offline", "trace"] = "poisson"
    rate_per_s: float | None = Field(default=None, gt=0)
    cv: float = Field(default=1.0, gt=0)
    concurrency: int | None = Field(default=None, ge=1)
    think_s: float = Field(default=0.0, ge=0)

    @model_validator(mode="after")
    def _check(self) -> Arrival:
        if self.process in ("poisson", "gamma") and self.rate_per_s is None:
            raise ValueError(f"{self.process} arrivals need rate_per_s")
        if self.process == "closed" and self.concurrency is None:
            raise ValueError("closed-loop arrivals need concurrency")
        return self


class Workload(_Frozen):
    """Arrivals, lengths (or a trace), prefix sharing and SLOs of one traffic scenario."""

    name: str
    arrival: Arrival
    prompt: LengthDist | None = None
    output: LengthDist | None = None
    trace: str | None = None  # path of a JSONL/CSV trace (lengths and, for replay, arrivals)
    num_requests: int = Field(default=1000, ge=1, le=MAX_REQUESTS)
    prefix_sharing: float = Field(default=0.0, ge=0, lt=1)  # prompt fraction hitting the cache
    slos: tuple[Slo, ...] = ()
    seed: int = 0
    description: str = ""
    # Report latencies and throughput over the steady state only: without the first and last
    # ``STEADY_TRIM`` of the requests (a closed loop's users all start at t = 0, and a run drains
    # at its end). See simulator/serving/results.py.
    steady_state: bool = False

    @model_validator(mode="after")
    def _check(self) -> Workload:
        if self.trace is None and (self.prompt is None or self.output is None):
            raise ValueError("a workload needs prompt and output lengths, or a trace")
        if self.arrival.process == "trace" and self.trace is None:
            raise ValueError("trace arrivals need a trace file")
        return self

    @property
    def is_open_loop(self) -> bool:
        return self.arrival.process in ("poisson", "gamma", "trace")


def _lognormal(mean: float, std: float, lo: int, hi: int) -> LengthDist:
    return LengthDist(kind="lognormal", mean=mean, std=std, min=lo, max=hi)


def _fixed(n: int) -> LengthDist:
    return LengthDist(kind="fixed", mean=n)


def _benchmark_pair(isl: int, osl: int, n: int) -> Workload:
    return Workload(
        name=f"isl{isl}-osl{osl}",
        arrival=Arrival(process="offline"),
        prompt=_fixed(isl),
        output=_fixed(osl),
        num_requests=n,
        description=f"benchmark pair: {isl} prompt / {osl} output tokens, offline",
    )


PRESETS: dict[str, Workload] = {
    w.name: w
    for w in [
        Workload(
            name="chat",
            arrival=Arrival(rate_per_s=8.0),
            prompt=_lognormal(768, 768, 16, 6144),
            output=_lognormal(256, 256, 8, 1536),
            description="conversational: ~770-token prompts, ~260-token answers, 8 req/s",
        ),
        Workload(
            name="summarization",
            arrival=Arrival(rate_per_s=1.0),
            prompt=_lognormal(6000, 2500, 1024, 15000),
            output=LengthDist(kind="normal", mean=300, std=100, min=32, max=1000),
            description="long prompts (~6k tokens), short summaries, 1 req/s",
        ),
        Workload(
            name="code",
            arrival=Arrival(rate_per_s=4.0),
            prompt=_lognormal(2048, 1500, 128, 7000),
            output=_lognormal(128, 128, 4, 1000),
            prefix_sharing=0.3,
            description="code completion: ~2k-token context (30 % cached), short output",
        ),
    ]
    + [
        _benchmark_pair(isl, osl, n)
        for isl, osl, n in [
            (128, 128, 1000),
            (128, 2048, 1000),
            (2048, 128, 1000),
            (5000, 500, 1000),
            (20000, 2000, 256),
        ]
    ]
}


def list_workloads() -> list[str]:
    return list(PRESETS)


_OPTIONS = {
    "rate": "rate",
    "cv": "cv",
    "concurrency": "concurrency",
    "think": "think_s",
    "prefix": "prefix_sharing",
    "requests": "num_requests",
    "isl": "prompt",
    "osl": "output",
}


def _parse_rate(rate: float | str | None) -> float | None:
    if rate is None:
        return None
    try:
        value = float(rate)
    except (TypeError, ValueError):
        raise WorkloadError(f"rate {rate!r} is not a number (requests/s, or 'inf')") from None
    if math.isnan(value) or value <= 0:
        raise WorkloadError(
            f"rate must be positive (requests/s, or 'inf' for offline), got {rate}"
        )
    return value


def get_workload(
    name_or_path: str,
    *,
    rate: float | str | None = None,
    num_requests: int | None = None,
    seed: int | None = None,
    slos=(),
    steady_state: bool | None = None,
) -> Workload:
    """A preset or a trace file, with options (see the module docstring); ``rate = inf`` means
    offline. Bad names, options or traces raise ``WorkloadError`` in one line."""
    text = str(name_or_path).strip()
    base, _, options = text.partition(":") if not Path(text).exists() else (text, "", "")
    values: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in options.split(","))):
        key, eq, value = item.partition("=")
        if not eq or key.strip() not in _OPTIONS:
            raise WorkloadError(
                f"workload option {item!r}: expected one of "
                f"{', '.join(k + '=...' for k in _OPTIONS)}"
            )
        values[_OPTIONS[key.strip()]] = value.strip()
    pair = re.fullmatch(r"isl(\d+)-osl(\d+)", base)
    if base in PRESETS:
        workload = PRESETS[base]
    elif pair and min(int(pair[1]), int(pair[2])) > 0:
        workload = _benchmark_pair(int(pair[1]), int(pair[2]), 1000)
    elif Path(base).is_file():
        trace = load_trace(base)  # validates now: an empty or garbled trace fails here
        workload = Workload(
            name=Path(base).name,
            trace=str(Path(base).resolve()),
            # Lengths only: offline, or Poisson once a rate is given (never all at t=0 silently).
            arrival=Arrival(process="trace" if trace.timed else "offline"),
            num_requests=len(trace.prompt),
            description=f"trace replay of {len(trace.prompt)} requests",
        )
    elif base.endswith((".jsonl", ".json", ".csv")) or "/" in base:
        raise WorkloadError(f"trace file {base!r} not found")
    else:
        raise WorkloadError(
            f"unknown workload {base!r}; presets: {', '.join(PRESETS)}, "
            "or a trace file (.jsonl/.csv)"
        )
    arrival = dict(workload.arrival.model_dump())
    update: dict = {}
    rate = _parse_rate(values.pop("rate", None) if rate is None else rate)
    try:
        if "cv" in values:
            arrival.update(process="gamma", cv=float(values.pop("cv")))
        if "concurrency" in values:
            arrival.update(process="closed", concurrency=int(values.pop("concurrency")))
        if "think_s" in values:
            arrival["think_s"] = float(values.pop("think_s"))
        if "prefix_sharing" in values:
            update["prefix_sharing"] = float(values.pop("prefix_sharing"))
        if "num_requests" in values:
            update["num_requests"] = int(values.pop("num_requests"))
        for key in ("prompt", "output"):
            if key in values:
                if workload.trace is not None:
                    raise WorkloadError(f"a trace sets its own lengths: drop {key} option")
                update[key] = _fixed(int(values.pop(key)))
        if rate is not None:
            if math.isinf(rate):
                arrival.update(process="offline", rate_per_s=None)
            elif arrival["process"] == "closed":
                raise WorkloadError("a closed-loop workload has no rate (its users set the pace)")
            else:
                if arrival["process"] == "offline":
                    arrival["process"] = "poisson"
                arrival["rate_per_s"] = rate
        if num_requests is not None:
            if num_requests > MAX_REQUESTS:
                raise WorkloadError(
                    f"{num_requests:,} requests is more than one run simulates "
                    f"({MAX_REQUESTS:,}); a steady state needs far fewer (--steady-state)"
                )
            if num_requests < 1:
                raise WorkloadError(
                    f"the number of requests must be at least 1, got {num_requests}"
                )
            update["num_requests"] = num_requests
        if seed is not None:
            if seed < 0:
                raise WorkloadError(f"the seed must be 0 or more, got {seed}")
            update["seed"] = seed
        if steady_state is not None:
            update["steady_state"] = steady_state
        if slos:
            update["slos"] = tuple(parse_slo(s) if isinstance(s, str) else s for s in slos)
        return Workload(
            **{
                **workload.model_dump(exclude={"arrival", "slos"}),
                "slos": workload.slos,
                **update,
                "arrival": Arrival(**arrival),
            }
        )
    except (ValidationError, ValueError) as error:
        raise WorkloadError(f"workload {text!r}: {one_line(error)}") from None


@dataclass(frozen=True)
class Requests:
    """The sampled requests of a run, arrays ``[num_requests]`` (arrivals sorted)."""

    arrival_s: np.ndarray  # open loop: absolute times; offline: zeros; closed loop: NaN
    prompt_tokens: np.ndarray
    output_tokens: np.ndarray

    def __len__(self) -> int:
        return len(self.prompt_tokens)


def sample_requests(workload: Workload, seed: int | None = None) -> Requests:
    """Draw the requests of ``workload`` (same seed, same requests; see the module docstring)."""
    rng = np.random.default_rng(workload.seed if seed is None else seed)
    n = workload.num_requests
    arrival = workload.arrival
    # Independent streams, so changing the length distribution keeps the arrival pattern.
    gap_rng, prompt_rng, output_rng = rng.spawn(3)
    if workload.trace is not None:
        trace = load_trace(workload.trace)
        reps = -(-n // len(trace.prompt))
        prompt = np.tile(trace.prompt, reps)[:n]
        output = np.tile(trace.output, reps)[:n]
        times = trace.arrival_s - trace.arrival_s.min()
        if reps > 1:  # replay the trace back to back
            span = times.max() + (times.max() / max(len(times) - 1, 1) if len(times) > 1 else 1.0)
            times = np.concatenate([times + i * span for i in range(reps)])[:n]
        else:
            times = times[:n]
    else:
        assert workload.prompt is not None and workload.output is not None  # validated
        prompt = workload.prompt.sample(prompt_rng, n)
        output = workload.output.sample(output_rng, n)
        times = np.zeros(n)
    if arrival.process == "offline":
        arrival_s = np.zeros(n)
    elif arrival.process == "closed":
        arrival_s = np.full(n, np.nan)
    elif arrival.process == "trace":
        arrival_s = np.sort(times).astype(float)
        if arrival.rate_per_s is not None and len(arrival_s) > 1 and arrival_s[-1] > 0:
            arrival_s = arrival_s * ((n - 1) / arrival_s[-1] / arrival.rate_per_s)
    else:
        shape = 1.0 / arrival.cv**2 if arrival.process == "gamma" else 1.0
        gaps = gap_rng.gamma(shape, 1.0 / shape, n)  # unit mean; / rate below
        gaps[0] = 0.0  # the run starts with the first arrival
        arrival_s = np.cumsum(gaps) / float(arrival.rate_per_s or 1.0)  # set (validated)
    return Requests(
        arrival_s=arrival_s,
        prompt_tokens=prompt.astype(np.int64),
        output_tokens=output.astype(np.int64),
    )
