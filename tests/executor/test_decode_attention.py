"""The Triton flash-decoding kernel against PyTorch's SDPA, in Triton's CPU interpreter: GQA,
a batch of two, a valid length that no chunk size divides, the query a strided view of the
fused projection as the model hands it over."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.executor.conftest import run_in_interpreter  # noqa: E402

SCRIPT = """
    import torch
    import torch.nn.functional as F
    from executor import decode_attention as attention
    from executor.model import KVCache

    torch.manual_seed(0)
    B, HQ, HKV, D, S_MAX, LENGTH = 2, 8, 2, 64, 320, 203
    qkv = torch.randn(B, 1, HQ + 2 * HKV, D)
    q = qkv.transpose(1, 2)[:, :HQ]  # [B, HQ, 1, D], strided like the model's
    cache = KVCache(B, HKV, S_MAX, D, torch.float32, "cpu")
    cache.k.normal_()
    cache.v.normal_()
    attention.MIN_KEYS_PER_SPLIT = 32  # several chunks, the last one short
    got = attention.decode_attention(q, cache, LENGTH)
    want = F.scaled_dot_product_attention(
        q, cache.k[:, :, :LENGTH], cache.v[:, :, :LENGTH], enable_gqa=True
    )
    splits = attention.split_count(B, HKV, LENGTH)
    print((got - want).abs().max().item(), want.abs().max().item(), splits)
"""


def test_decode_attention_matches_sdpa_in_interpreter():
    error, scale, splits = map(float, run_in_interpreter(SCRIPT).split())
    assert splits > 1, "the keys are split, so the merge is exercised"
    assert scale > 0.1 and error < 1e-4, f"max abs error {error:.2e} against SDPA"
