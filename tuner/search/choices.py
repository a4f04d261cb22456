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
    "SPEC_DRAFT_MODEL",
    "EAGLE_HEADS",
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
# The draft model (same tokenizer as every Llama 3.x) and the published EAGLE-3 heads; a
# method is offered only where its drafter exists, so every plan can actually launch. The 70B
# head was trained on 3.3-Instruct (3.1-70B's architecture): on other weights expect less.
SPEC_DRAFT_MODEL = "meta-llama/Llama-3.2-1B"
EAGLE_HEADS = {
    "llama-3.1-8b": "yuhuili/EAGLE3-LLaMA3.1-Instruct-8B",
    "llama-3.1-70b": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
    "llama-3.3-70b": "yuhuili/EAGLE3-LLaMA3.3-Instruct-70B",
}


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
