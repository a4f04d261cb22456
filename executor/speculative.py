"""Speculative decoding in the serving loop: drafters that propose, the target that verifies.

A speculative round (``simulator.serving.speculative`` prices it) is, per decoding sequence:

1. the drafter proposes ``g`` tokens after the sequence's last one;
2. the target verifies them in one step of ``g + 1`` tokens (the last token and the drafts, at
   their positions, each attending causally over the cache: ``RaggedBatch(query=g + 1)``), and
   samples a token after each;
3. the first ``k`` drafts are kept and the target's token after them: ``k + 1`` tokens.

With random weights a draft agrees with the target by chance alone, so ``k`` is not taken from
the tokens: the scheduler draws it from the plan's acceptance rate with its seeded generator
(``Iteration.accepted``) before the round, and the executor keeps exactly that many. What is
real is the cost: every draft step and the verify run at their true shapes on the GPU. The
drafts and the verify's inputs stay on the GPU; only the sampled tokens come back, as without
speculation. A round with no prompt chunk beside it replays a CUDA graph of its bucket
(``executor.speculative_graphs``); drafters therefore propose from GPU tensors alone
(``tail_of`` gathers what they keep per sequence, outside the graph).

Drafters (``method`` of ``SpeculativeConfig``):

- ``DraftModel``: a small Llama of the same vocabulary (Llama-3.2-1B for 8B) with its own paged
  cache on the executor's block tables (the same blocks, its own K/V). It prefills every prompt
  chunk beside the target, then drafts in ``g`` steps. Its first step feeds two tokens per
  sequence, the one before the last and the last: after a round that kept every draft, the
  last draft never went through the draft model, and one uniform step covers that without a
  branch (the other sequences rewrite a key they already hold, with the same token);
- ``EagleHead``: an EAGLE-3 head (the one the cost model prices) on three of the target's
  hidden states, with its own one layer of paged cache; each later draft step feeds the
  head's own output state back in;
- ``PromptLookup``: n-gram drafting on the host costs no GPU time; it proposes the last token
  again (the content is immaterial, the verify's shape is what counts).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import torch
from torch import nn

from executor.kv_cache import PagedKVCache
from executor.ragged import RaggedBatch, setup_paged_caches

__all__ = ["DraftModel", "EagleHead", "PromptLookup", "draft_steps"]


def draft_steps(first: torch.Tensor, tables: torch.Tensor, g: int, block_size: int,
                max_length: int) -> list[RaggedBatch]:  # fmt: skip
    """The ``g`` ragged batches of a drafting round for sequences whose last token sits at
    position ``first [n]`` with block tables ``tables [n, W]`` (both on the GPU, so a captured
    round computes them itself): the first feeds positions ``first - 1`` and ``first``
    (``query=2``, sampling the second), each later one the previous draft at ``first + j - 1``.
    ``max_length`` bounds every sequence's keys (it sizes the decode kernel's chunks)."""
    n, device = len(first), first.device
    positions = first[:, None] + torch.arange(-1, g, device=device)[None, :]  # [n, g + 1]
    blocks = tables.gather(1, positions // block_size)
    offsets = positions % block_size
    steps = [RaggedBatch(positions=positions[:, :2].reshape(-1),
                         blocks=blocks[:, :2].reshape(-1), offsets=offsets[:, :2].reshape(-1),
                         tables=tables, decodes=n, chunks=[],
                         sample_rows=torch.arange(1, 2 * n, 2, device=device),
                         max_length=max_length, query=2)]  # fmt: skip
    every = torch.arange(n, device=device)
    for j in range(2, g + 1):
        steps.append(RaggedBatch(positions=positions[:, j], blocks=blocks[:, j],
                                 offsets=offsets[:, j], tables=tables, decodes=n, chunks=[],
                                 sample_rows=every, max_length=max_length))  # fmt: skip
    return steps


class _Tail:
    """Per block-table row, on the GPU: the token before a sequence's last one (the first draft
    step feeds it again), and, for a head, its input state made from the target's there."""

    def __init__(self, device: torch.device, hidden: int = 0, dtype=torch.bfloat16) -> None:
        self.device, self.hidden, self.dtype = device, hidden, dtype
        self.token = torch.zeros(0, dtype=torch.long, device=device)
        self.state = torch.zeros(0, hidden, dtype=dtype, device=device)

    def ensure(self, rows: int) -> None:
        if self.token.numel() < rows:
            grown = max(rows, 2 * self.token.numel(), 64)
            token = torch.zeros(grown, dtype=torch.long, device=self.device)
            token[: self.token.numel()] = self.token
            state = torch.zeros(grown, self.hidden, dtype=self.dtype, device=self.device)
            state[: self.state.shape[0]] = self.state
            self.token, self.state = token, state


