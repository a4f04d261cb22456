"""The search space of ``tune plan``, as data.

A point of the space is one deployment of one model on a GPU budget:

- **where**: the GPU type (when several are offered) and, per replica, tensor parallelism ``tp``,
  pipeline stages ``pp`` and, for mixture-of-experts models, expert parallelism ``ep``; then the
  number of ``replicas`` behind a router, at most ``gpus // (tp * pp)``;
- **quantization**: the weight scheme and the KV-cache dtype, each with the quality risk that
  ``tuner.search.choices`` labels it with; nothing riskier than ``--allow-quant`` permits is searched;
- **batching**: ``max_num_seqs``, chunked prefill and, only when chunked prefill is on,
  ``max_num_batched_tokens`` (without chunking the engine must take a whole prompt in one step,
  so the token budget is pinned to ``max_model_len``);
- **speculative decoding**: the method (``tuner.search.choices``), and only when there is one, the
  number of drafted tokens; the draft model is fixed by the target.

Knobs that depend on others are *conditional*: Optuna's define-by-run API asks for them only
when they matter, under names whose choices never change (a requirement of its categorical
distributions). ``SearchSpace.suggest(trial)`` is the one place that talks to a trial;
``SearchSpace.points()`` enumerates the same space for exhaustive checks.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import numpy as np

from simulator.cost.configs import ConfigArrays
from simulator.data.policies import DEFAULT_GPU_MEMORY_UTILIZATION
from simulator.data.specs import (
    Admission,
    DeploymentConfig,
    HardwareSpec,
    ModelSpec,
    SpeculativeConfig,
)
from simulator.errors import ConfigError
from tuner.search.choices import (
    DEFAULT_ALLOW_QUANT,
    KV_SCHEMES,
    RISK_LEVELS,
    SPEC_METHODS,
    WEIGHT_SCHEMES,
    draft_model,
    eagle_head,
    parse_allow_quant,
)

__all__ = ["Point", "ReplicaKey", "SearchSpace"]


class ReplicaKey(NamedTuple):
    """The knobs of one replica the step model sees: a point without its replica count and
    speculation (those only matter under traffic). Hashable, so the search keys tables by it."""

    hardware: str
    tp: int
    pp: int
    ep: int
    weights: str
    kv: str
    max_num_seqs: int
    chunked_prefill: bool
    max_num_batched_tokens: int


@dataclass(frozen=True)
class Point:
    """One deployment in the space (what a trial's parameters resolve to)."""

    hardware: str
    tp: int
    pp: int
    ep: int
    replicas: int
    weights: str
    kv: str
    max_num_seqs: int
    chunked_prefill: bool
    max_num_batched_tokens: int
    spec_method: str = "none"
    spec_tokens: int = 0

    @classmethod
    def from_key(
        cls, key: ReplicaKey, replicas: int, *, spec_method: str = "none", spec_tokens: int = 0
    ) -> Point:
        """``replicas`` copies of the replica ``key``, with the given speculation."""
        return cls(
            **key._asdict(), replicas=replicas, spec_method=spec_method, spec_tokens=spec_tokens
        )

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp

    @property
    def num_gpus(self) -> int:
        return self.replicas * self.gpus_per_replica

    @property
    def replica_key(self) -> ReplicaKey:
        """The knobs the step model sees (replicas and speculation only matter under traffic)."""
        return ReplicaKey(**{name: getattr(self, name) for name in ReplicaKey._fields})

    @property
    def risk_rank(self) -> int:
        return max(WEIGHT_SCHEMES[self.weights].risk_rank, KV_SCHEMES[self.kv].risk_rank)

    @property
    def risk(self) -> str:
        return RISK_LEVELS[self.risk_rank]

    def label(self) -> str:
        spec = "" if self.spec_method == "none" else f" spec={self.spec_method}x{self.spec_tokens}"
        chunk = f"chunk={self.max_num_batched_tokens}" if self.chunked_prefill else "no-chunk"
        return (
            f"{self.replicas}x(tp{self.tp} pp{self.pp}{f' ep{self.ep}' if self.ep > 1 else ''})"
            f" {self.hardware} w={self.weights} kv={self.kv} seqs={self.max_num_seqs}"
            f" {chunk}{spec}"
        )

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class SearchSpace:
    """Every knob's choices. Build with ``SearchSpace.build``; all tuples are sorted."""

    model: ModelSpec
    hardware: tuple[HardwareSpec, ...]
    gpus: int
    max_model_len: int
    tp: tuple[int, ...]
    pp: tuple[int, ...]
    ep: tuple[int, ...]
    weights: tuple[str, ...]
    kv: tuple[str, ...]
    max_num_seqs: tuple[int, ...]
    max_num_batched_tokens: tuple[int, ...]
    chunked_prefill: tuple[bool, ...]
    spec_methods: tuple[str, ...]
    spec_tokens: tuple[int, ...]
    gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION
    spec_acceptance: dict[str, float] = field(default_factory=lambda: dict(SPEC_METHODS))
    # The admission rule of the engine the plan is written for: predicted as that engine runs.
    admission: Admission = "vllm"

    @classmethod
    def build(
        cls,
        *,
        model: ModelSpec,
        hardware: Sequence[HardwareSpec],
        gpus: int,
        max_model_len: int,
        allow_quant: str = DEFAULT_ALLOW_QUANT,
        speculative: bool = True,
        small: bool = False,
        only: Mapping[str, Sequence[int]] | None = None,
        spec_methods: Sequence[str] | None = None,
        admission: Admission = "vllm",
        gpu_memory_utilization: float = DEFAULT_GPU_MEMORY_UTILIZATION,
    ) -> SearchSpace:
        """The full space for ``gpus`` GPUs (``small=True``: a few hundred points, enumerable);
        ``only`` keeps the listed values of ``tp``, ``pp`` or ``ep`` (``--tp 8 --pp 2``);
        ``spec_methods`` keeps only those speculative methods (and no plain decoding);
        ``gpu_memory_utilization`` is the share of each GPU's memory every point may take."""
        if gpus < 1:
            raise ConfigError(f"--gpus must be at least 1 (got {gpus})")
        weights, kv = parse_allow_quant(allow_quant)
        node = min(h.gpus_per_node for h in hardware)
        # TP stays inside one node (it all-reduces twice per layer); PP may span nodes.
        tp = tuple(t for t in (1, 2, 4, 8) if t <= min(gpus, node))
        pp = tuple(p for p in (1, 2, 4) if p <= gpus and p <= model.num_hidden_layers)
        ep = tuple(e for e in (1, 2, 4, 8) if e <= max(tp)) if model.is_moe else (1,)
        seqs: tuple[int, ...] = (16, 32, 64, 128, 256, 512)
        tokens: tuple[int, ...] = (2048, 4096, 8192, 16384)
        methods = ("none", *SPEC_METHODS) if speculative else ("none",)
        spec_tokens: tuple[int, ...] = (2, 3, 4, 5)
        if small:
            seqs, tokens, pp, spec_tokens = (32, 64, 128, 256), (4096, 8192), pp[:2], (3,)
            methods = tuple(m for m in methods if m in ("none", "eagle", "ngram"))[:2]
        only = only or {}
        tp = _only("tp", tp, only.get("tp"))
        pp = _only("pp", pp, only.get("pp"))
        ep = _only("ep", ep, only.get("ep"))
        # A method is offered only where its drafter is published for this very model.
        if draft_model(model) is None:
            methods = tuple(m for m in methods if m != "draft")
        if eagle_head(model) is None:
            methods = tuple(m for m in methods if m != "eagle")
        if spec_methods:
            unknown = sorted(set(spec_methods) - set(SPEC_METHODS))
            if unknown:
                raise ConfigError(
                    f"--speculative {','.join(unknown)}: known methods are "
                    f"{', '.join(SPEC_METHODS)}"
                )
            kept = tuple(m for m in methods if m in spec_methods)
            if not kept:
                raise ConfigError(
                    f"--speculative {','.join(spec_methods)}: no such drafter is published "
                    f"for {model.name} (see tuner/handover/checkpoints.yaml)"
                )
            methods = kept
        return cls(
            model=model,
            hardware=tuple(hardware),
            gpus=gpus,
            max_model_len=max_model_len,
            tp=tp,
            pp=pp,
            ep=ep,
            weights=weights,
            kv=kv,
            max_num_seqs=seqs,
            max_num_batched_tokens=tokens,
            chunked_prefill=(True, False),
            spec_methods=methods,
            spec_tokens=spec_tokens,
            admission=admission,
            gpu_memory_utilization=gpu_memory_utilization,
        )

    # --- the knobs one trial asks for ----------------------------------------------------------

    @property
    def hardware_names(self) -> tuple[str, ...]:
        return tuple(h.name for h in self.hardware)

    def hardware_spec(self, name: str) -> HardwareSpec:
        return self.hardware[self.hardware_names.index(name)]

    @property
    def unchunked_tokens(self) -> int:
        """Token budget without chunked prefill: a whole ``max_model_len`` prompt per step."""
        return max(self.max_model_len, max(self.max_num_seqs))

    def max_replicas(self, tp: int, pp: int) -> int:
        return self.gpus // (tp * pp)

    def suggest(self, trial: Any) -> Point:
        """Ask ``trial`` for one point, conditional knobs only where they apply."""
        ask = self._categorical
        knobs: dict[str, Any] = {"hardware": ask(trial, "hardware", self.hardware_names)}
        knobs["tp"] = tp = ask(trial, "tp", self.tp)
        knobs["pp"] = pp = ask(trial, "pp", self.pp)
        knobs["ep"] = ask(trial, "ep", self.ep) if self.model.is_moe else 1
        most = self.max_replicas(tp, pp)
        # Log scale: at a fixed offered load the interesting counts are the small ones.
        knobs["replicas"] = trial.suggest_int("replicas", 1, most, log=True) if most > 1 else 1
        knobs["weights"] = ask(trial, "weights", self.weights)
        knobs["kv"] = ask(trial, "kv", self.kv)
        knobs["max_num_seqs"] = ask(trial, "max_num_seqs", self.max_num_seqs)
        knobs["chunked_prefill"] = chunked = ask(trial, "chunked_prefill", self.chunked_prefill)
        tokens = self.max_num_batched_tokens
        knobs["max_num_batched_tokens"] = (
            ask(trial, "max_num_batched_tokens", tokens) if chunked else self.unchunked_tokens
        )
        knobs["spec_method"] = method = ask(trial, "spec_method", self.spec_methods)
        knobs["spec_tokens"] = (
            ask(trial, "spec_tokens", self.spec_tokens) if method != "none" else 0
        )
        return Point(**knobs)

    @staticmethod
    def _categorical(trial: Any, name: str, choices: tuple) -> Any:
        # A knob with one choice is a constant: asking for it would only clutter the study.
        return choices[0] if len(choices) == 1 else trial.suggest_categorical(name, choices)

    def params(self, point: Point) -> dict[str, Any]:
        """The trial parameters that reproduce ``point`` (for ``enqueue_trial``): replay
        ``suggest`` against the point, so the two can never disagree."""
        replay = _Replay(point)
        self.suggest(replay)
        return replay.asked

    # --- enumeration ---------------------------------------------------------------------------

    def replica_keys(self) -> Iterator[ReplicaKey]:
        """Every distinct step-model configuration (see ``Point.replica_key``)."""
        batching = [
            (c, t)
            for c in self.chunked_prefill
            for t in (self.max_num_batched_tokens if c else (self.unchunked_tokens,))
        ]
        for hw, tp, pp, ep, w, kv, seqs, (chunked, tokens) in itertools.product(
            self.hardware_names,
            self.tp,
            self.pp,
            self.ep,
            self.weights,
            self.kv,
            self.max_num_seqs,
            batching,
        ):
            if tp * pp <= self.gpus:
                yield ReplicaKey(hw, tp, pp, ep, w, kv, seqs, chunked, tokens)

    def spec_options(self) -> list[tuple[str, int]]:
        """(method, drafted tokens) choices; ("none", 0) is plain decoding, when searched."""
        plain = [("none", 0)] if "none" in self.spec_methods else []
        return plain + [(m, g) for m in self.spec_methods if m != "none" for g in self.spec_tokens]

    def points(self) -> Iterator[Point]:
        """The whole space, one point at a time (exhaustive mode; keep the space small)."""
        for key in self.replica_keys():
            for replicas in range(1, self.max_replicas(key.tp, key.pp) + 1):
                for method, g in self.spec_options():
                    yield Point.from_key(key, replicas, spec_method=method, spec_tokens=g)

    def size(self) -> int:
        per_key = len(self.spec_options())
        return sum(self.max_replicas(k.tp, k.pp) * per_key for k in self.replica_keys())

    # --- to the simulator ----------------------------------------------------------------------

    def speculative(self, point: Point) -> SpeculativeConfig | None:
        return self.speculative_option(point.spec_method, point.spec_tokens)

    def speculative_option(self, method: str, tokens: int) -> SpeculativeConfig | None:
        """Speculative decoding with ``method`` drafting ``tokens`` (None for ``none``)."""
        if method == "none":
            return None
        return SpeculativeConfig(
            method=method,
            num_speculative_tokens=tokens,
            acceptance_rate=self.spec_acceptance[method],
            draft_model={"draft": draft_model(self.model), "eagle": eagle_head(self.model)}.get(
                method
            ),
        )

    def to_config(self, point: Point) -> DeploymentConfig:
        scheme = WEIGHT_SCHEMES[point.weights]
        return DeploymentConfig(
            tp=point.tp,
            pp=point.pp,
            dp=point.replicas,
            ep=point.ep,
            weight_dtype=scheme.weight_dtype,
            activation_dtype=scheme.activation_dtype,
            kv_dtype=point.kv,
            max_num_seqs=point.max_num_seqs,
            max_num_batched_tokens=point.max_num_batched_tokens,
            enable_chunked_prefill=point.chunked_prefill,
            speculative=self.speculative(point),
            gpu_memory_utilization=self.gpu_memory_utilization,
            max_model_len=self.max_model_len,
            admission=self.admission,
        )

    def config_arrays(self, keys: Sequence[ReplicaKey]) -> ConfigArrays:
        """The step model's view of one GPU type's replica ``keys`` (one row each)."""
        schemes = [WEIGHT_SCHEMES[key.weights] for key in keys]
        column = {
            name: np.array(values)
            for name, values in zip(ReplicaKey._fields, zip(*keys, strict=True), strict=True)
        }
        return ConfigArrays.from_arrays(
            tp=column["tp"],
            pp=column["pp"],
            ep=column["ep"],
            weight_dtype=np.array([s.weight_dtype for s in schemes]),
            activation_dtype=np.array([s.activation_dtype for s in schemes]),
            kv_dtype=column["kv"],
            max_num_seqs=column["max_num_seqs"],
            max_num_batched_tokens=column["max_num_batched_tokens"],
            max_model_len=self.max_model_len,
            gpu_memory_utilization=self.gpu_memory_utilization,
        )

    def describe(self) -> dict[str, Any]:
        """The space as JSON-able data (stored with the study and in the plan)."""
        knobs = ("tp", "pp", "ep", "weights", "kv", "max_num_seqs", "max_num_batched_tokens",
                 "chunked_prefill", "spec_methods", "spec_tokens")  # fmt: skip
        acceptance = {m: a for m, a in self.spec_acceptance.items() if m in self.spec_methods}
        return {"model": self.model.name, "hardware": list(self.hardware_names),
                "gpus": self.gpus, "max_model_len": self.max_model_len,
                **{name: list(getattr(self, name)) for name in knobs},
                "spec_acceptance": acceptance, "size": self.size(),
                "gpu_memory_utilization": self.gpu_memory_utilization,
                "admission": self.admission}  # fmt: skip


def _only(name: str, allowed: tuple[int, ...], asked: Sequence[int] | None) -> tuple[int, ...]:
    """``allowed`` cut down to ``asked``; asking for a value the space cannot hold is an error
    that names the values it can."""
    if not asked:
        return allowed
    outside = sorted(set(asked) - set(allowed))
    if outside:
        raise ConfigError(
            f"--{name} {','.join(map(str, outside))} is outside this search "
            f"(possible here: {','.join(map(str, allowed))})"
        )
    return tuple(v for v in allowed if v in set(asked))


class _Replay:
    """A stand-in trial that answers every question with ``point``'s value and records it."""

    def __init__(self, point: Point) -> None:
        self.point = point
        self.asked: dict[str, Any] = {}

    def suggest_categorical(self, name: str, choices: tuple) -> Any:
        self.asked[name] = getattr(self.point, name)
        return self.asked[name]

    def suggest_int(self, name: str, low: int, high: int, log: bool = False) -> int:
        return self.suggest_categorical(name, ())
