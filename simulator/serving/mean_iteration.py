"""The mean iteration of a replica at steady state, for many configurations at once: what
``bounds.py``'s capacity bounds are made of.

Given ``u``, the requests that arrive during one iteration on average, ``MeanIteration`` says
how long that iteration takes for every configuration (the step model's time for the mix of
decodes and prompt chunks the module docstring of ``bounds.py`` derives, plus a drafter's
steps), and from it the mean time per output token, the TTFT of a request at a percentile and
what the KV cache and ``max_num_seqs`` allow. Each method is vectorized over configurations.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import NormalDist
from typing import TYPE_CHECKING

import numpy as np

from ..cost.configs import ConfigArrays
from ..cost.memory import drafter_memory, eagle_layers_per_token, whole_blocks
from ..cost.shapes import FEATURES, step_features
from ..cost.step import StepModel
from ..data.specs import HardwareSpec, ModelSpec

if TYPE_CHECKING:
    from .bounds import Drafter, TrafficShape

__all__ = ["MEAN_PERCENTILE", "MeanIteration"]

# Latency percentiles at or above this are bounded below by the mean (latency tails are long).
MEAN_PERCENTILE = 90.0
_F = {name: i for i, name in enumerate(FEATURES)}


class MeanIteration:
    """The mean iteration of every configuration of ``configs`` as a function of ``u``."""

    def __init__(self, model: ModelSpec, hardware: HardwareSpec, configs: ConfigArrays,
                 traffic: TrafficShape, drafters: Sequence[Drafter | None],
                 choice: np.ndarray):  # fmt: skip
        self.step = StepModel.build(model, hardware, configs)
        self.traffic = traffic

        def per_row(value, default) -> np.ndarray:
            table = np.array([default if d is None else value(d) for d in drafters], float)
            return table[choice]

        self.query = per_row(lambda d: d.tokens + 1, 1.0)
        self.per_round = per_row(lambda d: d.tokens_per_round, 1.0)
        self.eagle_tokens = per_row(lambda d: d.tokens * (d.method == "eagle"), 0.0)
        self.draft_tokens = per_row(lambda d: d.tokens * (d.method == "draft"), 0.0)
        self.moe = dict(experts=model.num_local_experts,
                        experts_per_token=model.num_experts_per_tok)  # fmt: skip
        # The draft model's own steps, for the rows that use one (all name the same model).
        self.drafting = np.flatnonzero(self.draft_tokens > 0)
        self.draft_step: StepModel | None = None
        if self.drafting.size:
            models = [d.draft_model for d in drafters if d and d.method == "draft"]
            draft_model = models[0]
            assert draft_model is not None and all(
                m is not None and m.name == draft_model.name for m in models
            ), "one draft model per call"
            c = configs.select(self.drafting)
            # At the target's tensor parallelism, as the engines run it.
            self.draft_step = StepModel.build(draft_model, hardware, ConfigArrays.from_arrays(
                size=len(c), tp=c.tp, kv_code=c.kv_code, max_num_seqs=c.max_num_seqs,
                max_num_batched_tokens=c.max_num_batched_tokens, max_model_len=c.max_model_len,
                cuda_graphs=c.cuda_graphs, block_size=c.block_size,
                gpu_memory_utilization=c.gpu_memory_utilization,
            ))  # fmt: skip

        # What each row's drafter holds beside the target (``memory.drafter_memory``).
        self.drafter_weights = np.zeros(len(configs))
        self.drafter_kv = np.zeros(len(configs))
        if self.draft_step is not None:
            self.drafter_weights[self.drafting] = self.draft_step.memory.weights_bytes
            self.drafter_kv[self.drafting] = self.draft_step.memory.kv_bytes_per_token
        heads = np.flatnonzero(self.eagle_tokens > 0)
        self.eagle_layers = np.zeros(len(configs))  # a drafted token's cost in target layers
        if heads.size:
            weights, kv = drafter_memory(model, hardware, configs.select(heads), method="eagle")
            self.drafter_weights[heads], self.drafter_kv[heads] = weights, kv
            self.eagle_layers[heads] = eagle_layers_per_token(model, hardware,
                                                              configs.select(heads))  # fmt: skip

    def kv_room(self) -> tuple[np.ndarray, np.ndarray]:
        """(KV tokens of the cache, KV tokens a decoding sequence holds on average); a
        drafter's weights and KV come out of the target's cache, as the simulation counts them."""
        memory, configs = self.step.memory, self.step.configs
        block = configs.block_size
        per_sequence = whole_blocks(self.traffic.context + self.query, block)
        tokens = memory.kv_tokens.copy()
        rows = np.flatnonzero((self.drafter_weights > 0) | (self.drafter_kv > 0))
        if rows.size:
            free = memory.kv_cache_bytes[rows] - self.drafter_weights[rows]
            per_token = memory.kv_bytes_per_token[rows] + self.drafter_kv[rows]
            tokens[rows] = (
                np.floor(np.maximum(free, 0.0) / (per_token * block[rows])) * block[rows]
            )
        return tokens, per_sequence

    def _features(self, prompts, decodes, query) -> np.ndarray:
        """Features ``[N, F]`` of one micro-batch each: ``prompts`` mean prompts (a fraction is
        a share of one) and ``decodes`` sequences of ``query`` tokens (arrays ``[N]``)."""
        t = self.traffic
        p, b, q = np.broadcast_arrays(
            *(np.asarray(v, dtype=float) for v in (prompts, decodes, query))
        )
        x = step_features(
            prefill_tokens=p * t.new_prompt,
            prefill_pairs=p * t.pairs,
            prefill_kv=p * t.prompt,
            naive_scores=p * t.naive_scores,
            prefill_logits=p,
            prefill_seqs=p,
            decode_tokens=b * q,
            decode_kv=b * t.context,
            decode_pairs=b * q * t.context,
            **self.moe,
        )
        x[:, _F["has_prefill"]] = np.minimum(p, 1.0)
        if self.moe["experts"]:
            # At least the experts the decodes touch (fewer tokens touch fewer experts).
            e, k = self.moe["experts"], self.moe["experts_per_token"]
            x[:, _F["moe_touched"]] = 1.0 - (1.0 - k / e) ** x[:, _F["decode_tokens"]]
        return x

    @staticmethod
    def _round_s(mean: MeanIteration, step: StepModel, prompts, decodes, query) -> np.ndarray:
        """One iteration of ``step`` holding ``prompts`` and ``decodes`` sequences. With
        pipeline stages the decodes spread over ``pp`` micro-batches, a prompt chunk is never
        split (its micro-batch crosses every stage), and the stages pipeline the rest."""
        m = step.configs.pp  # a draft model runs unpipelined beside its target
        shape = (len(step.configs),)
        prompts, decodes, query = (np.broadcast_to(np.asarray(v, float), shape)
                                   for v in (prompts, decodes, query))  # fmt: skip
        if np.all(m == 1):
            return step.step(mean._features(prompts, decodes, query)).latency_s
        holders = np.clip(prompts, 1.0, m)  # micro-batches holding prompt chunks
        chunk = step.step(mean._features(prompts / holders, decodes / m, query)).latency_s
        spread = step.step(mean._features(prompts / m, decodes / m, query)).stage_s
        return np.maximum(chunk, m * spread)

    def rounds(self, u: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(a round with decodes only, a round that also prefills, the share of such rounds),
        verify step and drafting included, in seconds ``[N]``. Requests arrive at random, so a
        share ``exp(-u)`` of rounds find no new prompt; the others prefill those that came
        during the round before (``u / (1 - exp(-u))`` of them), in chunks when the token
        budget is short."""
        t, configs = self.traffic, self.step.configs
        decodes = u * t.decodes / self.per_round
        room = np.maximum(configs.max_num_batched_tokens * configs.pp - decodes * self.query, 1.0)
        share = -np.expm1(-u)
        per_busy = np.minimum(u / np.maximum(share, 1e-300), room / t.new_prompt)
        # Chunked: prompts spill into more rounds.
        share = np.minimum(u / np.where(per_busy > 0, per_busy, 1.0), 1.0)
        quiet = self._round_s(self, self.step, 0.0, decodes, self.query)
        busy = self._round_s(self, self.step, per_busy, decodes, self.query)
        if self.eagle_tokens.any():
            layers = self.step.model.num_hidden_layers
            decode = self._round_s(self, self.step, 0.0, decodes, 1.0)
            drafting = self.eagle_tokens * self.eagle_layers / layers * decode
            quiet, busy = quiet + drafting, busy + drafting
        if self.draft_step is not None:
            rows = self.drafting
            drafting = self.draft_tokens[rows] * self._round_s(
                self, self.draft_step, 0.0, decodes[rows], 1.0
            )
            quiet[rows] += drafting
            busy[rows] += drafting + self._round_s(self, self.draft_step, per_busy[rows], 0.0, 1.0)
        return quiet, busy, share

    def iteration_s(self, u: np.ndarray) -> np.ndarray:
        """``h(u)``: the mean round in seconds ``[N]``."""
        quiet, busy, share = self.rounds(u)
        return share * busy + (1 - share) * quiet

    def tpot_s(self, u: np.ndarray, percentile: float) -> np.ndarray:
        """A lower bound on the TPOT percentile at ``u``: the mean, plus the spread that rounds
        with prefills alone give. A request of ``R`` rounds meets ``K ~ Binomial(R, share)``
        of them, so its TPOT is about normal with sd ``(busy - quiet) sqrt(share (1 - share) /
        R) / E``: the shortest requests spread most. If a fraction ``q`` of the requests has at
        most ``R_q`` rounds, then at least ``q x P(Z > z)`` of all requests exceed ``mean +
        sd(R_q) z``; choosing ``z`` so that this is the percentile's tail, and the best ``q``,
        bounds the percentile from below. (Prompt lengths, batch and acceptance vary too, which
        only widens the real spread.)"""
        quiet, busy, share = self.rounds(u)
        mean = (share * busy + (1 - share) * quiet) / self.per_round
        tail = 1.0 - percentile / 100.0
        spread = np.zeros_like(mean)
        for q in (2, 5, 10, 20, 50, 100):
            fraction = min(q * tail, 1.0)
            if fraction <= tail:
                continue
            z = NormalDist().inv_cdf(1.0 - tail / fraction)
            rounds = np.maximum(
                float(np.percentile(self.traffic.decode_counts, 100 * fraction)) / self.per_round,
                1.0,
            )
            sd = (busy - quiet) * np.sqrt(share * (1 - share) / rounds) / self.per_round
            spread = np.maximum(spread, sd * z)
        return mean + spread

    def _ttft_s(self, u: np.ndarray, percentile: float) -> np.ndarray:
        """The TTFT-percentile prompt's own prefill, in chunks that share their iterations with
        the decodes at ``u`` (no queueing): a lower bound on that request's TTFT."""
        t, configs = self.traffic, self.step.configs
        prompt = float(np.percentile(t.new_prompts, percentile))
        decodes = u * t.decodes / self.per_round / configs.pp
        if percentile < MEAN_PERCENTILE:
            decodes = 0.0 * u
        room = configs.max_num_batched_tokens - decodes * self.query
        chunks = np.where(room > 0, np.ceil(prompt / np.maximum(room, 1.0)), 1e9)

        def features(decoding: np.ndarray, query: np.ndarray) -> np.ndarray:
            return step_features(
                prefill_tokens=prompt / chunks,
                prefill_pairs=prompt * (prompt + 1) / 2 / chunks,
                prefill_kv=prompt,
                naive_scores=prompt * prompt / chunks,
                prefill_logits=1.0 / chunks,
                prefill_seqs=1.0,
                decode_tokens=decoding * query,
                decode_kv=decoding * t.context,
                decode_pairs=decoding * query * t.context,
                **self.moe,
            )

        per_chunk = self.step.step(features(decodes, self.query)).latency_s
        if self.draft_step is not None:  # the draft model prefills the same chunks
            rows = self.drafting
            draft = self.draft_step.step(features(decodes, self.query)[rows]).latency_s
            per_chunk[rows] += draft
        return chunks * per_chunk

    def slos_met(self, u: np.ndarray, slos) -> np.ndarray:
        """Whether the mean iteration at ``u`` meets every SLO's lower bound ``[N]``."""
        met = np.ones(len(u), dtype=bool)
        means = [s for s in slos if s.metric != "ttft" and s.percentile >= MEAN_PERCENTILE]
        if means:
            h = self.iteration_s(u)
            for slo in means:
                if slo.metric == "tpot":
                    value = self.tpot_s(u, slo.percentile)
                elif slo.metric == "itl":
                    value = h
                else:  # e2e: the percentile request's decoding alone
                    decodes = float(np.percentile(self.traffic.decode_counts, slo.percentile))
                    value = decodes * h / self.per_round
                met &= value <= slo.target_s
        for slo in (s for s in slos if s.metric == "ttft"):
            met &= self._ttft_s(u, slo.percentile) <= slo.target_s
        return met

    def floors(self, slos) -> tuple[np.ndarray, np.ndarray]:
        """(time per output token alone, the TTFT-percentile prompt's prefill alone) ``[N]``."""
        alone = np.full(len(self.step.configs), 1e-9)
        percentile = max((s.percentile for s in slos if s.metric == "ttft"), default=50.0)
        percentile = min(percentile, np.nextafter(MEAN_PERCENTILE, 0.0))  # no decodes beside
        return self.iteration_s(alone) / self.per_round, self._ttft_s(alone, percentile)