class PromptLookup:
    """``ngram``: drafts from the host at no GPU cost (here the last token, ``g`` times)."""

    def __init__(self, g: int) -> None:
        self.g = g

    def attach(self, executor) -> None:
        pass

    def prefill(self, batch, token_ids, rows, hidden=None) -> None:
        pass

    def tail_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return ()

    def propose(self, tail, last, first, tables, max_length: int) -> torch.Tensor:
        return last[:, None].expand(-1, self.g)

    def kept(self, rows, verify_tokens, kept, hidden=None) -> None:
        pass


class DraftModel:
    """``draft``: ``model`` (an ``executor.model.Llama`` of the target's vocabulary) drafts.
    ``pieces``: its own piecewise graphs (``executor.piecewise_graphs``), which the serving loop
    gives it beside the target's, for its prefill of the prompt chunks."""

    def __init__(self, model, g: int) -> None:
        self.model, self.g = model, g
        self.pieces = None

    def attach(self, executor) -> None:
        """Its paged cache: as many blocks as the executor's (the same block tables)."""
        cache = executor.model.layers[0].attention.kv_cache
        setup_paged_caches(self.model, num_blocks=cache.k.shape[0],
                           block_size=executor.block_size, kv_dtype=cache.k.dtype,
                           kv_scale=cache.scale, max_seq_length=executor.max_seq_length)  # fmt: skip
        self.tail = _Tail(executor.device)
        self.block_size = executor.block_size

    def prefill(self, batch: RaggedBatch, token_ids: torch.Tensor, rows: np.ndarray,
                hidden=None) -> None:  # fmt: skip
        """The prompt chunks of ``batch`` (no decodes) into the draft's cache; each chunk's
        last token is the one before its sequence's next."""
        pieces = self.pieces
        if pieces is not None and pieces.holds(token_ids.shape[1]):
            pieces.run(token_ids, batch)
        else:
            self.model(token_ids, ragged=batch)
        self.tail.ensure(int(rows.max()) + 1)
        ends = torch.tensor([start + length - 1 for start, length, _, _ in batch.chunks],
                            device=token_ids.device)  # fmt: skip
        self.tail.token[torch.from_numpy(rows).to(token_ids.device)] = token_ids[0, ends]

    def tail_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """What the first draft step of these block-table rows feeds again: the token before
        each one's last."""
        self.tail.ensure(int(rows.max()) + 1)
        return (self.tail.token[rows],)

    def propose(self, tail: tuple[torch.Tensor, ...], last: torch.Tensor, first: torch.Tensor,
                tables: torch.Tensor, max_length: int) -> torch.Tensor:  # fmt: skip
        """``[n, g]`` drafts after each sequence's ``last`` token (at position ``first``), all
        on the GPU (``tail`` from ``tail_of``)."""
        steps = draft_steps(first, tables, self.g, self.block_size, max_length)
        tokens = torch.stack([tail[0], last], dim=1).reshape(1, -1)
        drafts = []
        for batch in steps:
            tokens = self.model(tokens, ragged=batch)[0].argmax(dim=-1)
            drafts.append(tokens)
            tokens = tokens[None]
        return torch.stack(drafts, dim=1)

    def kept(self, rows: np.ndarray, verify_tokens: torch.Tensor, kept: torch.Tensor,
             hidden=None) -> None:  # fmt: skip
        """After the verify: the token before each sequence's new last one."""
        index = torch.arange(len(rows), device=kept.device)
        self.tail.token[torch.from_numpy(rows).to(kept.device)] = verify_tokens[index, kept - 1]


