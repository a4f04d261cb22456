"""Speculative decoding: what a draft costs, what a verify costs, how many tokens come out.

Each decode iteration becomes a round: a drafter proposes ``g`` tokens per sequence, then the
target verifies all of them in one step of ``g + 1`` query tokens per sequence. Drafts are
accepted one by one with probability ``a`` until the first rejection; the target's own token
at that position (or a bonus token when all ``g`` pass) is always kept. So the number of
leading accepted drafts is a geometric count truncated at ``g``, and the tokens per round are

    E[tokens] = 1 + a + a^2 + ... + a^g = (1 - a^(g+1)) / (1 - a).

Drafters:

- ``draft``: a small model of the same family (e.g. Llama-3.2-1B for 8B/70B) on every GPU of
  the replica with tp = 1: ``g`` sequential decode steps of the whole batch on its own step
  model, its own prefill of every prompt chunk, and its weights and KV cache taken out of the
  target's KV budget;
- ``eagle``: a one-layer head on the target's hidden states: each drafted token costs what
  its matrices weigh against a target layer's (``memory.eagle_layers_per_token``: 1.8 decode
  layers of a bf16 8B, 3.4 of an FP8 one, as the head stays bf16);
- ``ngram``: prompt lookup on the host, no GPU time.

Where it stops paying: the verify step reads the weights once for ``B (g + 1)`` tokens, which
is nearly free while decode is memory-bound, but once ``B (g + 1)`` passes the GPU's critical
batch the verify turns compute-bound and costs ``g + 1`` decode steps' worth of math, while
the drafts cost their own time on top. ``speedup_table`` shows the crossing.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..cost.configs import ConfigArrays
from ..cost.memory import drafter_memory, eagle_layers_per_token
from ..cost.shapes import decode_terms, feature_vector
from ..cost.step import StepModel
from ..cost.step_fast import F, FastStep
from ..data.specs import DeploymentConfig, HardwareSpec, ModelSpec

__all__ = ["expected_tokens_per_round", "SpeculativeModel", "SpeedupRow", "speedup_table"]

_UNIFORM_CHUNK = 65536


def expected_tokens_per_round(num_speculative_tokens: int, acceptance_rate: float) -> float:
    """``(1 - a^(g+1)) / (1 - a)``: accepted drafts plus the target's own token, on average."""
    g, a = num_speculative_tokens, acceptance_rate
    return (1.0 - a ** (g + 1)) / (1.0 - a)


