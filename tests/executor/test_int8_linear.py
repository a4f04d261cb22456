"""INT8 W8A8 linears (``executor.int8_linear``) on the CPU: close to the bf16 product, the
outlier channels exact, and a quantized model served by the loop as it decodes alone."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.int8_linear import Int8Linear  # noqa: E402
from executor.quant import quantize_model  # noqa: E402


@pytest.mark.parametrize("outliers", [0.0, 0.125])
def test_int8_w8a8_is_close_to_the_full_precision_product(outliers):
    gen = torch.Generator().manual_seed(0)
    weight = torch.randn(48, 64, generator=gen)
    x = torch.randn(5, 64, generator=gen)
    linear = Int8Linear(weight, outliers)
    want = x @ weight.T
    error = (linear(x) - want).norm() / want.norm()
    assert error < 0.02, f"relative error {error:.4f}"
    assert torch.allclose(linear.dequantized_weight(), weight, atol=weight.abs().max() / 100)
    if outliers:  # 8 of the 64 input channels, the largest columns, kept exactly
        assert linear.outliers.numel() == 8 and linear.weight.shape == (48, 56)
        assert torch.equal(linear.dequantized_weight()[:, linear.outliers],
                           weight[:, linear.outliers])  # fmt: skip


def test_a_w8a8_model_in_the_serving_loop_decodes_as_it_does_alone():
    """Per-token activation scales: a token's result does not depend on its batch, so the
    ragged batches give the tokens of one sequence at a time."""
    from executor.engine import build_model
    from executor.serving_loop import ServingExecutor
    from tests.executor.test_serving_loop import TINY, Step, greedy

    model = build_model(TINY, device="cpu", dtype=torch.float32, fused_kernels=False, seed=1)
    quantize_model(model, weights="int8", activations="int8", outlier_fraction=0.125)
    assert sum(isinstance(m, Int8Linear) for m in model.modules()) == 2 * 4
    gen = torch.Generator().manual_seed(0)
    prompts = {0: torch.randint(97, (7,), generator=gen).tolist(),
               1: torch.randint(97, (4,), generator=gen).tolist()}  # fmt: skip
    executor = ServingExecutor(model, num_blocks=16, block_size=4, max_seq_length=64,
                               prompt_tokens=lambda rid, s, n: prompts[rid][s : s + n])  # fmt: skip
    sampled: dict[int, list[int]] = {0: [], 1: []}
    for decodes, chunks, done in (([], [(0, 0, 7), (1, 0, 4)], [0, 1]), ([0, 1], [], []),
                                  ([1, 0], [], [])):  # fmt: skip
        executor(Step(decode=decodes, prefill=chunks))
        for rid in decodes + done:
            sampled[rid].append(executor.last_token[rid])
    for rid, prompt in prompts.items():
        assert sampled[rid] == greedy(model, prompt, 3), rid