class EagleHead(nn.Module):
    """``eagle``: an EAGLE-3 head, the one ``simulator.data.architecture.eagle3_head`` prices
    (Li et al. 2025, arXiv:2503.01840): ``fc`` fuses three of the target's hidden states (a low,
    a middle and a high layer's: ``3h -> h``); one decoder layer whose q/k/v read the normed
    token embedding and the normed state side by side (``2h`` wide), the state as its residual;
    its own norm and ``lm_head`` over a draft vocabulary of ``EAGLE3_DRAFT_VOCAB`` tokens, each
    mapped to a target token id. The first draft step starts from the target's states, each
    later one from the head's own output state. Weights random, in the target's dtype."""

    wants_hidden = True  # the verify keeps the target's states for it

    def __init__(self, target, g: int) -> None:
        super().__init__()
        from executor.model import RMSNorm, TransformerBlock
        from simulator.data.architecture import EAGLE3_DRAFT_VOCAB

        spec = target.spec
        h, eps = spec.hidden_size, spec.rms_norm_eps
        self.target, self.g = [target], g  # a list: not a submodule (its weights are its own)
        weight = target.embed_tokens.weight
        self.fc = nn.Linear(3 * h, h, bias=False)
        self.layer = TransformerBlock(spec)
        attn = self.layer.attention
        attn.wqkv = nn.Linear(2 * h, attn.wqkv.out_features, bias=False)
        self.hidden_norm, self.norm = RMSNorm(h, eps), RMSNorm(h, eps)
        self.lm_head = nn.Linear(h, EAGLE3_DRAFT_VOCAB, bias=False)
        for param in self.parameters():
            nn.init.normal_(param, std=0.02) if param.dim() > 1 else nn.init.ones_(param)
        self.to(weight)
        # Draft-vocabulary id -> target id (a fixed spread over the target's vocabulary).
        self.register_buffer("draft_to_target", torch.arange(EAGLE3_DRAFT_VOCAB,
                             device=weight.device) * 4 % spec.vocab_size)  # fmt: skip

    def attach(self, executor) -> None:
        """Its one layer of paged cache: as many blocks as the executor's, the same tables."""
        cache = executor.model.layers[0].attention.kv_cache
        attn = self.layer.attention
        attn.kv_cache = PagedKVCache(cache.k.shape[0], attn.num_kv_heads, executor.block_size,
                                     attn.head_dim, cache.k.dtype, executor.device,
                                     scale=cache.scale)  # fmt: skip
        self.tail = _Tail(executor.device, self.target[0].spec.hidden_size,
                          self.fc.weight.dtype)  # fmt: skip
        self.block_size = executor.block_size

    def step(self, tokens: torch.Tensor, state: torch.Tensor, batch: RaggedBatch):
        """``tokens [1, N]``, ``state [N, h]`` -> (sampled target token ids, the head's output
        states at the sampled rows)."""
        target = self.target[0]
        kernels, layer = target.kernels, self.layer
        embedded = layer.attention_norm(target.embed_tokens(tokens), kernels)
        both = torch.cat([embedded, self.hidden_norm(state[None], kernels)], dim=-1)
        cos, sin = target.rope_cos[batch.positions], target.rope_sin[batch.positions]
        x = state[None] + layer.attention(both, cos, sin, batch.positions, kernels, False, None,
                                          batch)  # fmt: skip
        x = x + layer.mlp(layer.mlp_norm(x, kernels), kernels)
        out = x[0, batch.sample_rows]
        logits = self.lm_head(self.norm(out, kernels))
        return self.draft_to_target[logits.argmax(dim=-1)], out

    def fuse(self, hidden: torch.Tensor) -> torch.Tensor:
        """The target's three states ``[N, 3h]`` -> the head's input state ``[N, h]``."""
        return self.fc(hidden.to(self.fc.weight.dtype))

    def prefill(self, batch: RaggedBatch, token_ids: torch.Tensor, rows: np.ndarray,
                hidden: torch.Tensor | None = None) -> None:  # fmt: skip
        """The prompt chunks through the head (its cache), on the target's states ``hidden``
        of the same tokens; each chunk's last state is kept for the first draft."""
        assert hidden is not None
        ends = torch.tensor([at + n - 1 for at, n, _, _ in batch.chunks], device=token_ids.device)
        everything = replace(batch, sample_rows=ends)
        _, state = self.step(token_ids, self.fuse(hidden), everything)
        self.tail.ensure(int(rows.max()) + 1)
        index = torch.from_numpy(rows).to(token_ids.device)
        self.tail.state[index] = state.to(self.tail.dtype)
        self.tail.token[index] = token_ids[0, everything.sample_rows]

    def tail_of(self, rows: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The token before each row's last one, and the head's input state there."""
        self.tail.ensure(int(rows.max()) + 1)
        return self.tail.token[rows], self.tail.state[rows]

    def propose(self, tail: tuple[torch.Tensor, ...], last: torch.Tensor, first: torch.Tensor,
                tables: torch.Tensor, max_length: int) -> torch.Tensor:  # fmt: skip
        steps = draft_steps(first, tables, self.g, self.block_size, max_length)
        token, state = tail
        tokens = torch.stack([token, last], dim=1).reshape(1, -1)
        state = state.repeat_interleave(2, dim=0)
        drafts = []
        for batch in steps:
            token, state = self.step(tokens, state, batch)
            drafts.append(token)
            tokens = token[None]
        return torch.stack(drafts, dim=1)

    def kept(self, rows: np.ndarray, verify_tokens: torch.Tensor, kept: torch.Tensor,
             hidden: torch.Tensor | None = None) -> None:  # fmt: skip
        """After the verify: the token before each new last one, and the head's input state
        from the target's there (``hidden [n, g + 1, 3h]``, the verify's)."""
        index = torch.arange(len(rows), device=kept.device)
        at = torch.from_numpy(rows).to(kept.device)
        self.tail.token[at] = verify_tokens[index, kept - 1]
        if hidden is not None:
            self.tail.state[at] = self.fuse(hidden[index, kept - 1]).to(self.tail.dtype)
