"""Llama in PyTorch, built from the same ``ModelSpec`` the simulator prices.

One decoder layer is

    x = x + wo(attention(rope(q), rope(k), v))   with q, k, v = split(wqkv(rms_norm(x)))
    x = x + w_down(silu(gate) * up)              with gate, up = split(w_gate_up(rms_norm(x)))

and the model is ``embed_tokens -> layers -> norm -> lm_head``. The projections that read the
same input are stored fused (``wqkv``, ``w_gate_up``): one GEMM instead of three (or two), and
one activation quantization instead of three under FP8. The parameter count is unchanged, so it
is exactly ``simulator.data.models.parameter_counts(spec).total``. The elementwise work (RMSNorm,
RoPE, SwiGLU, FP8 casts) lives in ``executor.fused``; weights (random, HF checkpoints) in
``executor.weights``.

Attention is grouped-query (GQA): ``num_attention_heads`` query heads share
``num_key_value_heads`` K/V heads, ``heads_per_kv_group`` query heads each. RoPE follows the
Hugging Face "rotate half" layout (HF checkpoints load unchanged) with Llama 3 frequency scaling
(``executor.rope``).

The KV cache is static: ``[batch, num_kv_heads, max_seq_length, head_dim]`` allocated once by
``setup_caches``. Every tensor shape of a decode step is then fixed, which is what lets
``executor.engine`` capture the step in a CUDA graph. Sequences of one batch advance in lock
step (one ``input_pos`` for the whole batch), which is all a step-level benchmark needs.

Attention paths, chosen by shape:
- no cache (``forward`` on a whole sequence): causal SDPA, the reference for tests;
- prefill from position 0: causal SDPA over the new tokens, the new K/V written into the cache;
- decode with a known ``kv_length`` (a step captured for one context): unmasked SDPA over
  exactly the valid cache positions, which the flash backend splits over the keys; or, where
  ``Kernels.decode_kernel`` picks it (by default for an FP8 cache), the Triton kernel of
  ``executor.decode_attention``, which also does the step's RoPE and cache write;
- decode without it (one token, or with ``attend_cache`` a chunk that continues a cached
  context): SDPA against the whole cache with a mask of the valid positions. For one token the
  query heads of a KV group ride the query-length axis (``[B, kv_heads, heads_per_kv_group, D]``),
  so each K/V head is read once, not once per query head.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from executor.fused import EAGER, Kernels, causal_attention, static_input_scale, to_fp8
from executor.kv_cache import KVCache
from executor.rope import rope_table
from simulator.data.specs import ModelSpec

__all__ = [
    "RMSNorm",
    "Attention",
    "FeedForward",
    "TransformerBlock",
    "Llama",
]


class RMSNorm(nn.Module):
    def __init__(self, dim: int, eps: float) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor, kernels: Kernels = EAGER) -> torch.Tensor:
        return kernels.rms_norm(x, self.weight, self.eps)


class Attention(nn.Module):
    """GQA self-attention. ``num_heads`` / ``num_kv_heads`` are the heads this module holds: all
    of them, or one GPU's share once ``executor.parallel.apply_tp`` has sharded it."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.num_heads = spec.num_attention_heads
        self.num_kv_heads = spec.num_key_value_heads
        self.head_dim = spec.head_dim
        fused_width = (self.num_heads + 2 * self.num_kv_heads) * self.head_dim
        self.wqkv = nn.Linear(spec.hidden_size, fused_width, bias=False)
        self.wo = nn.Linear(self.num_heads * self.head_dim, spec.hidden_size, bias=False)
        self.kv_cache: KVCache | None = None

    @property
    def heads_per_kv_group(self) -> int:
        return self.num_heads // self.num_kv_heads

    def forward(
        self,
        x: torch.Tensor,
        cos: torch.Tensor,
        sin: torch.Tensor,
        input_pos: torch.Tensor | None,
        kernels: Kernels,
        attend_cache: bool = False,
        kv_length: int | None = None,
        ragged=None,
    ) -> torch.Tensor:
        batch, num_tokens, _ = x.shape  # x: [B, T, hidden]
        q_width = self.num_heads * self.head_dim
        qkv = self.wqkv(x).view(batch, num_tokens, -1, self.head_dim)  # [B, T, q+k+v heads, D]
        if ragged is not None:  # a serving iteration: executor.ragged
            from executor.ragged import IterationAttention

            if not isinstance(ragged, IterationAttention):  # a batch: laid out for this layer
                ragged = IterationAttention(self, qkv, cos, sin, ragged, kernels)
            return self.wo(ragged.run(self, qkv))
        cache = self.kv_cache if input_pos is not None else None
        one_kernel = None
        if cache is not None and num_tokens == 1 and kv_length is not None:
            one_kernel = kernels.decode_kernel(cache)
        if one_kernel is not None:
            # RoPE, the cache write and attention over the valid keys in one kernel.
            out = one_kernel(qkv, cos, sin, input_pos, cache, kv_length, self.num_heads)
            return self.wo(out)
        # In place: q and k rotated; with a cache, the new K and V stored at input_pos.
        kernels.rope_cache(qkv, cos, sin, self.num_heads, self.num_kv_heads, cache, input_pos)
        q, k, v = qkv.transpose(1, 2).split(
            [self.num_heads, self.num_kv_heads, self.num_kv_heads], dim=1
        )  # [B, heads, T, D]

        if cache is None:
            out = causal_attention(q, k, v, kernels.prefill_backend)
        elif num_tokens == 1 and kv_length is not None:
            # Every cached position is valid: no mask, so a flash-decoding kernel (split over
            # the keys for one query) reads each K/V head once.
            k_all, v_all = cache.read(batch, q.dtype, kv_length)  # [B, kv_heads, S, D]
            out = F.scaled_dot_product_attention(q, k_all, v_all, enable_gqa=True)
        elif num_tokens == 1 or attend_cache:
            k_all, v_all = cache.read(batch, q.dtype)
            out = self._attend_cache(q, k_all, v_all, input_pos)
        else:
            # Prefill from position 0: the new tokens are the whole context.
            out = causal_attention(q, k, v, kernels.prefill_backend)
        out = out.transpose(1, 2).reshape(batch, num_tokens, q_width)
        return self.wo(out)

    def _attend_cache(
        self, q: torch.Tensor, k_all: torch.Tensor, v_all: torch.Tensor, input_pos: torch.Tensor
    ) -> torch.Tensor:
        batch, _, num_tokens, head_dim = q.shape
        max_seq_length = k_all.shape[2]
        key_pos = torch.arange(max_seq_length, device=q.device)
        visible = key_pos[None, :] <= input_pos[:, None]  # [T, S_max]
        if num_tokens == 1:
            # [B, kv_heads, group, D]: the group's query heads ride the query-length axis.
            q_grouped = q.view(batch, self.num_kv_heads, self.heads_per_kv_group, head_dim)
            out = F.scaled_dot_product_attention(q_grouped, k_all, v_all, attn_mask=visible)
            return out.reshape(batch, self.num_heads, 1, head_dim)
        return F.scaled_dot_product_attention(q, k_all, v_all, attn_mask=visible, enable_gqa=True)


