"""A later prompt chunk's attention: its queries over the prompt's cached keys and its own.

A chunk of ``L`` tokens that starts at position ``P`` attends over ``P + L`` keys, causal from
the bottom right. PyTorch runs that shape on its flash kernel (``causal_lower_right``), about
half the rate of cuDNN's fused kernel on Hopper, which prices every prefill in the cost model
(``studies/serving-validation/NOTES.md``: each 2,048 keys of prefix cost 7-8 ms of an 8B
chunk against 3.5 priced). cuDNN's kernel, as PyTorch calls it, has only a top-left causal
mask and builds a plan for every shape it meets (tens of ms on the host). So the chunk is cut
into two attentions that kernel does take, each at a shape from a short list:

- the *prefix*: keys ``[0, P0)``, ``P0`` being ``P`` rounded down to ``PREFIX_BUCKET``, seen
  by every query, unmasked; the queries zero-padded to a multiple of ``bucket``;
- the *square*: keys ``[P0, P + L)`` (``r = P - P0`` cached ones, then the chunk's own),
  causal, with ``r`` zero queries ahead of the chunk's so that the square's diagonal is the
  chunk's (their outputs are dropped; at most ``PREFIX_BUCKET - 1`` rows of extra work), zero-
  padded at the end to a multiple of ``bucket`` (no real query sees a padded key).

Each query's two outputs are merged by their softmax log-sum-exps (``merge``), the way split-K
flash decoding merges its chunks: ``o = o1 s1 + o2 (1 - s1)``, ``s1 = sigmoid(lse1 - lse2)``.
A first chunk (``P = 0``) is the square alone. K and V are repeated to the query heads, as
cuDNN's kernel wants (``executor.fused.causal_attention``).

Measured on an H100 (``studies/serving-validation/h100-prefix-2026-12-08/``): 16-24 % faster
than SDPA at 1,500 queries and more (250-370 TFLOP/s against 220-300), yet short of the 480-590
a causal square reaches, and 2.2x slower at 512 queries. So chunks of ``MIN_QUERIES`` or more
take this path, on GPUs where it ran (``pays_on``); shorter ones keep SDPA's kernel.
"""

from __future__ import annotations

import functools

import torch

from executor.tritonlib import tl, triton

__all__ = [
    "MIN_QUERIES",
    "PREFIX_BUCKET",
    "LaterChunk",
    "attend",
    "build_plans",
    "merge",
    "pays_on",
    "plan_shapes",
]

# The prefix's keys come in multiples of this: the plans of a 16k-token prompt's chunks are
# (chunk bucket) x 16 prefix lengths and the squares, all built by the warm-up; the square's
# extra rows cost at most (PREFIX_BUCKET - 1)^2 / 2 scores a head, against 2,048 x 1,024 and
# more of the chunk's own where a prefix part exists.
PREFIX_BUCKET = 1024
# Fewer queries than this run SDPA's bottom-right kernel instead (``executor.ragged``): on an
# H100, 512 queries over 4,096 cached keys took 0.387 ms cut for cuDNN against 0.175 through
# SDPA, while 1,500 over 3,300 took 0.398 against 0.450 and 2,048 over 2,048-6,144 0.38-0.65
# against 0.48-0.80 (``studies/serving-validation/h100-prefix-2026-12-08/prefix-attention.json``).
MIN_QUERIES = 1024


@functools.cache
def pays_on(device: torch.device) -> bool:
    """Whether a GPU runs later chunks cut for cuDNN: Hopper and newer, where it was measured
    to beat the flash kernel and where PyTorch's cuDNN attention runs (``attend``'s GPU
    path); elsewhere chunks keep SDPA's kernel. A CPU runs the cut too (on PyTorch's flash
    kernel), so that the tests run it inside the serving loop."""
    if device.type != "cuda":
        return True
    return torch.backends.cudnn.is_available() and torch.cuda.get_device_capability(device)[0] >= 9


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool):
    """``(output, lse)``: attention of ``q [1, H, T, D]`` over ``k, v [1, H, S, D]`` (as many
    heads), and the log-sum-exp of each query's scores ``[1, H, T]`` (float32; at least T
    wide). cuDNN's fused kernel on a GPU (PyTorch's memory-efficient one for float32, which
    cuDNN's does not take), PyTorch's flash kernel on a CPU."""
    if q.is_cuda and q.dtype in (torch.float16, torch.bfloat16):
        result = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0,
                                                                     causal)  # fmt: skip
    elif q.is_cuda:
        result = torch.ops.aten._scaled_dot_product_efficient_attention(q, k, v, None, True, 0.0,
                                                                         causal)  # fmt: skip
    else:
        result = torch.ops.aten._scaled_dot_product_flash_attention_for_cpu(q, k, v, 0.0, causal)
    return result[0], result[1].reshape(q.shape[0], q.shape[1], -1)


