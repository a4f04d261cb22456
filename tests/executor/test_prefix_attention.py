"""``executor.prefix_attention``: a later chunk's attention cut into a prefix and a square and
merged by log-sum-exps equals SDPA's bottom-right causal attention over all its keys."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch.nn.attention.bias import causal_lower_right

from executor.prefix_attention import LaterChunk, plan_shapes
from tests.executor.conftest import run_in_interpreter


def bottom_right(q, k, v):
    """What the chunk must equal: ``q [L, H, D]`` over ``k, v [1, kv_heads, P + L, D]``."""
    length, total = q.shape[0], k.shape[2]
    out = F.scaled_dot_product_attention(q.transpose(0, 1)[None], k, v, enable_gqa=True,
                                         attn_mask=causal_lower_right(length, total))  # fmt: skip
    return out[0].transpose(0, 1)


# (chunk L, start P, bucket, prefix bucket): a prefix part and a square with cached rows, a
# prefix that is exactly the bucket, no prefix part (P below the prefix bucket), a first
# chunk, every key in the prefix part (buckets of 1), padding on both sides.
CASES = [(5, 7, 4, 4), (16, 48, 8, 16), (33, 1, 8, 4), (7, 0, 4, 4), (9, 20, 1, 1),
         (12, 64, 16, 32), (3, 5, 8, 8)]  # fmt: skip


@pytest.mark.parametrize("length, start, bucket, prefix_bucket", CASES)
def test_a_later_chunk_equals_bottom_right_causal_attention(length, start, bucket, prefix_bucket):
    torch.manual_seed(0)
    heads, kv_heads, dim = 8, 2, 16
    q = torch.randn(length, heads, dim)
    k, v = torch.randn(2, 1, kv_heads, start + length, dim)
    out = torch.full((length, heads, dim), float("nan"))
    LaterChunk(q, out, start, kv_heads, bucket, prefix_bucket)(k, v)
    assert torch.allclose(out, bottom_right(q, k, v), atol=2e-6)


def test_the_same_chunk_runs_again_with_other_layers_keys():
    """Laid out once an iteration, called once a layer: the padding stays zero between calls."""
    torch.manual_seed(1)
    q, out = torch.randn(6, 4, 8), torch.empty(6, 4, 8)
    chunk = LaterChunk(q, out, 11, 2, 4, 8)
    for _ in range(2):
        k, v = torch.randn(2, 1, 2, 17, 8)
        q.normal_()  # the next layer's queries, in the same rows
        chunk(k, v)
        assert torch.allclose(out, bottom_right(q, k, v), atol=2e-6)


def test_plan_shapes_cover_every_chunk_and_start():
    """Every (L, P) a serving run can meet maps onto a listed shape: the warm-up builds them
    all, so no plan is built inside a timed iteration."""
    bucket, prefix_bucket, max_chunk, max_length, least = 4, 8, 10, 30, 3
    shapes = set(plan_shapes(max_chunk, max_length, bucket, prefix_bucket, least))
    assert (4, 4, True) in shapes and not any(queries < 4 for queries, _, _ in shapes)
    for length in range(least, max_chunk + 1):
        for start in range(0, max_length - length + 1):
            prefix = start - start % prefix_bucket
            side = start - prefix + length
            assert (side + -side % bucket,) * 2 + (True,) in shapes
            if prefix:
                assert (length + -length % bucket, prefix, False) in shapes
    assert len(plan_shapes(2048, 16384, 128)) == 144  # the summarization plans' warm-up


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU: cuDNN's kernel")
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
def test_on_a_gpu_cudnn_and_the_merge_kernel_equal_bottom_right_attention(dtype):
    """At an 8B's heads and the serving buckets: the log-sum-exps cuDNN returns merge as the
    CPU's do (float32 takes the memory-efficient kernel)."""
    torch.manual_seed(0)
    q = torch.randn(300, 32, 128, device="cuda", dtype=dtype)
    k, v = torch.randn(2, 1, 8, 2500 + 300, 128, device="cuda", dtype=dtype)
    out = torch.empty_like(q)
    LaterChunk(q, out, 2500, 8, 128)(k, v)  # a prefix of 2,048 keys, a square of 768
    want = bottom_right(q.float(), k.float(), v.float())
    assert ((out.float() - want).norm() / want.norm()).item() < 1e-2


MERGE = """
    import torch
    from executor import prefix_attention

    torch.manual_seed(0)
    # Two attentions of 5 queries (4 heads of 16) at strided views, as LaterChunk hands them
    o1, o2 = torch.randn(2, 1, 4, 9, 16).to(torch.bfloat16)
    lse1, lse2 = torch.randn(2, 1, 4, 9) * 3
    views = o1[:, :, :5], lse1[:, :, :5], o2[:, :, 3:8], lse2[:, :, 3:8]
    want = torch.empty(5, 4, 16)  # float32: the exact merge of the bf16 inputs
    got = torch.empty(6, 4, 32, dtype=torch.bfloat16)[:5, :, :16]  # rows of a wider buffer
    prefix_attention.merge(*views, want)  # PyTorch's path on a CPU
    prefix_attention.merge_in_kernel(*views, got)
    print(((got.float() - want) / want.abs()).abs().max().item())
"""


def test_the_merge_kernel_equals_pytorchs_merge_in_interpreter():
    # The kernel's bf16 output against the float32 merge: rounding only, to bf16's 8 significant
    # bits (the interpreter rounds toward zero: a relative error below 2^-7, not 2^-8)
    assert float(run_in_interpreter(MERGE)) < 2**-7
