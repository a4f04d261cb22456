"""GPU detection (name -> profile, refusal on mismatch) and the GPU-only checks."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.gpu import profile_for_name, require_profile  # noqa: E402
from simulator.errors import GpuError  # noqa: E402


@pytest.mark.parametrize(
    ("name", "profile"),
    [
        ("NVIDIA H100 80GB HBM3", "h100-sxm"),
        ("NVIDIA H200", "h200-sxm"),
        ("NVIDIA H100 PCIe", "h100-pcie"),
        ("NVIDIA H100 NVL", "h100-nvl"),
        ("NVIDIA A100-SXM4-80GB", "a100-sxm-80gb"),
        ("Tesla T4", "t4"),
        ("NVIDIA GeForce RTX 4090", None),
    ],
)
def test_profile_for_name(name, profile):
    assert profile_for_name(name) == profile


def test_refuses_calibration_for_another_gpu():
    with pytest.raises(GpuError, match="refusing to write a calibration for h100-sxm"):
        require_profile("h100-sxm", gpu_name="NVIDIA H200")
    assert require_profile("h200", gpu_name="NVIDIA H200") == "h200-sxm"


def test_unknown_gpu_gets_a_clear_message():
    with pytest.raises(GpuError, match="matches no hardware profile"):
        require_profile(gpu_name="NVIDIA GeForce RTX 4090")


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_graph_decode_matches_eager_on_gpu():
    from executor.engine import DecodeGraphs, build_model
    from tests.executor.conftest import tiny_spec

    spec = tiny_spec(
        hidden_size=256,
        num_attention_heads=4,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=512,
        vocab_size=512,
    )
    model = build_model(spec, device="cuda", dtype=torch.bfloat16, fused_kernels=False)
    tokens = torch.randint(0, spec.vocab_size, (2, 9), device="cuda")
    full = model(tokens)
    model.setup_caches(max_batch=2, max_seq_length=16)
    model(tokens[:, :8], torch.arange(8, device="cuda"))
    graphs = DecodeGraphs(model)
    graphs.capture(2, position=8, fixed_position=True)
    graphs.static_tokens[2].copy_(tokens[:, 8:])
    graphs.replay(2)
    torch.testing.assert_close(
        graphs.logits[2][:, 0].float(), full[:, 8].float(), rtol=2e-2, atol=2e-2
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_launches_bound_once_compute_what_launches_through_triton_do_on_gpu():
    """``executor.triton_launch``: the first launch of a specialization goes through Triton,
    the later ones straight to its launcher with fresh tensors; each gives the reference
    result, and a view off 16-byte alignment gets a specialization of its own."""
    import torch.nn.functional as F

    from executor import elementwise, triton_launch

    torch.manual_seed(0)
    weight = torch.randn(4096, device="cuda", dtype=torch.bfloat16)
    for _ in range(3):
        residual, delta = torch.randn(2, 5, 4096, device="cuda", dtype=torch.bfloat16)
        summed, normed = elementwise.add_rms_norm(residual, delta, weight, 1e-5)
        expected = (residual.float() + delta.float()).to(torch.bfloat16)
        torch.testing.assert_close(summed, expected)
        reference = F.rms_norm(expected.float(), (4096,), eps=1e-5) * weight.float()
        torch.testing.assert_close(normed.float(), reference, atol=3e-2, rtol=2e-2)
        gate_up = torch.randn(7, 2 * 1024, device="cuda", dtype=torch.bfloat16)
        gate, up = gate_up.float().chunk(2, dim=-1)
        torch.testing.assert_close(elementwise.silu_and_mul(gate_up).float(),
                                   F.silu(gate) * up, atol=3e-2, rtol=2e-2)  # fmt: skip
    keys = len(triton_launch._bound[elementwise._silu_and_mul_kernel])
    rows = torch.randn(7 * 2048 + 1, device="cuda", dtype=torch.bfloat16)[1:].view(7, 2048)
    gate, up = rows.float().chunk(2, dim=-1)
    torch.testing.assert_close(elementwise.silu_and_mul(rows).float(), F.silu(gate) * up,
                               atol=3e-2, rtol=2e-2)  # fmt: skip
    assert len(triton_launch._bound[elementwise._silu_and_mul_kernel]) == keys + 1


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("weights", ["bf16", "fp8"])
@pytest.mark.parametrize("batch", [1, 3])
@pytest.mark.parametrize("attention", ["sdpa", "triton"])
def test_fused_kernels_match_eager_on_gpu(weights, batch, attention):
    """The Triton kernels (RoPE + cache write, SwiGLU, add + RMSNorm, the gated GEMV at batch 1,
    and the one-kernel decode attention or SDPA) give the eager model's logits: a prefill, then
    a cached decode step. bf16 matches to rounding. FP8 rounds differently by construction (the batch-1 GEMV keeps bf16 activations
    where eager quantizes them; one bf16 ulp moves an FP8 rounding), so its error against bf16
    eager must stay that of eager FP8."""
    from executor.engine import build_model
    from executor.kernels import use_gemv
    from executor.quant import quantize_model
    from tests.executor.conftest import tiny_spec

    spec = tiny_spec(
        hidden_size=512,
        num_attention_heads=8,
        num_key_value_heads=2,
        head_dim=64,
        intermediate_size=1024,
        vocab_size=512,
    )
    tokens = torch.randint(0, spec.vocab_size, (batch, 9), device="cuda")

    def logits(fused: bool, quantized: bool) -> torch.Tensor:
        model = build_model(spec, device="cuda", dtype=torch.bfloat16, fused_kernels=fused)
        if quantized:
            quantize_model(model, weights="fp8")
        if fused:
            use_gemv(model)
            model.kernels.decode_attention_mode = attention
        model.setup_caches(max_batch=batch, max_seq_length=16)
        prefill = model(tokens[:, :8], torch.arange(8, device="cuda"))
        # kv_length: the captured-step path (one decode-attention kernel when fused).
        step = model(tokens[:, 8:], torch.tensor([8], device="cuda"), kv_length=9)
        return torch.cat([prefill, step], dim=1).float()

    reference = logits(fused=False, quantized=False)
    if weights == "bf16":
        torch.testing.assert_close(logits(True, False), reference, rtol=3e-2, atol=3e-2)
        return

    def error(out: torch.Tensor) -> float:
        return ((out - reference).norm() / reference.norm()).item()

    fused_error, eager_error = error(logits(True, True)), error(logits(False, True))
    assert fused_error < 1.25 * eager_error + 0.01, (
        f"fused FP8 {fused_error:.3f} vs eager FP8 {eager_error:.3f} (relative to bf16): "
        "the fused kernels add error beyond FP8's own"
    )


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_per_token_fp8_kernel_equals_pytorch_on_gpu():
    """The one-kernel dynamic per-token quantization gives quantize_fp8's values and scales
    exactly on random data (rounding to nearest even included); a quantized linear runs on it,
    and a few tokens through the per-tensor GEMM with the scales applied after it give the
    row-wise scaled GEMM's result."""
    from executor import fp8_kernels
    from executor.quant import Fp8Linear, quantize_fp8, quantize_model

    x = torch.randn(37, 14336, device="cuda").to(torch.bfloat16) * 3.0
    got, got_scale = fp8_kernels.quantize_rows(x)
    want, want_scale = quantize_fp8(x, granularity="rowwise")
    assert torch.equal(got.float(), want.float())
    torch.testing.assert_close(got_scale, want_scale, rtol=1e-6, atol=0)

    torch.manual_seed(0)
    weight = torch.randn(512, 14336, device="cuda").to(torch.bfloat16) / 120
    linear = torch.nn.Sequential(torch.nn.Linear(14336, 512, bias=False)).cuda().bfloat16()
    linear[0].weight.data.copy_(weight)
    eager = Fp8Linear(weight, granularity="rowwise", scaling="dynamic")
    quantize_model(linear, weights="fp8", granularity="rowwise", compile_quantize=True)
    assert isinstance(linear[0], Fp8Linear)
    torch.testing.assert_close(linear(x).float(), eager(x).float(), rtol=0, atol=0)
    # 37 rows take the few-token path (a per-tensor GEMM, then both scales): the row-wise
    # scaled GEMM's result to bf16 rounding.
    x_fp8, x_scale = quantize_fp8(x, granularity="rowwise")
    reference = torch._scaled_mm(
        x_fp8,
        eager.weight.t(),
        scale_a=x_scale,
        scale_b=eager.weight_scale,
        out_dtype=torch.bfloat16,
    )
    torch.testing.assert_close(eager(x), reference, rtol=1e-2, atol=1e-2)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kv_dtype", [torch.bfloat16, torch.float8_e4m3fn])
