"""What one engine iteration has to do, as a handful of numbers (the step's *features*).

Every operator's FLOPs, bytes and kernel count are linear in these features (see ``ops.py``),
so one matrix product turns a batch of steps into per-operator work. The features are global
(for the whole replica); the op table divides them by tp / cp where the work is split.

A step holds prefill chunks and decodes (vLLM v1 schedules both in one iteration):

- a prefill chunk of ``c`` new tokens on top of ``p`` already cached tokens computes
  ``c * p + c * (c + 1) / 2`` causal query-key pairs and reads ``p + c`` tokens of K/V;
- a decode of a sequence with ``ctx`` cached tokens reads ``ctx`` tokens of K/V and, with
  speculative verification of ``g`` drafted tokens, runs ``g + 1`` query tokens against it.
"""

from __future__ import annotations

import numpy as np

__all__ = [
    "FEATURES",
    "NUM_FEATURES",
    "chunk_terms",
    "decode_terms",
    "feature_vector",
    "step_features",
    "prefill_features",
    "decode_features",
    "attention_length",
]

FEATURES = (
    "tokens",  # all new tokens through the linears (prefill chunk tokens + decode query tokens)
    "logits",  # rows that need the lm_head: decode query tokens + prefills ending this step
    "prefill_tokens",
    "prefill_pairs",  # causal query-key pairs of the prefill chunks
    "prefill_kv",  # K/V tokens the prefill chunks read (cached + new)
    "naive_scores",  # score-matrix elements a non-fused attention materializes, per head
    "decode_tokens",  # decode query tokens (batch x (1 + speculative tokens))
    "decode_kv",  # K/V tokens the decodes read (sum of their contexts)
    "decode_pairs",  # decode query-key pairs (each query token against its context)
    "has_tokens",  # 1 if the step runs at all: weights are read once per step
    "has_prefill",  # 1 if any prefill chunk: its attention kernel launches
    "has_decode",  # 1 if any decode: its attention kernel launches
    "moe_touched",  # expected fraction of experts that receive at least one token
    "prefill_seqs",  # sequences with a prefill chunk (sets the attention query length)
)
NUM_FEATURES = len(FEATURES)
_INDEX = {name: i for i, name in enumerate(FEATURES)}


def chunk_terms(new, past):
    """(causal query-key pairs, K/V tokens read, score elements) of a prefill chunk of ``new``
    tokens on top of ``past`` cached ones: the one place that rule lives."""
    return new * past + new * (new + 1) / 2, past + new, new * (past + new)


def decode_terms(batch, context_sum, query: int = 1):
    """(query tokens, K/V tokens read, query-key pairs) of ``batch`` decodes that hold
    ``context_sum`` tokens in all, each with ``query`` tokens (``g + 1`` when verifying)."""
    return batch * query, context_sum, query * context_sum


def _feature_list(
    prefill_tokens,
    prefill_pairs,
    prefill_kv,
    naive_scores,
    prefill_logits,
    prefill_seqs,
    decode_tokens,
    decode_kv,
    decode_pairs,
    experts: int,
    experts_per_token: int,
) -> list:
    """The features in ``FEATURES`` order, scalars or arrays alike (operators only, no ifs)."""
    tokens = prefill_tokens + decode_tokens
    touched = 1.0 - (1.0 - experts_per_token / experts) ** tokens if experts else 0.0 * tokens
    return [
        tokens,
        decode_tokens + prefill_logits,
        prefill_tokens,
        prefill_pairs,
        prefill_kv,
        naive_scores,
        decode_tokens,
        decode_kv,
        decode_pairs,
        (tokens > 0) * 1.0,
        (prefill_tokens > 0) * 1.0,
        (decode_tokens > 0) * 1.0,
        # Each token picks k of E experts: an expert stays idle with probability (1 - k/E)^T.
        touched,
        prefill_logits if prefill_seqs is None else prefill_seqs,
    ]


