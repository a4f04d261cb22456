"""A decode step's attention in one Triton kernel: RoPE, the KV-cache write and flash decoding.

One new token per sequence attends over its cached K/V. At small batch this is latency-bound
(at batch 1 and a 1k context, 4 MB of K/V a layer, ~1.4 us of HBM traffic on an H100), yet the
library path takes three launches: RoPE with the cache write, SDPA's split-K kernel and its
reduction, ~10.5 us a layer (`studies/executor-h100/profile.log`). Here one kernel takes the
un-rotated output of the fused q/k/v projection and:

1. splits each sequence's keys into the launch's chunks (``executor.decode_splits``: all of
   the grid's, or by work the sequence's share of the launch's keys); one program takes one
   (sequence, K/V head, chunk) and all ``G = heads / kv_heads`` query heads that share the K/V
   head (GQA), so each K/V element is read once;
2. rotates those query heads and the new key (RoPE, rotate-half layout, in float32 as
   ``executor.elementwise.rope_cache`` does). The program whose chunk holds the new token's
   position stores the new K and V in the cache and, after a barrier among its own threads,
   reads them back with the rest of its chunk. No other program reads that position, so none
   waits on another's store, and the K/V tiles go from the pipeline's shared buffers straight
   to the dots (substituted from registers, the new row cost every tile a round trip);
3. runs the online softmax over its chunk on the tensor cores (``tl.dot``, the G query rows
   padded to 16; the scores as two half-head dots, since RoPE leaves q and k in halves), and
   writes its partial output and log-sum-exp. Each loop step's block numbers are read from the
   block table a step ahead: read in the step, they tie that step's K/V loads to them, and
   Triton's pipeline then keeps one tile in flight whatever its stages (compiled for sm_90),
   against ``stages - 1`` so (``tests/executor/test_decode_attention.py`` counts the buffers);
4. counts itself done on a per-(sequence, K/V head) counter (an acquire-release atomic): the
   last program of that pair merges every chunk of its G heads by their log-sum-exp (one
   load of all of them, so the merge costs one memory round trip, not one per head; a
   verify's tokens one after another), writes the output and resets the counter. A single
   chunk writes its output directly.

A speculative verify step (``query`` tokens per sequence, drafts checked by the target) runs
the same kernel with its ``query x G`` rows in the tile; its K/V are stored before the kernel,
so every chunk reads them from the cache. An FP8 cache is read as FP8 and its scale applied
to the scores and the output, so it halves the bytes instead of adding a dequantized copy. The
counters live in the ``KVCache`` (``split_counters``), so a captured CUDA graph
replays the kernel with them. ``decode_attention(qkv, cos, sin, input_pos, cache, kv_length,
num_heads)`` returns ``[B, 1, heads * D]``, the input of the output projection.

Measured (`studies/executor-h100/decode-attention/NOTES.md`): 8.5 us a layer alone in a CUDA
graph against 9.5 for RoPE + SDPA at batch 1; in a static step it serves FP8 caches only
(``executor.fused.DEFAULT_DECODE_ATTENTION``: a bf16 step was 0.4-4.6% slower with it). A
serving run's paged cache has only this kernel, launched as ``decode_gap.py`` chose
(``studies/serving-validation/``).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from executor import decode_splits, pdl
from executor.triton_launch import launch
from executor.tritonlib import available, tl, triton

__all__ = ["available", "decode_attention", "kernel_constants", "prepare", "supports"]

# The launch's tile: keys per loop step, warps per program, software-pipeline stages (None:
# Triton's default, 3), as ``studies/serving-validation/decode_gap.py`` chose them over
# serving batches on an H100 (``kernel_launch.py``). 128 keys a step; two stages keep one tile
# in flight per program but take 72 KiB of shared memory (sm_90, bf16 cache) against 136 at
# three, so three programs share an SM, not one: with the chunks rounded down
# (``decode_splits.ROUND_DOWN``), 0.87 of three stages' time (``h100-occupancy-2026-12-07/``).
BLOCK_S, NUM_WARPS, NUM_STAGES = 128, 4, 2
# An FP8 cache's dots in float16, not the query's bfloat16: compiled for sm_90, a loop step
# widens its K/V once (``cvt.rn.f16x2.e4m3x2``) instead of on to bfloat16 as well; float16
# holds every e4m3 value and P exactly. 0.84 of bfloat16 dots' time on an H100, 1,400 GB/s
# at 128 x 1,024~ against 1,127 (``h100-capture-2026-12-07/kernel-sweep-fp8-dots.json``).
FP8_AS_F16 = True

if triton is not None:
    FP8_MAX = tl.constexpr(448.0)  # the largest finite float8_e4m3fn

    @triton.jit
    def _rotate(x1, x2, cos, sin):
        """RoPE of a head held as its two halves (float32)."""
        return x1 * cos - x2 * sin, x2 * cos + x1 * sin

    # The chunk count and the strides of the per-sequence inputs (a table cut to the
    # iteration's widest sequence; positions and RoPE rows of a batch of one or more) change
    # from one serving iteration to the next: not specialized (each specialization is a
    # compile, in the middle of a timed run). What still varies, ``BLOCK_SPLITS``, is compiled
    # before timing (``split_lengths``).
    @triton.jit(
        do_not_specialize=["num_splits", "min_keys", "target_programs", "stride_cos",
                           "stride_pos", "stride_table"]
    )  # fmt: skip
    def _decode_kernel(
        qkv_ptr,
        cos_ptr,
        sin_ptr,
        pos_ptr,
        table_ptr,
        k_ptr,
        v_ptr,
        partial_ptr,
        lse_ptr,
        counters_ptr,
        out_ptr,
        num_splits,
        min_keys,
        target_programs,
        heads,
        kv_heads,
        group,
        sm_scale,
        cache_scale,
        stride_qkv_b,
        stride_cos,
        stride_pos,
        stride_table,
        page,
        stride_kb,
        stride_kh,
        stride_ks,
        HALF: tl.constexpr,
        BLOCK_G: tl.constexpr,
        BLOCK_S: tl.constexpr,
        BLOCK_SPLITS: tl.constexpr,
        GROUP: tl.constexpr,
        CACHE_FP8: tl.constexpr,
        USE_PDL: tl.constexpr,
        QUERY: tl.constexpr = 1,
        FUSED: tl.constexpr = True,
        BY_WORK: tl.constexpr = False,
        ROUND_DOWN: tl.constexpr = False,
        FP8_AS_F16: tl.constexpr = False,
    ):
        # The next kernel (the output projection's GEMV) may launch only once the keys are
        # read: launched earlier, its waiting blocks would hold SM slots this kernel needs.
        pdl.wait(USE_PDL)
        pair = tl.program_id(0)  # sequence * kv_heads + K/V head
        split = tl.program_id(1)
        b = pair // kv_heads
        kv_head = pair % kv_heads
        head_dim = 2 * HALF
        # Row r of the tile is query token t = r // group of this sequence, head r % group of
        # this K/V head's group; QUERY = 1 (a decode) is the G heads of one token.
        g = tl.arange(0, BLOCK_G)
        d = tl.arange(0, HALF)
        g_ok = g < QUERY * group
        t = g // group
        token = b * QUERY + t  # the row's token in the iteration: the sequence's tokens in order
        out_head = token * heads + kv_head * group + g % group  # its row of the output [*, D]
        # An FP8 cache is widened to the query's dtype, or to float16 (the module's FP8_AS_F16).
        dot_type = tl.float16 if CACHE_FP8 and FP8_AS_F16 else qkv_ptr.dtype.element_ty
        cache_type = k_ptr.dtype.element_ty
        position = tl.load(pos_ptr + b * stride_pos)  # this sequence's first new token
        limit = position + t  # the last key row r may see (causal among the new tokens)
        table = table_ptr + b * stride_table  # its blocks of ``page`` token slots

        # The query heads of this K/V head, in halves [BLOCK_G, HALF]; rotated here if FUSED.
        q_rows = (
            (qkv_ptr + token * stride_qkv_b)[:, None]
            + (kv_head * group + g % group)[:, None] * head_dim
            + d[None, :]
        )
        q1 = tl.load(q_rows, mask=g_ok[:, None], other=0.0).to(tl.float32)
        q2 = tl.load(q_rows + HALF, mask=g_ok[:, None], other=0.0).to(tl.float32)
        head = kv_head * stride_kh
        length = position + QUERY  # the keys this sequence attends over, its new ones included
        # Its chunks (``executor.decode_splits``): all of the grid's, or by work as many as its
        # share of the launch's keys, in chunks of ~1/target_programs of them.
        splits_here = num_splits
        if BY_WORK:
            batch = tl.num_programs(0) // kv_heads
            total = tl.zeros((), dtype=tl.int64)
            for i0 in range(0, batch, 128):
                i = i0 + tl.arange(0, 128)
                first = tl.load(pos_ptr + i * stride_pos, mask=i < batch, other=0)
                total += tl.sum(tl.where(i < batch, first + QUERY, 0))
            chunk = tl.maximum(min_keys, tl.cdiv(total * kv_heads, target_programs))
            # Rounded down, chunks of at least ``chunk`` keys: about target_programs in all.
            wanted = length // chunk if ROUND_DOWN else tl.cdiv(length, chunk)
            splits_here = tl.minimum(tl.maximum(wanted, 1), num_splits)
        per_split = tl.cdiv(length, splits_here)
        start = split * per_split
        stop = tl.minimum(start + per_split, length)  # empty past its length
        scale = sm_scale * cache_scale
        if FUSED:  # one new token: RoPE, and its K/V stored here (see the module's docstring)
            cos = tl.load(cos_ptr + b * stride_cos + d)
            sin = tl.load(sin_ptr + b * stride_cos + d)
            q1, q2 = _rotate(q1, q2, cos[None, :], sin[None, :])
            if (position >= start) & (position < stop):  # this chunk holds the new token
                # Its key, rotated, and value, rounded to the cache's dtype [HALF] each.
                row = qkv_ptr + b * stride_qkv_b
                k_row = row + (heads + kv_head) * head_dim
                v_row = row + (heads + kv_heads + kv_head) * head_dim
                k1, k2 = _rotate(
                    tl.load(k_row + d).to(tl.float32),
                    tl.load(k_row + HALF + d).to(tl.float32),
                    cos,
                    sin,
                )
                v1 = tl.load(v_row + d).to(tl.float32)
                v2 = tl.load(v_row + HALF + d).to(tl.float32)
                if CACHE_FP8:
                    k1 = tl.clamp(k1 / cache_scale, -FP8_MAX, FP8_MAX)
                    k2 = tl.clamp(k2 / cache_scale, -FP8_MAX, FP8_MAX)
                    v1 = tl.clamp(v1 / cache_scale, -FP8_MAX, FP8_MAX)
                    v2 = tl.clamp(v2 / cache_scale, -FP8_MAX, FP8_MAX)
                block = tl.load(table + position // page)
                slot = block * stride_kb + head + (position % page) * stride_ks
                tl.store(k_ptr + slot + d, k1.to(cache_type))
                tl.store(k_ptr + slot + HALF + d, k2.to(cache_type))
                tl.store(v_ptr + slot + d, v1.to(cache_type))
                tl.store(v_ptr + slot + HALF + d, v2.to(cache_type))
                tl.debug_barrier()  # the stores are visible to this program's loads below
        q1, q2 = q1.to(dot_type), q2.to(dot_type)
        running_max = tl.full((BLOCK_G,), float("-inf"), dtype=tl.float32)
        running_sum = tl.zeros((BLOCK_G,), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_G, HALF), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_G, HALF), dtype=tl.float32)
        # Each step's block numbers are loaded the step before: loaded in the step, the table
        # read ties the K/V loads to it and the software pipeline keeps one K/V tile in flight
        # whatever the stages (see the module's docstring).
        tile = tl.arange(0, BLOCK_S)
        next_blocks = tl.load(table + (start + tile) // page, mask=start + tile < stop, other=0)
        for s0 in range(start, stop, BLOCK_S):
            s = s0 + tile
            s_ok = s < stop
            blocks = next_blocks
            ahead = s + BLOCK_S
            next_blocks = tl.load(table + ahead // page, mask=ahead < stop, other=0)
            rows = blocks * stride_kb + head + (s % page) * stride_ks  # [BLOCK_S]
            keys = k_ptr + rows[:, None] + d[None, :]
            values = v_ptr + rows[:, None] + d[None, :]
            kc1 = tl.load(keys, mask=s_ok[:, None], other=0.0).to(dot_type)
            kc2 = tl.load(keys + HALF, mask=s_ok[:, None], other=0.0).to(dot_type)
            vc1 = tl.load(values, mask=s_ok[:, None], other=0.0).to(dot_type)
            vc2 = tl.load(values + HALF, mask=s_ok[:, None], other=0.0).to(dot_type)
            scores = tl.dot(q1, tl.trans(kc1)) + tl.dot(q2, tl.trans(kc2))  # [BLOCK_G, BLOCK_S]
            visible = s_ok[None, :] & (s[None, :] <= limit[:, None])
            scores = tl.where(visible, scores * scale, float("-inf"))
            new_max = tl.maximum(running_max, tl.max(scores, axis=1))
            # A verify's early token may see no key of this block: its exponents stay 0, not NaN.
            shift = tl.where(new_max == float("-inf"), 0.0, new_max)
            correction = tl.exp(running_max - shift)
            p = tl.exp(scores - shift[:, None])
            running_sum = running_sum * correction + tl.sum(p, axis=1)
            p = p.to(dot_type)
            acc1 = acc1 * correction[:, None] + tl.dot(p, vc1)
            acc2 = acc2 * correction[:, None] + tl.dot(p, vc2)
            running_max = new_max
        pdl.launch_dependents(USE_PDL)
        # A chunk past a shorter sequence's length saw no key: it adds nothing to the merge.
        norm = tl.where(running_sum > 0, cache_scale / running_sum, 0.0)[:, None]
        acc1, acc2 = acc1 * norm, acc2 * norm

        out_rows = out_ptr + out_head[:, None] * head_dim + d[None, :]
        out_type = out_ptr.dtype.element_ty
        if splits_here == 1:
            if split == 0:  # the others of the grid are unused (by work)
                tl.store(out_rows, acc1.to(out_type), mask=g_ok[:, None])
                tl.store(out_rows + HALF, acc2.to(out_type), mask=g_ok[:, None])
        elif split < splits_here:
            part = (pair * num_splits + split) * BLOCK_G + g  # [pairs, splits, BLOCK_G]
            tl.store(partial_ptr + part[:, None] * head_dim + d[None, :], acc1)
            tl.store(partial_ptr + part[:, None] * head_dim + HALF + d[None, :], acc2)
            tl.store(lse_ptr + part, running_max + tl.log(running_sum))
            tl.debug_barrier()  # every thread's stores are issued before the count
            done = tl.atomic_add(counters_ptr + pair, 1, sem="acq_rel", scope="gpu")
            if done == splits_here - 1:  # the last chunk of this pair: merge them all
                # One query token's heads at a time (a verify's tokens in turn), all of its
                # chunks in one load: [BLOCK_SPLITS, GROUP, D] in registers. A verify's three
                # tokens at once took 255 registers and spilled at 32 chunks (ptxas, sm_90a).
                splits = tl.arange(0, BLOCK_SPLITS)[:, None]  # [BLOCK_SPLITS, 1]
                j = tl.arange(0, GROUP)[None, :]  # [1, GROUP]: the token's query heads
                e = tl.arange(0, 2 * HALF)[None, None, :]
                r = j.reshape(GROUP, 1)
                for new_token in range(QUERY):
                    ok = (splits < splits_here) & (j < group)
                    rows = (pair * num_splits + splits) * BLOCK_G + new_token * group + j
                    lse = tl.load(lse_ptr + rows, mask=ok, other=float("-inf"), volatile=True)
                    weights = tl.exp(lse - tl.max(lse, axis=0)[None, :])
                    weights = weights / tl.sum(weights, axis=0)[None, :]
                    parts = tl.load(
                        partial_ptr + rows[:, :, None] * head_dim + e,
                        mask=ok[:, :, None],
                        other=0.0,
                        volatile=True,
                    )  # [BLOCK_SPLITS, GROUP, D]
                    merged = tl.sum(parts * weights[:, :, None], axis=0)  # [GROUP, D]
                    heads_out = (b * QUERY + new_token) * heads + kv_head * group + r
                    tl.store(
                        out_ptr + heads_out * head_dim + e.reshape(1, 2 * HALF),
                        merged.to(out_type),
                        mask=r < group,
                    )
                tl.atomic_xchg(counters_ptr + pair, 0)  # ready for the next step


def supports(head_dim: int) -> bool:
    """Whether the kernel takes this head size: its dots want a power-of-two half head of at
    least 16 (Llama's 128 is one). Other sizes run SDPA (``Kernels.decode_kernel``)."""
    half = head_dim // 2
    return head_dim % 2 == 0 and half >= 16 and half & (half - 1) == 0


def decode_attention(qkv: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor,
                     input_pos: torch.Tensor, cache, kv_length: int, num_heads: int,
                     **options) -> torch.Tensor:  # fmt: skip
    """One decode step's attention from the fused projection ``qkv [B, 1, heads + 2 kv_heads,
    D]`` (not yet rotated; q, k, v heads in that order) with ``cos, sin [1, D]`` at the new
    token's position ``input_pos [1]``: stores the new K/V in ``cache`` (``executor.kv_cache.
    KVCache``, bf16 or FP8) and attends over its first ``kv_length`` positions, the new one
    among them. Returns ``[B, 1, heads * D]`` in qkv's dtype. ``options``: ``prepare``'s keywords.

    A serving iteration's decodes (``executor.ragged``) are sequences at different lengths in a
    paged cache (``PagedKVCache``): then ``input_pos [B]`` and ``cos, sin [B, D]`` are per
    sequence, ``block_table [B, blocks]`` names each one's blocks, and ``kv_length`` is the
    longest one's (each attends over its own ``input_pos + 1`` keys). A static cache is the
    same with one block per sequence, its own row.

    A speculative verify is ``query`` new tokens per sequence: ``qkv [B, query, ...]`` with q
    already rotated and the new K/V already in the cache (``executor.ragged`` stores them, as
    for a prompt chunk); ``input_pos [B]`` is each sequence's first new token, and token ``t``
    sees the keys up to ``input_pos + t``. Its rows share the tile of a K/V head's query heads
    (``query x G`` rows), so the cache is still read once. Returns ``[B, query, heads * D]``,
    written into ``out`` if given (rows of ``heads * D`` one after another: a serving
    iteration's own output buffer, so no copy follows)."""
    return prepare(qkv, cos, sin, input_pos, cache, kv_length, num_heads, **options)(cache)


def _block_g(query: int, group: int) -> int:
    """The tile's rows: a sequence's query tokens x the heads of a K/V head, to a power of two
    of at least 16 (a tensor-core dot's least)."""
    return max(16, triton.next_power_of_2(query * group))


def kernel_constants(batch: int, query: int, num_heads: int, kv_heads: int, head_dim: int,
                     kv_length: int, *, cache_fp8: bool, fused: bool,
                     block_s: int | None = None) -> dict:  # fmt: skip
    """The kernel's compile-time constants for a launch of ``batch`` sequences of ``query``
    new tokens over up to ``kv_length`` keys (what ``prepare`` compiles)."""
    group = num_heads // kv_heads
    return dict(
        HALF=head_dim // 2,
        BLOCK_G=_block_g(query, group),
        BLOCK_S=block_s or BLOCK_S,
        BLOCK_SPLITS=decode_splits.split_width(batch, kv_heads, kv_length),
        GROUP=triton.next_power_of_2(group),
        CACHE_FP8=cache_fp8,
        QUERY=query,
        FUSED=fused,
        BY_WORK=decode_splits.BY_WORK,
        ROUND_DOWN=decode_splits.ROUND_DOWN,
        FP8_AS_F16=FP8_AS_F16,
    )


def prepare(qkv, cos, sin, input_pos, like, kv_length: int, num_heads: int, *,
            block_table: torch.Tensor | None = None, block_s: int | None = None,
            num_warps: int | None = None, num_stages: int | None = None,
            out: torch.Tensor | None = None, rotated: bool = False) -> Callable:  # fmt: skip
    """``decode_attention``'s launch, laid out once for every cache shaped as ``like``:
    ``launch(cache)`` runs it on one layer's cache. A model's layers attend with the same
    queries' shapes, positions and tables, each over its own cache, so a serving iteration lays
    its decodes out once and launches them layer after layer (the chunking, scratch and
    arguments are the host's work, not the GPU's). ``block_s``, ``num_warps`` and
    ``num_stages`` override the module's tile (``BLOCK_S``, ``NUM_WARPS``, ``NUM_STAGES``).
    ``rotated``: one new token's q is rotated and its K/V stored already, as a verify's are
    (the piecewise graphs' pieces do both)."""
    batch, query, _, head_dim = qkv.shape
    fused = query == 1 and not rotated
    assert supports(head_dim), f"decode_attention: head size {head_dim} (see supports)"
    assert qkv.stride(3) == 1 and qkv.stride(2) == head_dim, "decode_attention: packed heads"
    kv_heads = like.k.shape[1]
    if block_table is None:
        block_table = like.own_rows  # [max_batch, 1]: sequence b's one block is row b
    group = num_heads // kv_heads
    block_g = _block_g(query, group)
    splits = decode_splits.splits_of(batch, kv_heads, kv_length)
    pairs = batch * kv_heads
    stages = num_stages or NUM_STAGES
    # One chunk's partial output and log-sum-exp per row: read back by the same launch, so
    # every layer's launch may use them in turn.
    partial = torch.empty(
        pairs * splits * block_g, head_dim, dtype=torch.float32, device=qkv.device
    )
    lse = torch.empty(pairs * splits * block_g, dtype=torch.float32, device=qkv.device)
    if out is None:
        out = torch.empty(batch, query, num_heads * head_dim, dtype=qkv.dtype, device=qkv.device)
    assert (
        out.shape == (batch, query, num_heads * head_dim) and out.stride(1) == num_heads * head_dim
    )
    assert out.stride(0) == query * num_heads * head_dim and out.stride(2) == 1, "packed rows"
    if not fused:  # RoPE was applied before: the tables are not read
        cos = sin = lse
    k = like.k
    inputs = (qkv, cos, sin, input_pos, block_table)
    head = (splits, decode_splits.MIN_KEYS_PER_SPLIT, decode_splits.TARGET_PROGRAMS, num_heads,
            kv_heads, group, head_dim**-0.5)  # fmt: skip
    tail = (
        qkv.stride(1) if query > 1 else qkv.stride(0),  # from one token to the next
        0 if cos.shape[0] == 1 else cos.stride(0),
        0 if input_pos.numel() == 1 else input_pos.stride(0),
        block_table.stride(0),
        k.shape[2],  # token slots per block (a static cache: all of a sequence's)
        *k.stride()[:3],
    )
    constants = dict(
        **kernel_constants(
            batch,
            query,
            num_heads,
            kv_heads,
            head_dim,
            kv_length,
            cache_fp8=like.is_fp8,
            fused=fused,
            block_s=block_s,
        ),  # fmt: skip
        num_warps=num_warps or NUM_WARPS,
        **({} if stages is None else {"num_stages": stages}),
        **pdl.launch_options(),
    )
    paged = hasattr(like, "ensure_counters")

    def launch_on(cache) -> torch.Tensor:
        if paged:
            cache.ensure_counters(pairs)
        scale = cache.scale if cache.is_fp8 else 1.0
        launch(_decode_kernel, (pairs, splits), *inputs, cache.k, cache.v, partial, lse,
               cache.split_counters, out, *head, scale, *tail, **constants)  # fmt: skip
        return out

    return launch_on
