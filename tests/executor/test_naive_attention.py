"""``executor.naive_attention``: causal attention with the scores materialized, as the cost
model's ``attention: naive`` prices it (four passes over the score matrix)."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from executor.naive_attention import causal_softmax_, naive_causal_attention
from tests.executor.conftest import run_in_interpreter


@pytest.mark.parametrize("heads, kv_heads, length", [(8, 2, 37), (4, 4, 16), (6, 1, 1)])
def test_naive_attention_equals_sdpa(heads, kv_heads, length):
    torch.manual_seed(0)
    q = torch.randn(2, heads, length, 32)
    k, v = torch.randn(2, 2, kv_heads, length, 32).unbind(0)
    expected = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)
    assert torch.allclose(naive_causal_attention(q, k, v), expected, atol=1e-5)


def test_a_chunk_over_cached_keys_sees_the_keys_up_to_its_own_position():
    scores = torch.zeros(1, 3, 5)  # 3 new queries after 2 cached keys: 3, 4 and 5 visible
    causal_softmax_(scores)
    assert torch.allclose(scores[0].sum(-1), torch.ones(3))
    assert scores[0, 0].tolist() == pytest.approx([1 / 3] * 3 + [0, 0])
    assert scores[0, 2].tolist() == pytest.approx([0.2] * 5)


SOFTMAX = """
    import torch, triton
    from executor import naive_attention

    torch.manual_seed(0)
    errors = []
    for queries, keys in ((37, 37), (5, 21), (1, 9)):
        scores = torch.randn(2, 3, queries, keys).to(torch.bfloat16)
        expected = naive_attention.causal_softmax_(scores.float().clone())  # PyTorch's path
        naive_attention._causal_softmax_kernel[(2 * 3 * queries,)](
            scores, queries, keys, BLOCK=triton.next_power_of_2(keys))
        errors.append((scores.float() - expected).abs().max().item())
        past = torch.ones(queries, keys, dtype=torch.bool).triu(keys - queries + 1)
        errors.append(scores[:, :, past].float().abs().max().item() if past.any() else 0.0)
    print(*errors)
"""


def test_the_softmax_kernel_masks_and_normalizes_in_place_in_interpreter():
    errors = [float(x) for x in run_in_interpreter(SOFTMAX).split()]
    assert max(errors[0::2]) < 8e-3, "bf16 probabilities: rounding only"
    assert max(errors[1::2]) == 0.0, "zeros past each row's last visible key"