def merge(o1, lse1, o2, lse2, out: torch.Tensor) -> None:
    """Write into ``out [T, H, D]`` the attention over two disjoint key sets from each one's
    output ``[1, H, T, D]`` and log-sum-exp ``[1, H, T]`` (views at the same T rows)."""
    if out.is_cuda and triton is not None:
        merge_in_kernel(o1, lse1, o2, lse2, out)
        return
    share = torch.sigmoid(lse1 - lse2)[..., None]
    o = torch.lerp(o2.float(), o1.float(), share)
    out.copy_(o[0].transpose(0, 1))


if triton is not None:
    # The square's rows start at any offset: its pointers are not specialized on alignment (each
    # specialization would be a compile inside a timed iteration).
    @triton.jit(do_not_specialize_on_alignment=["o1_ptr", "lse1_ptr", "o2_ptr", "lse2_ptr"])
    def _merge_kernel(o1_ptr, lse1_ptr, o2_ptr, lse2_ptr, out_ptr, heads,
                      s1_t, s1_h, l1_t, l1_h, s2_t, s2_h, l2_t, l2_h, so_t, so_h,
                      BLOCK_H: tl.constexpr, D: tl.constexpr):  # fmt: skip
        # One query row, every head: read both outputs once, write the merged one once.
        t = tl.program_id(0)
        h = tl.arange(0, BLOCK_H)[:, None]
        d = tl.arange(0, D)[None, :]
        ok = h < heads
        lse1 = tl.load(lse1_ptr + t * l1_t + h * l1_h, mask=ok, other=0.0)
        lse2 = tl.load(lse2_ptr + t * l2_t + h * l2_h, mask=ok, other=0.0)
        share = tl.sigmoid(lse1 - lse2)
        a = tl.load(o1_ptr + t * s1_t + h * s1_h + d, mask=ok, other=0.0).to(tl.float32)
        b = tl.load(o2_ptr + t * s2_t + h * s2_h + d, mask=ok, other=0.0).to(tl.float32)
        merged = b + share * (a - b)
        tl.store(out_ptr + t * so_t + h * so_h + d, merged.to(out_ptr.dtype.element_ty), mask=ok)


def merge_in_kernel(o1, lse1, o2, lse2, out: torch.Tensor) -> None:
    """``merge`` in one Triton kernel: each output element read once a side, written once."""
    heads, length, dim = o1.shape[1:]
    _merge_kernel[(length,)](o1, lse1, o2, lse2, out, heads,
                             o1.stride(2), o1.stride(1), lse1.stride(2), lse1.stride(1),
                             o2.stride(2), o2.stride(1), lse2.stride(2), lse2.stride(1),
                             out.stride(0), out.stride(1), BLOCK_H=triton.next_power_of_2(heads),
                             D=dim)  # fmt: skip


def _round_up(n: int, bucket: int) -> int:
    return n + (-n % bucket)