class SpeculativeModel:
    """Costs and Monte Carlo acceptance of one speculative configuration on one replica."""

    def __init__(
        self,
        *,
        model: ModelSpec,
        hardware: HardwareSpec,
        config: DeploymentConfig,
        target: FastStep,
        seed: int,
    ):
        spec = config.speculative
        assert spec is not None, "SpeculativeModel needs config.speculative"
        self.spec = spec
        self.g = spec.num_speculative_tokens
        self.a = spec.acceptance_rate
        self.method = spec.method
        self.target = target
        self.layers = model.num_hidden_layers
        self.experts = dict(
            experts=model.num_local_experts, experts_per_token=model.num_experts_per_tok
        )
        self.draft: FastStep | None = None
        draft_model = None
        if spec.method == "draft":
            from ..data.models import get_model

            draft_model = get_model(spec.draft_model or "")
            # The engines run the draft model at the target's tensor parallelism.
            draft_config = DeploymentConfig(
                tp=config.tp,
                kv_dtype=config.kv_dtype,
                max_num_seqs=config.max_num_seqs,
                max_num_batched_tokens=config.max_num_batched_tokens,
                max_model_len=config.max_model_len,
                cuda_graphs=config.cuda_graphs,
                block_size=config.block_size,
            )
            step = StepModel.build(draft_model, hardware, draft_config)
            self.draft = FastStep(step, host_overhead=False)
            self.draft_experts = dict(
                experts=draft_model.num_local_experts,
                experts_per_token=draft_model.num_experts_per_tok,
            )
        # What the drafter holds beside the target, out of the same budget.
        weights, kv = drafter_memory(
            model,
            hardware,
            ConfigArrays.from_configs([config]),
            method=spec.method,
            draft_model=draft_model,
        )
        self.draft_weights_bytes = float(weights[0])
        if spec.method == "eagle":
            configs = ConfigArrays.from_configs([config])
            self.eagle_layers = float(eagle_layers_per_token(model, hardware, configs)[0])
        self.draft_kv_bytes_per_token = float(kv[0])
        self._log_a = math.log(self.a)
        self._rng = np.random.default_rng(seed)
        self._uniform = np.empty(0)
        self._used = 0
        self.rounds = 0  # sequence-rounds
        self.tokens = 0  # tokens per round before capping at the request's end
        self.accepted = 0  # accepted drafts

    # --- costs ---------------------------------------------------------------------------------
    def _decode_x(self, batch: float, context: float, query: int, experts: dict) -> np.ndarray:
        tokens, kv, pairs = decode_terms(batch, context, query)
        return feature_vector(decode_tokens=tokens, decode_kv=kv, decode_pairs=pairs, **experts)

    def draft_time(self, batch: int, context: float) -> float:
        """Seconds to draft ``g`` tokens for ``batch`` sequences holding ``context`` tokens."""
        return float(self.draft_times(batch, np.array([context]))[0])

    def draft_times(self, batch: int, contexts: np.ndarray) -> np.ndarray:
        """``draft_time`` for each context sum in ``contexts`` (one per round of a run)."""
        if self.method == "ngram":
            return np.zeros(len(contexts))
        if self.method == "eagle":
            step = self.target.decode_latencies(batch, contexts, **self.experts)
            return self.g * step / self.layers * self.eagle_layers
        # g sequential draft steps; each adds a token per sequence to the draft's context.
        assert self.draft is not None
        return self.draft.decode_latencies(batch, contexts, self.g, **self.draft_experts)

    def verify_times(self, batch: int, contexts: np.ndarray) -> np.ndarray:
        """The target's verify step (g + 1 tokens per sequence) at each context sum."""
        return self.target.decode_latencies(batch, contexts, query=self.g + 1, **self.experts)

    def prefill_time(self, x: np.ndarray) -> float:
        """The draft model's share of a step with prefill chunks (it builds its own KV)."""
        if self.draft is None or x[F["prefill_tokens"]] <= 0:
            return 0.0
        prefill = x.copy()
        for name in ("decode_tokens", "decode_kv", "decode_pairs", "has_decode"):
            prefill[F[name]] = 0.0
        prefill[F["tokens"]] = prefill[F["prefill_tokens"]]
        prefill[F["logits"]] = prefill[F["prefill_seqs"]]
        return self.draft.time(prefill)[0]

    def verify_time(self, batch: int, context: float) -> float:
        return self.target.time(self._decode_x(batch, context, self.g + 1, self.experts))[0]

    # --- acceptance ----------------------------------------------------------------------------
    def draw(self, rounds: int, batch: int) -> np.ndarray:
        """Tokens ``[rounds, batch]`` each sequence would get per round (accepted drafts + 1),
        looked ahead: nothing is used until ``count`` takes the rounds a run actually ran.

        The rounds come from one stream of uniforms, used in order and never skipped, so a
        run that advances many rounds at once and one that runs them one by one (the
        executor's clock) draw the same acceptances."""
        size = rounds * batch
        if self._used + size > self._uniform.size:  # keep the unused tail, then the stream
            fresh = 1.0 - self._rng.random(max(_UNIFORM_CHUNK, size))  # in (0, 1]
            self._uniform = np.concatenate([self._uniform[self._used :], fresh])
            self._used = 0
        u = self._uniform[self._used : self._used + size]
        # P(leading accepted >= i) = a^i  <=>  floor(log u / log a) >= i.
        accepted = np.minimum(np.floor(np.log(u) / self._log_a), self.g).astype(np.int64)
        return (accepted + 1).reshape(rounds, batch)

    def count(self, tokens: np.ndarray) -> None:
        """Use the first rounds drawn (an array of tokens per sequence-round, the leading
        rows of the last ``draw``) and add them to the statistics."""
        self._used += tokens.size
        self.rounds += tokens.size
        self.tokens += int(tokens.sum())
        self.accepted += int(tokens.sum()) - tokens.size

    def sample(self, batch: int) -> np.ndarray:
        """Tokens each of ``batch`` sequences gets this round (accepted drafts + 1)."""
        tokens = self.draw(1, batch)[0]
        self.count(tokens)
        return tokens

    def stats(self, *, context: int | None = None) -> dict:
        """Acceptance statistics of the run; with ``context`` also the decode speed-up per
        batch size at that many cached tokens per sequence, and the first batch where
        speculation costs more than it saves (None if it pays up to batch 512)."""
        speedup = speedup_table(self, context=context) if context else []
        losing = [row.batch for row in speedup if row.speedup < 1.0]
        return {
            "method": self.method,
            "num_speculative_tokens": self.g,
            "acceptance_rate": self.a,
            "draft_model": self.spec.draft_model,
            "expected_tokens_per_round": expected_tokens_per_round(self.g, self.a),
            "simulated_tokens_per_round": self.tokens / self.rounds if self.rounds else None,
            "sequence_rounds": self.rounds,
            "draft_acceptance": self.accepted / (self.rounds * self.g) if self.rounds else None,
            "speedup_context": context,
            "speedup_by_batch": {row.batch: row.speedup for row in speedup},
            "stops_paying_at_batch": losing[0] if losing else None,
        }


@dataclass(frozen=True)
class SpeedupRow:
    batch: int
    decode_step_s: float  # plain decode step (one token per sequence)
    round_s: float  # draft + verify
    speedup: float  # E[tokens] x decode_step_s / round_s


def speedup_table(
    spec: SpeculativeModel, *, context: int, batches=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
) -> list[SpeedupRow]:
    """Decode speed-up of speculation vs batch size at ``context`` cached tokens per sequence."""
    expected = expected_tokens_per_round(spec.g, spec.a)
    rows = []
    for batch in batches:
        plain = spec.target.time(spec._decode_x(batch, batch * context, 1, spec.experts))[0]
        round_s = spec.draft_time(batch, batch * context) + spec.verify_time(
            batch, batch * context
        )
        rows.append(
            SpeedupRow(
                batch=batch,
                decode_step_s=plain,
                round_s=round_s,
                speedup=expected * plain / round_s,
            )
        )
    return rows
