"""What ``tune plan`` may choose besides the parallel layout: quantization and speculation.

- **Quantization schemes** for the weights and the KV cache, each with a *quality risk*
  (``none < low < medium < high``) that the plan states; ``--allow-quant`` (parsed by
  ``parse_allow_quant``) bounds what is searched, so a risky scheme is never chosen silently.
- **Speculative methods** with the acceptance rate assumed for each, and the drafters that exist
  for them (a method is offered only where its drafter exists, so every plan can launch).

``tuner.search.space`` builds the search space from these.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from simulator.data.specs import ModelSpec
from simulator.errors import ConfigError

__all__ = [
    "Risk",
    "RISK_LEVELS",
    "QuantScheme",
    "WEIGHT_SCHEMES",
    "KV_SCHEMES",
    "DEFAULT_ALLOW_QUANT",
    "parse_allow_quant",
    "SPEC_METHODS",
    "eagle_head",
    "draft_model",
]

Risk = Literal["none", "low", "medium", "high"]
RISK_LEVELS: tuple[Risk, ...] = get_args(Risk)


@dataclass(frozen=True)
class QuantScheme:
    """A quantization choice and what it risks: ``risk`` is one of ``RISK_LEVELS``."""

    name: str
    weight_dtype: str
    activation_dtype: str
    risk: Risk
    description: str

    @property
    def risk_rank(self) -> int:
        return RISK_LEVELS.index(self.risk)


# Published accuracy studies of Llama 3.x put FP8 W8A8 within noise of bf16, INT8 W8A8
# (SmoothQuant) a little below, and 4-bit weight-only visibly below on reasoning and long-context
# tasks; hence the labels. They are a warning to the reader, not a measurement.
WEIGHT_SCHEMES: dict[str, QuantScheme] = {
    "bf16": QuantScheme("bf16", "bf16", "bf16", "none", "bf16 weights and activations"),
    "fp8": QuantScheme("fp8", "fp8", "fp8", "low", "FP8 W8A8 (dynamic per-token scales)"),
    "int8": QuantScheme("int8", "int8", "int8", "medium", "INT8 W8A8 (SmoothQuant)"),
    "int4": QuantScheme("int4", "int4", "bf16", "high", "INT4 weight-only (group 128)"),
}
KV_SCHEMES: dict[str, QuantScheme] = {
    "bf16": QuantScheme("bf16", "bf16", "bf16", "none", "bf16 KV cache"),
    "fp8": QuantScheme("fp8", "fp8", "fp8", "low", "FP8 (e4m3) KV cache"),
}
DEFAULT_ALLOW_QUANT = "bf16,fp8"

# Speculative methods and the acceptance rate assumed for each on conversational traffic: the
# chance that one drafted token is accepted. EAGLE-style heads trained on the target accept most,
# a small same-family draft model a little less, prompt n-gram lookup little on chat (it shines
# on code edits and summaries that copy the prompt). Assumptions, stated in every plan.
SPEC_METHODS: dict[str, float] = {"eagle": 0.75, "draft": 0.65, "ngram": 0.35}


def eagle_head(model: ModelSpec) -> str | None:
    """The EAGLE-3 head a plan of ``model`` may draft with: one trained on exactly its Instruct
    model (``handover/checkpoints.yaml``), for the dense models whose head the cost model
    describes (``simulator.data.architecture.eagle3_head``)."""
    from tuner.handover.checkpoints import eagle_head as published

    return None if model.is_moe else published(model.name)


def draft_model(model: ModelSpec) -> str | None:
    """The small same-tokenizer model a plan of ``model`` may draft with, if the table names
    one (``handover/checkpoints.yaml``)."""
    from tuner.handover.checkpoints import draft_model as published

    return published(model.name)


def parse_allow_quant(text: str) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``'bf16,fp8'`` -> (weight schemes, KV dtypes) allowed. ``fp8`` allows FP8 weights and the
    FP8 KV cache; ``kv-fp8`` allows only the latter; ``all`` allows everything."""
    tokens = [t.strip().lower() for t in text.split(",") if t.strip()]
    if "all" in tokens:
        return tuple(WEIGHT_SCHEMES), tuple(KV_SCHEMES)
    weights: list[str] = []
    kv = ["bf16"]
    for token in tokens:
        if token in WEIGHT_SCHEMES:
            weights.append(token)
            if token == "fp8":
                kv.append("fp8")
        elif token in ("kv-fp8", "fp8-kv"):
            kv.append("fp8")
        else:
            known = ", ".join([*WEIGHT_SCHEMES, "kv-fp8", "all"])
            raise ConfigError(f"--allow-quant: unknown scheme {token!r}; known: {known}")
    if not weights:
        raise ConfigError(f"--allow-quant {text!r} allows no weight scheme (add bf16 or fp8)")
    return tuple(dict.fromkeys(weights)), tuple(dict.fromkeys(kv))