@pytest.mark.parametrize(("batch", "length"), [(1, 1025), (3, 1025), (64, 4096)])
def test_triton_decode_attention_matches_rope_cache_and_sdpa_on_gpu(kv_dtype, batch, length):
    """The one-kernel decode attention at Llama-3.1-8B's head shapes (GQA 32/8, D 128), bf16 and
    FP8 cache, split (batch 1 and 3) and not (batch 64), against the RoPE kernel and SDPA over
    the same cache; the new K/V it stores must match the RoPE kernel's."""
    import torch.nn.functional as F

    from executor import elementwise
    from executor.decode_attention import available, decode_attention
    from executor.kv_cache import KVCache
    from executor.rope import rope_frequencies
    from tests.executor.conftest import tiny_spec

    if not available():
        pytest.skip("Triton is not installed")
    heads, kv_heads, dim = 32, 8, 128
    caches = [KVCache(batch, kv_heads, length + 16, dim, kv_dtype, "cuda", scale=0.05)]
    # Unit-sized K/V once dequantized (an FP8 cache holds x / scale; bf16 holds x), so the
    # tolerance is against outputs of order one.
    stored = 1 / caches[0].scale if kv_dtype == torch.float8_e4m3fn else 1.0
    for buffer in (caches[0].k, caches[0].v):
        buffer.copy_(torch.randn(buffer.shape, device="cuda") * stored)
    caches.append(KVCache(batch, kv_heads, length + 16, dim, kv_dtype, "cuda", scale=0.05))
    caches[1].k.copy_(caches[0].k)
    caches[1].v.copy_(caches[0].v)
    position = torch.tensor([length - 1], device="cuda")
    angles = position.double().cpu()[:, None] * rope_frequencies(tiny_spec(head_dim=dim))
    angles = torch.cat([angles, angles], dim=-1)
    cos, sin = angles.cos().float().cuda(), angles.sin().float().cuda()
    qkv = torch.randn(batch, 1, heads + 2 * kv_heads, dim, device="cuda", dtype=torch.bfloat16)

    got = decode_attention(qkv.clone(), cos, sin, position, caches[0], length, heads)
    rotated = elementwise.rope_cache(qkv.clone(), cos, sin, heads, kv_heads, caches[1], position)
    q = rotated[:, :, :heads].transpose(1, 2)
    k_all, v_all = caches[1].read(batch, torch.bfloat16, length)
    want = F.scaled_dot_product_attention(q, k_all, v_all, enable_gqa=True)
    want = want.transpose(1, 2).reshape(batch, 1, heads * dim)
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    ulp = 0.13 if kv_dtype == torch.float8_e4m3fn else 1e-2  # x / s and x * (1 / s) may differ
    for mine, theirs in ((caches[0].k, caches[1].k), (caches[0].v, caches[1].v)):
        torch.testing.assert_close(mine.float(), theirs.float(), rtol=ulp, atol=1e-2)
    assert int(caches[0].split_counters.abs().sum()) == 0, "counters left for the next step"


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize(("kv_dtype", "fp8_as_f16"), [(torch.bfloat16, False),
                         (torch.float8_e4m3fn, False), (torch.float8_e4m3fn, True)])  # fmt: skip