def step_features(
    *,
    prefill_tokens: np.ndarray | float = 0.0,
    prefill_pairs: np.ndarray | float = 0.0,
    prefill_kv: np.ndarray | float = 0.0,
    naive_scores: np.ndarray | float = 0.0,
    prefill_logits: np.ndarray | float = 0.0,
    prefill_seqs: np.ndarray | float | None = None,
    decode_tokens: np.ndarray | float = 0.0,
    decode_kv: np.ndarray | float = 0.0,
    decode_pairs: np.ndarray | float = 0.0,
    experts: int = 0,
    experts_per_token: int = 0,
) -> np.ndarray:
    """Feature matrix ``[S, NUM_FEATURES]`` for S steps given as aggregate arrays of shape [S]."""

    def array(value: np.ndarray | float) -> np.ndarray:
        return np.asarray(value, dtype=float)

    values = _feature_list(
        array(prefill_tokens),
        array(prefill_pairs),
        array(prefill_kv),
        array(naive_scores),
        array(prefill_logits),
        None if prefill_seqs is None else array(prefill_seqs),
        array(decode_tokens),
        array(decode_kv),
        array(decode_pairs),
        experts,
        experts_per_token,
    )
    shape = np.broadcast_shapes(*(np.shape(v) for v in values))
    return np.stack([np.broadcast_to(v, shape).astype(float) for v in values], axis=-1)


def feature_vector(
    *,
    prefill_tokens: float = 0.0,
    prefill_pairs: float = 0.0,
    prefill_kv: float = 0.0,
    naive_scores: float = 0.0,
    prefill_logits: float = 0.0,
    prefill_seqs: float | None = None,
    decode_tokens: float = 0.0,
    decode_kv: float = 0.0,
    decode_pairs: float = 0.0,
    experts: int = 0,
    experts_per_token: int = 0,
) -> np.ndarray:
    """One step's features ``[F]`` from scalar sums: ``step_features`` for a single step,
    without its broadcasting (the serving simulation calls this once per iteration)."""
    return np.array(
        _feature_list(
            prefill_tokens,
            prefill_pairs,
            prefill_kv,
            naive_scores,
            prefill_logits,
            prefill_seqs,
            decode_tokens,
            decode_kv,
            decode_pairs,
            experts,
            experts_per_token,
        )  # fmt: skip
    )


def prefill_features(
    batch: np.ndarray | float,
    prompt: np.ndarray | float,
    *,
    cached: np.ndarray | float = 0.0,
    experts: int = 0,
    experts_per_token: int = 0,
) -> np.ndarray:
    """``batch`` sequences each prefilling ``prompt`` new tokens on top of ``cached`` ones."""
    batch = np.asarray(batch, dtype=float)
    prompt = np.asarray(prompt, dtype=float)
    pairs, kv, naive = chunk_terms(prompt, np.asarray(cached, dtype=float))
    return step_features(
        prefill_tokens=batch * prompt,
        prefill_pairs=batch * pairs,
        prefill_kv=batch * kv,
        naive_scores=batch * naive,
        prefill_logits=batch,
        experts=experts,
        experts_per_token=experts_per_token,
    )


def decode_features(
    batch: np.ndarray | float,
    context: np.ndarray | float,
    *,
    query_tokens: int = 1,
    experts: int = 0,
    experts_per_token: int = 0,
) -> np.ndarray:
    """``batch`` sequences each decoding ``query_tokens`` tokens (1, or g + 1 when verifying
    speculative drafts) against ``context`` cached tokens."""
    batch = np.asarray(batch, dtype=float)
    tokens, kv, pairs = decode_terms(batch, batch * np.asarray(context, dtype=float), query_tokens)
    return step_features(
        decode_tokens=tokens,
        decode_kv=kv,
        decode_pairs=pairs,
        experts=experts,
        experts_per_token=experts_per_token,
    )


def attention_length(prefill_pairs, prefill_seqs):
    """The prompt length whose full causal prefill has as many query-key pairs per sequence as
    this step: ``sqrt(2 x pairs / seqs)``. FlashAttention's efficiency grows with the work each
    launch amortizes its ramp over; a 512-token chunk on top of 6k cached tokens does the work
    of a ~2.5k-token prefill, not of a 512-token one. Equals the prompt length for a whole
    prefill (``sqrt(L (L + 1))``), which is how the efficiency curve is measured."""
    seqs = np.asarray(prefill_seqs, dtype=float)
    # A fraction of a sequence is an average over steps (the fluid model in ``bounds.py``).
    return np.sqrt(2.0 * np.asarray(prefill_pairs, dtype=float) / np.where(seqs > 0, seqs, 1.0))