class FeedForward(nn.Module):
    """SwiGLU MLP: ``w_down(silu(x W_gate) * (x W_up))``, gate and up fused into one weight."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.w_gate_up = nn.Linear(spec.hidden_size, 2 * spec.intermediate_size, bias=False)
        self.w_down = nn.Linear(spec.intermediate_size, spec.hidden_size, bias=False)

    def forward(self, x: torch.Tensor, kernels: Kernels) -> torch.Tensor:
        gate_up = self.w_gate_up(x)
        # One token on a GPU: the down projection's GEMV makes silu(gate) * up itself.
        fused = getattr(self.w_down, "forward_gated", None)
        out = fused(gate_up) if fused is not None else None
        if out is not None:
            return out
        scale = static_input_scale(self.w_down)
        if scale is not None:
            return self.w_down(kernels.silu_and_mul_fp8(gate_up, scale))
        return self.w_down(kernels.silu_and_mul(gate_up))


class TransformerBlock(nn.Module):
    """One decoder layer's modules. ``Llama.forward`` runs them (unrolled across layers, so each
    residual add shares a kernel with the RMSNorm after it)."""

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        self.attention_norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.attention = Attention(spec)
        self.mlp_norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.mlp = FeedForward(spec)


# Families whose decoder is this module: dense Llama blocks, no biases, no QK-norm.
RUNNABLE_TYPES = ("llama", "mistral")


def refuse_unless_runnable(spec: ModelSpec) -> None:
    """One ``ConfigError`` line for a model the executor does not run (the simulator still
    predicts it)."""
    from simulator.errors import ConfigError

    if spec.model_type not in RUNNABLE_TYPES or spec.is_moe:
        kind = "a mixture of experts" if spec.is_moe else f"a {spec.model_type} model"
        raise ConfigError(
            f"{spec.name} is {kind}; the executor runs dense Llama decoders "
            f"({', '.join(RUNNABLE_TYPES)}), so rooftune predicts it but cannot measure it"
        )


class Llama(nn.Module):
    """A dense Llama decoder. ``forward(tokens [B, T], input_pos [T]) -> logits``.

    ``input_pos`` None runs without the cache (causal attention over ``tokens``). With a cache,
    several tokens are a prefill from position 0, unless ``attend_cache`` says they continue a
    cached context (a chunk); one token is a decode step.
    ``kv_length`` (decode only) says that exactly the first ``kv_length`` cache positions are
    valid, a number fixed when a step's graph is captured for one context length; attention then
    runs unmasked over them (the flash kernel, as serving engines read only valid KV).
    ``last_token_only`` computes the ``lm_head`` for the last position only (prefill needs just
    that one to sample, and the vocabulary projection of every prompt token is wasted work).
    ``ragged`` (an ``executor.ragged.RaggedBatch``) runs a serving iteration instead: ``tokens
    [1, N]`` of sequences at their own positions, K/V in paged caches
    (``executor.ragged.setup_paged_caches``), logits at the batch's sampled rows only.
    """

    def __init__(self, spec: ModelSpec) -> None:
        super().__init__()
        refuse_unless_runnable(spec)
        self.spec = spec
        self.embed_tokens = nn.Embedding(spec.vocab_size, spec.hidden_size)
        self.layers = nn.ModuleList(TransformerBlock(spec) for _ in range(spec.num_hidden_layers))
        self.norm = RMSNorm(spec.hidden_size, spec.rms_norm_eps)
        self.lm_head = nn.Linear(spec.hidden_size, spec.vocab_size, bias=False)
        if spec.tie_word_embeddings:
            self.lm_head.weight = self.embed_tokens.weight
        self.kernels = EAGER
        self.collectives = None  # executor.parallel.Collectives once apply_tp has sharded it
        self.max_batch = 0
        self.max_seq_length = 0
        self.hidden: torch.Tensor | None = None  # the last ragged run's states, if it kept them
        self.register_buffer("rope_cos", torch.empty(0), persistent=False)
        self.register_buffer("rope_sin", torch.empty(0), persistent=False)
        self.set_rope(min(spec.max_position_embeddings, 4096))

    def set_rope(self, length: int) -> None:
        """The RoPE cos/sin table for positions 0..length-1, on the embedding's device."""
        device = self.embed_tokens.weight.device
        cos, sin = rope_table(self.spec, length)
        self.rope_cos, self.rope_sin = cos.to(device), sin.to(device)

    def setup_caches(
        self,
        *,
        max_batch: int,
        max_seq_length: int,
        kv_dtype: torch.dtype | None = None,
        kv_scale: float = 1.0,
    ) -> None:
        """Allocate the static KV cache (every layer) and the RoPE table up to max_seq_length.
        Raises ``torch.OutOfMemoryError`` on a GPU when it does not fit: callers record that."""
        max_seq_length = (max_seq_length + 15) // 16 * 16  # aligned masks for the SDPA kernels
        self.free_caches()
        device = self.embed_tokens.weight.device
        dtype = kv_dtype or self.layers[0].attention_norm.weight.dtype
        for layer in self.layers:
            attn = layer.attention
            attn.kv_cache = KVCache(
                max_batch,
                attn.num_kv_heads,
                max_seq_length,
                attn.head_dim,
                dtype,
                device,
                scale=kv_scale,
            )
        self.max_batch, self.max_seq_length = max_batch, max_seq_length
        if self.rope_cos.shape[0] < max_seq_length:
            self.set_rope(max_seq_length)

    def free_caches(self) -> None:
        for layer in self.layers:
            layer.attention.kv_cache = None
        self.max_batch = self.max_seq_length = 0

    def forward(
        self,
        tokens: torch.Tensor,
        input_pos: torch.Tensor | None = None,
        *,
        last_token_only: bool = False,
        attend_cache: bool = False,
        kv_length: int | None = None,
        ragged=None,
    ) -> torch.Tensor:
        num_tokens = tokens.shape[1]
        if ragged is not None:  # tokens [1, N] of a serving iteration (executor.ragged)
            input_pos = ragged.positions
        if input_pos is None:
            positions = torch.arange(num_tokens, device=tokens.device)
            if self.rope_cos.shape[0] < num_tokens:
                self.set_rope(num_tokens)
        else:
            positions = input_pos
        kernels = self.kernels
        residual, normed, cos, sin = self.embed(tokens, positions)
        # An EAGLE-3 head reads the states after a low, a middle and the last layer.
        keep = eagle_layers(len(self.layers)) if ragged is not None and ragged.keep_hidden else ()
        kept = []
        attend = ragged if ragged is None else self._laid_out(ragged, cos, sin)
        for index, layer in enumerate(self.layers):
            attended = layer.attention(
                normed, cos, sin, input_pos, kernels, attend_cache, kv_length, attend
            )
            residual, normed = self.finish_layer(index, residual, attended)
            kept.extend(residual for at in keep if at == index)
        if ragged is not None and ragged.keep_hidden:  # an EAGLE-3 head's low, mid, high
            self.hidden = torch.cat(kept, dim=-1)[0]
        if ragged is not None:
            return self.sampled_logits(normed, ragged.sample_rows)
        if last_token_only:
            normed = normed[:, -1:]
        return self.logits(normed)

    def _laid_out(self, batch, cos: torch.Tensor, sin: torch.Tensor):
        """A serving iteration's attention laid out once for every layer
        (``executor.ragged.IterationAttention``), each layer's q/k/v copied into its buffer: the
        layout is host work, the copy a short kernel. Into a CUDA graph, where host work costs
        nothing and the copy would replay every step, ``batch`` itself (a layout a layer)."""
        from executor.ragged import IterationAttention

        if torch.cuda.is_available() and torch.cuda.is_current_stream_capturing():
            return batch
        attention = self.layers[0].attention
        width = attention.num_heads + 2 * attention.num_kv_heads
        weight = self.embed_tokens.weight
        qkv = torch.empty(1, len(batch.positions), width, attention.head_dim, dtype=weight.dtype,
                          device=weight.device)  # fmt: skip
        return IterationAttention(attention, qkv, cos, sin, batch, self.kernels)

    def embed(self, tokens: torch.Tensor, positions: torch.Tensor):
        """The run up to the first layer's attention: (residual stream, its first RMSNorm (in
        FP8 for an FP8 ``wqkv`` with a static scale), RoPE cos and sin at ``positions``)."""
        cos, sin = self.rope_cos[positions], self.rope_sin[positions]  # [T, head_dim]
        residual = self.embed_tokens(tokens)  # [B, T, hidden]
        normed = self.layers[0].attention_norm(residual, self.kernels)
        first_scale = static_input_scale(self.layers[0].attention.wqkv)
        if first_scale is not None:
            normed = to_fp8(normed, first_scale)
        return residual, normed, cos, sin

    def finish_layer(self, index: int, residual: torch.Tensor, attended: torch.Tensor):
        """Layer ``index`` after its attention (``attended``, past ``wo``): the residual add
        with the MLP's norm, the MLP, and the add with the next layer's norm (the final norm
        after the last layer). Returns (residual, normed). Each residual add shares a kernel
        with the RMSNorm after it."""
        layer, last = self.layers[index], index + 1 == len(self.layers)
        next_norm = self.norm if last else self.layers[index + 1].attention_norm
        next_input = self.lm_head if last else self.layers[index + 1].attention.wqkv
        kernels = self.kernels
        residual, normed = self._add_norm(
            residual, attended, layer.mlp_norm, layer.mlp.w_gate_up, kernels
        )
        return self._add_norm(residual, layer.mlp(normed, kernels), next_norm, next_input, kernels)

    def sampled_logits(self, normed: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """The logits of a serving iteration's sampled ``rows`` of ``normed [1, N, hidden]``
        (gathered as bytes, should the norm be FP8)."""
        raw = normed.view(torch.uint8) if normed.element_size() == 1 else normed
        return self.logits(raw[:, rows].view(normed.dtype))

    def logits(self, normed: torch.Tensor) -> torch.Tensor:
        """The vocabulary projection of ``normed``, whole (gathered from every TP rank)."""
        logits = self.lm_head(normed)  # [B, T or 1, vocab / tp]
        if self.collectives is not None:
            logits = self.collectives.gather_last_dim(logits)
        return logits

    def _add_norm(self, residual, delta, norm: RMSNorm, consumer: nn.Module, kernels):
        """(residual + delta, its RMSNorm), the norm feeding ``consumer``: quantized by the same
        kernel for an FP8 consumer with a static scale. Under TP ``delta`` is this GPU's partial
        sum: all-reduced first, or all in one kernel by the one-shot all-reduce."""
        scale = static_input_scale(consumer)
        if self.collectives is not None:
            fused = self.collectives.reduce_add_rms_norm(
                residual, delta, norm.weight, norm.eps, scale
            )
            if fused is not None:
                return fused
            delta = self.collectives.all_reduce(delta)
        if scale is not None:
            return kernels.add_rms_norm_fp8(residual, delta, norm.weight, norm.eps, scale)
        return kernels.add_rms_norm(residual, delta, norm.weight, norm.eps)


def eagle_layers(layers: int) -> tuple[int, ...]:
    """The layers whose output states an EAGLE-3 head fuses: the second, the middle one and the
    last (a model of fewer than three layers gives one state twice)."""
    return min(1, layers - 1), layers // 2, layers - 1