@pytest.mark.parametrize("by_work", [False, True])
def test_paged_decode_attention_matches_sdpa_over_gathered_blocks_on_gpu(
    kv_dtype, fp8_as_f16, by_work, monkeypatch
):
    """The serving loop's decode attention, compiled for this GPU at Llama-3.1-8B's head shapes:
    sequences of mixed lengths (one key, a tile's edge, a block's, thousands) with their blocks
    scattered over the cache, against RoPE then SDPA over each sequence's gathered blocks. The
    new K/V are stored by the program whose chunk holds them and read back after a barrier:
    in the interpreter every program runs alone, so only a GPU tests that order (and only a
    GPU converts FP8 as the kernel will: the interpreter's FP8 is not the hardware's). An FP8
    cache's dots in bfloat16 or float16 (``decode_attention.FP8_AS_F16``)."""
    import torch.nn.functional as F

    from executor import decode_attention as attention
    from executor import decode_splits, fused
    from executor.decode_attention import available, decode_attention
    from executor.kv_cache import PagedKVCache

    monkeypatch.setattr(attention, "FP8_AS_F16", fp8_as_f16)
    monkeypatch.setattr(decode_splits, "BY_WORK", by_work)
    if not available():
        pytest.skip("Triton is not installed")
    heads, kv_heads, dim, page = 32, 8, 128, 16
    lengths = [1, 128, 129, 16, 17, 1000, 4099, 2300, 640, 33]
    used = [-(-n // page) for n in lengths]
    generator = torch.Generator(device="cuda").manual_seed(0)
    order = torch.randperm(sum(used) + 8, device="cuda", generator=generator).tolist()
    width = max(used)
    tables = torch.zeros(len(lengths), width, dtype=torch.long, device="cuda")
    for row, count in enumerate(used):
        first = sum(used[:row])
        tables[row, :count] = torch.tensor(order[first : first + count])

    def cache() -> PagedKVCache:
        made = PagedKVCache(sum(used) + 8, kv_heads, page, dim, kv_dtype, "cuda", scale=0.05)
        stored = 1 / made.scale if made.is_fp8 else 1.0  # unit-sized K/V once dequantized
        for buffer in (made.k, made.v):
            noise = torch.randn(buffer.shape, device="cuda", generator=generator.manual_seed(1))
            buffer.copy_(noise * stored)
        return made

    positions = torch.tensor([n - 1 for n in lengths], device="cuda")
    angles = torch.randn(len(lengths), dim // 2, device="cuda").repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    qkv = torch.randn(len(lengths), 1, heads + 2 * kv_heads, dim, device="cuda",
                      dtype=torch.bfloat16)  # fmt: skip
    mine = cache()
    got = decode_attention(qkv.clone(), cos, sin, positions, mine, max(lengths), heads,
                           block_table=tables)  # fmt: skip
    reference = cache()
    for i, n in enumerate(lengths):
        row = fused.rope_cache(qkv[i : i + 1].clone(), cos[i : i + 1], sin[i : i + 1], heads,
                               kv_heads)  # fmt: skip
        block, offset = tables[i, (n - 1) // page], (n - 1) % page
        reference.write(block[None], torch.tensor([offset], device="cuda"),
                        row[0, :, heads : heads + kv_heads], row[0, :, heads + kv_heads :])  # fmt: skip
        k, v = reference.gather(tables[i], n, torch.float32)
        q = row[0, :, :heads][None].transpose(1, 2).float()  # [1, heads, 1, D]
        want = F.scaled_dot_product_attention(q, k, v, enable_gqa=True).reshape(heads * dim)
        torch.testing.assert_close(got[i, 0].float(), want, rtol=2e-2, atol=2e-2,
                                   msg=lambda m, n=n: f"sequence of {n} keys: {m}")  # fmt: skip
    ulp = 0.13 if kv_dtype == torch.float8_e4m3fn else 1e-2  # x / s and x * (1 / s) may differ
    for name in ("k", "v"):
        ours, theirs = getattr(mine, name), getattr(reference, name)
        torch.testing.assert_close(ours.float(), theirs.float(), rtol=ulp, atol=1e-2)
    assert int(mine.split_counters.abs().sum()) == 0, "counters left for the next step"
