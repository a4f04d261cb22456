"""The executor's Llama against itself and against the simulator's shapes."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.engine import DecodeGraphs, build_model  # noqa: E402
from executor.model import Llama  # noqa: E402
from executor.rope import rope_frequencies  # noqa: E402
from executor.weights import count_parameters  # noqa: E402
from simulator.data.models import get_model, parameter_counts  # noqa: E402
from tests.executor.conftest import tiny_spec  # noqa: E402


def test_cached_decode_equals_full_recompute(model):
    torch.manual_seed(1)
    batch, prompt, new = 3, 7, 5
    tokens = torch.randint(0, model.spec.vocab_size, (batch, prompt + new))
    full = model(tokens)  # [B, T, V], no cache: causal attention over everything
    model.setup_caches(max_batch=4, max_seq_length=prompt + new)
    logits = [model(tokens[:, :prompt], torch.arange(prompt))]
    for position in range(prompt, prompt + new):
        logits.append(model(tokens[:, position : position + 1], torch.tensor([position])))
    cached = torch.cat(logits, dim=1)
    torch.testing.assert_close(cached, full, rtol=1e-4, atol=1e-4)


def test_chunk_after_cached_prefix_equals_full(model):
    tokens = torch.randint(0, model.spec.vocab_size, (2, 12))
    full = model(tokens)
    model.setup_caches(max_batch=2, max_seq_length=12)
    model(tokens[:, :5], torch.arange(5))
    chunk = model(tokens[:, 5:], torch.arange(5, 12), attend_cache=True)
    torch.testing.assert_close(chunk, full[:, 5:], rtol=1e-4, atol=1e-4)


def test_decode_graph_wrapper_matches_model_on_cpu(model):
    tokens = torch.randint(0, model.spec.vocab_size, (2, 6))
    full = model(tokens)
    model.setup_caches(max_batch=2, max_seq_length=8)
    model(tokens[:, :5], torch.arange(5))
    graphs = DecodeGraphs(model)  # no CUDA: runs eagerly through the same static buffers
    next_tokens = graphs.step(tokens[:, 5], 5)
    assert torch.equal(next_tokens, full[:, 5].argmax(-1))


def test_gqa_equals_mha_with_repeated_kv():
    gqa_spec = tiny_spec()
    mha_spec = tiny_spec(num_key_value_heads=gqa_spec.num_attention_heads)
    gqa = build_model(gqa_spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    mha = build_model(mha_spec, device="cpu", dtype=torch.float32, fused_kernels=False)
    group = gqa_spec.num_attention_heads // gqa_spec.num_key_value_heads
    d, q_width, kv_width = gqa_spec.head_dim, gqa_spec.q_size, gqa_spec.kv_size
    with torch.no_grad():
        same_shape = {k: v for k, v in gqa.state_dict().items() if "wqkv" not in k}
        mha.load_state_dict(same_shape, strict=False)
        for src, dst in zip(gqa.layers, mha.layers, strict=True):
            q, k, v = src.attention.wqkv.weight.split([q_width, kv_width, kv_width])
            # Each KV head serves `group` consecutive query heads: repeat it that many times.
            k_rep = k.view(-1, d, k.shape[1]).repeat_interleave(group, 0).reshape(-1, k.shape[1])
            v_rep = v.view(-1, d, v.shape[1]).repeat_interleave(group, 0).reshape(-1, v.shape[1])
            dst.attention.wqkv.weight.copy_(torch.cat([q, k_rep, v_rep]))
    tokens = torch.randint(0, gqa_spec.vocab_size, (2, 9))
    torch.testing.assert_close(gqa(tokens), mha(tokens), rtol=1e-4, atol=1e-4)
    # And through the cached decode path.
    for m in (gqa, mha):
        m.setup_caches(max_batch=2, max_seq_length=16)
        m(tokens[:, :8], torch.arange(8))
    torch.testing.assert_close(
        gqa(tokens[:, 8:], torch.tensor([8])),
        mha(tokens[:, 8:], torch.tensor([8])),
        rtol=1e-4,
        atol=1e-4,
    )


@pytest.mark.parametrize("name", ["llama-3.2-1b", "llama-3.1-8b", "llama-3.1-70b"])
def test_parameter_count_equals_simulator(name):
    spec = get_model(name)
    with torch.device("meta"):
        model = Llama(spec)
    expected = parameter_counts(spec).total
    assert count_parameters(model) == expected, (
        f"{name}: executor has {count_parameters(model):,} parameters, simulator "
        f"parameter_counts(...).total says {expected:,}"
    )


def test_llama3_rope_scaling_keeps_high_and_divides_low_frequencies():
    spec = get_model("llama-3.1-8b")
    scaled = rope_frequencies(spec)
    plain = rope_frequencies(spec.model_copy(update={"rope_scaling": None}))
    assert torch.equal(scaled[:10], plain[:10])  # short wavelengths untouched
    torch.testing.assert_close(scaled[-1], plain[-1] / 8)  # longest wavelength divided by 8
    assert torch.all(scaled <= plain)


def test_hf_state_dict_round_trip(model, spec):
    from executor.weights import to_hf_state_dict

    hf = {k: v.clone() for k, v in to_hf_state_dict(model).items()}
    assert hf["model.layers.0.self_attn.k_proj.weight"].shape == (spec.kv_size, spec.hidden_size)
    other = build_model(spec, device="cpu", dtype=torch.float32, seed=5, fused_kernels=False)
    with torch.no_grad():
        for name, tensor in to_hf_state_dict(other).items():
            tensor.copy_(hf[name])
    tokens = torch.randint(0, spec.vocab_size, (1, 5))
    torch.testing.assert_close(other(tokens), model(tokens))


def test_decode_attention_mode_picks_the_kernel_by_cache_dtype():
    """Mode "auto" runs the one-kernel decode attention for an FP8 cache and SDPA for a bf16 one;
    "triton" and "sdpa" pick one for both; without the kernel, or for a head size it cannot
    take, it is SDPA."""
    from executor.fused import Kernels
    from executor.kv_cache import KVCache

    def kernel(*args):
        return None

    caches = {
        fp8: KVCache(1, 1, 16, 32, torch.float8_e4m3fn if fp8 else torch.bfloat16, "cpu")
        for fp8 in (False, True)
    }
    expected = {"auto": (None, kernel), "triton": (kernel, kernel), "sdpa": (None, None)}
    for mode, (for_bf16, for_fp8) in expected.items():
        kernels = Kernels(decode_attention=kernel, decode_attention_mode=mode)
        assert kernels.decode_kernel(caches[False]) is for_bf16, mode
        assert kernels.decode_kernel(caches[True]) is for_fp8, mode
        assert Kernels(decode_attention_mode=mode).decode_kernel(caches[True]) is None
    odd_heads = KVCache(1, 1, 16, 24, torch.float8_e4m3fn, "cpu")  # half of 24: not a power of 2
    assert (
        Kernels(decode_attention=kernel, decode_attention_mode="triton").decode_kernel(odd_heads)
        is None
    ), "a head size the kernel cannot take runs SDPA"


def test_naive_prefill_attention_materializes_the_same_answer():
    """``--attention naive`` runs a real unfused attention (scores written, masked, soft-maxed,
    read back), not the fused kernel under another name; it computes what the fused one does."""
    import torch

    from executor.fused import causal_attention

    torch.manual_seed(0)
    q = torch.randn(2, 8, 33, 16)
    k, v = torch.randn(2, 2, 33, 16), torch.randn(2, 2, 33, 16)
    fused = causal_attention(q, k, v, "flash")
    naive = causal_attention(q, k, v, "naive")
    torch.testing.assert_close(naive, fused, rtol=1e-4, atol=1e-5)