class LaterChunk:
    """One chunk's attention, laid out once an iteration and run once a layer: ``q [L, H, D]``
    (its rotated queries, a view of the iteration's q/k/v rows), ``out [L, H, D]`` (where its
    output goes), starting at position ``start``. ``chunk(k, v)`` takes the sequence's keys and
    values ``[1, kv_heads, start + L, D]`` (gathered from the cache, the chunk's own stored)."""

    def __init__(self, q: torch.Tensor, out: torch.Tensor, start: int, kv_heads: int,
                 bucket: int, prefix_bucket: int = PREFIX_BUCKET) -> None:  # fmt: skip
        length, heads, dim = q.shape
        self.q, self.out, self.length = q.transpose(0, 1), out, length
        self.prefix = start - start % prefix_bucket  # keys every query sees
        self.rows = slice(start - self.prefix, start - self.prefix + length)  # in the square
        side = _round_up(self.rows.stop, bucket)
        # Zeros stay zero: each layer writes only the views below (made once, not per layer).
        self.square = [q.new_zeros(1, heads, side, dim) for _ in range(3)]
        self.square_q = self.square[0][0, :, self.rows]
        group = heads // kv_heads  # K/V heads repeated to the query heads in the copies
        self.square_kv = [x.view(1, kv_heads, group, side, dim)[:, :, :, : self.rows.stop]
                          for x in self.square[1:]]  # fmt: skip
        self.repeated = (1, kv_heads, group, self.prefix, dim), (1, heads, self.prefix, dim)
        if self.prefix:
            self.prefix_q = q.new_zeros(1, heads, _round_up(length, bucket), dim)
            self.prefix_q_rows = self.prefix_q[0, :, :length]

    def __call__(self, k: torch.Tensor, v: torch.Tensor) -> None:
        self.square_q.copy_(self.q)
        for source, target in zip((k, v), self.square_kv, strict=True):
            target.copy_(source[:, :, self.prefix :, None].transpose(2, 3))
        o2, lse2 = attend(*self.square, causal=True)
        rows = self.rows
        if not self.prefix:
            self.out.copy_(o2[0, :, rows].transpose(0, 1))
            return
        self.prefix_q_rows.copy_(self.q)
        grouped, shape = self.repeated
        k1, v1 = (x[:, :, None, : self.prefix].expand(grouped).reshape(shape) for x in (k, v))
        o1, lse1 = attend(self.prefix_q, k1, v1, causal=False)
        length = self.length
        merge(o1[:, :, :length], lse1[:, :, :length], o2[:, :, rows], lse2[:, :, rows], self.out)


def plan_shapes(max_chunk: int, max_length: int, bucket: int,
                prefix_bucket: int = PREFIX_BUCKET,
                min_queries: int = MIN_QUERIES) -> list[tuple[int, int, bool]]:  # fmt: skip
    """Every ``(queries, keys, causal)`` shape a ``LaterChunk`` of ``min_queries`` to
    ``max_chunk`` tokens in a sequence of up to ``max_length`` can run: what the warm-up
    builds plans for."""
    smallest = _round_up(min_queries, bucket)
    squares = range(smallest, _round_up(prefix_bucket - 1 + max_chunk, bucket) + 1, bucket)
    shapes = [(side, side, True) for side in squares]
    for prefix in range(prefix_bucket, max_length, prefix_bucket):
        largest = _round_up(min(max_chunk, max_length - prefix), bucket)
        shapes += [(queries, prefix, False) for queries in range(smallest, largest + 1, bucket)]
    return shapes


def build_plans(heads: int, dim: int, dtype: torch.dtype, device: torch.device, *,
                max_chunk: int, max_length: int, bucket: int,
                prefix_bucket: int = PREFIX_BUCKET) -> int:  # fmt: skip
    """Run ``attend`` once at every shape of ``plan_shapes`` (cuDNN builds each one's plan,
    tens of ms, here rather than in a timed iteration) and the merge once (its compile);
    returns the number of shapes."""
    shapes = plan_shapes(max_chunk, max_length, bucket, prefix_bucket)
    for queries, keys, causal in shapes:
        q = torch.zeros(1, heads, queries, dim, dtype=dtype, device=device)
        kv = torch.zeros(1, heads, keys, dim, dtype=dtype, device=device)
        attend(q, kv, kv, causal)
    if max_length > prefix_bucket + 1:
        q = torch.zeros(1, heads, dim, dtype=dtype, device=device)
        kv = torch.zeros(1, 1, prefix_bucket + 2, dim, dtype=dtype, device=device)
        LaterChunk(q, torch.empty_like(q), prefix_bucket + 1, 1, bucket, prefix_bucket)(kv, kv)
    return len(shapes)
