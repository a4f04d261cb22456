"""The Triton kernels against PyTorch references, in Triton's CPU interpreter (skipped where the
interpreter cannot run): the GEMV (bf16, FP8, and with SwiGLU fused in), RoPE with the KV-cache
write, SwiGLU, and the residual add with RMSNorm."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

import torch  # noqa: E402

from tests.executor.conftest import run_in_interpreter  # noqa: E402


def _interpret(script: str) -> list[float]:
    return [float(value) for value in run_in_interpreter(script).split()]


GEMV = """
    import torch, triton
    from executor import kernels

    def run(x, w, scale=None, gated=False):
        n, k = w.shape
        y = torch.empty(1, n, dtype=torch.bfloat16)
        per_row = scale is not None and scale.numel() > 1
        kernels._gemv_kernel.fn[(triton.cdiv(n, 8),)](
            x, w, y, scale if scale is not None else y, n, k, w.stride(0), y, y, 0,
            HAS_SCALE=scale is not None, SCALE_PER_ROW=per_row, GATED=gated, PUSH=False,
            RANK=0, WORLD=1, USE_PDL=False, BLOCK_N=8, BLOCK_K=256)
        return y

    torch.manual_seed(0)
    x = torch.randn(1, 640).to(torch.bfloat16)      # K not a multiple of BLOCK_K: masked tail
    w = torch.randn(44, 640).to(torch.bfloat16)     # N not a multiple of BLOCK_N
    ref = x.float() @ w.float().T
    rel = lambda y, ref: ((y.float() - ref).norm() / ref.norm()).item()
    rows = w.float().abs().amax(1) / 448
    w8 = (w.float() / rows[:, None]).to(torch.float8_e4m3fn)
    gate_up = torch.randn(1, 1280).to(torch.bfloat16)
    gate, up = gate_up.float().chunk(2, dim=-1)
    gated_ref = (torch.nn.functional.silu(gate) * up) @ w.float().T
    print(rel(run(x, w), ref), rel(run(x, w8, rows.contiguous()), ref),
          rel(run(gate_up, w, gated=True), gated_ref))
"""


def test_gemv_matches_matmul_in_interpreter():
    bf16_error, fp8_error, gated_error = _interpret(GEMV)
    assert bf16_error < 1e-2, "bf16 output rounding only: well under 1%"
    assert fp8_error < 0.06, "e4m3 weights: a few percent (see test_quant.FP8_TOLERANCE)"
    assert gated_error < 1e-2, "SwiGLU inside the GEMV: bf16 output rounding only"


ELEMENTWISE = """
    import torch
    from executor import elementwise, fused
    from executor.kv_cache import KVCache

    torch.manual_seed(0)
    B, T, HQ, HKV, D = 2, 5, 8, 2, 16
    qkv = torch.randn(B, T, HQ + 2 * HKV, D)
    cos, sin = torch.randn(T, D), torch.randn(T, D)
    cos, sin = torch.cat([cos[:, :D // 2]] * 2, -1), torch.cat([sin[:, :D // 2]] * 2, -1)
    pos = torch.tensor([3, 4, 5, 6, 7])

    def caches():
        return [KVCache(B, HKV, 12, D, torch.float32, "cpu") for _ in range(2)]

    mine, ref = caches()
    got, want = qkv.clone(), qkv.clone()
    elementwise.rope_cache(got, cos, sin, HQ, HKV, mine, pos)
    fused.rope_cache(want, cos, sin, HQ, HKV, ref, pos)
    no_cache = qkv.clone()
    elementwise.rope_cache(no_cache, cos, sin, HQ, HKV)
    print((got - want).abs().max().item(),
          max((mine.k - ref.k).abs().max().item(), (mine.v - ref.v).abs().max().item()),
          (no_cache - want).abs().max().item(),
          ref.k.abs().sum().item())

    gate_up = torch.randn(3, 4, 2 * 40)
    print((elementwise.silu_and_mul(gate_up) - fused.silu_and_mul(gate_up)).abs().max().item())

    residual, delta, weight = torch.randn(3, 4, 48), torch.randn(3, 4, 48), torch.rand(48)
    got = elementwise.add_rms_norm(residual, delta, weight, 1e-5)
    want = fused.add_rms_norm(residual, delta, weight, 1e-5)
    print(max((a - b).abs().max().item() for a, b in zip(got, want)))
"""


PAGED_ROPE = """
    import torch
    from executor import elementwise, fused
    from executor.kv_cache import PagedKVCache

    torch.manual_seed(0)
    T, HQ, HKV, D, BLOCKS, BS = 7, 8, 2, 16, 6, 4
    qkv = torch.randn(1, T, HQ + 2 * HKV, D)
    cos, sin = torch.randn(T, D // 2).repeat(1, 2), torch.randn(T, D // 2).repeat(1, 2)
    blocks = torch.tensor([5, 5, 5, 2, 2, 0, 3])  # a serving iteration's tokens, scattered
    offsets = torch.tensor([1, 2, 3, 0, 1, 3, 0])
    results = []
    for rope in (elementwise.rope_cache, fused.rope_cache):
        cache = PagedKVCache(BLOCKS, HKV, BS, D, torch.float32, "cpu")
        rotated = rope(qkv.clone(), cos, sin, HQ, HKV, cache, offsets, blocks=blocks)
        results.append((rotated, cache))
    (got, mine), (want, ref) = results
    plain = fused.rope_cache(qkv.clone(), cos, sin, HQ, HKV)  # rotated, stored by write
    ref_written = PagedKVCache(BLOCKS, HKV, BS, D, torch.float32, "cpu")
    ref_written.write(blocks, offsets, plain[0, :, HQ : HQ + HKV], plain[0, :, HQ + HKV :])
    print((got - want).abs().max().item(),
          max((mine.k - ref_written.k).abs().max().item(),
              (mine.v - ref_written.v).abs().max().item(),
              (ref.k - ref_written.k).abs().max().item()),
          ref_written.k.abs().sum().item())
"""


def test_rope_stores_a_serving_iterations_keys_in_their_blocks_in_interpreter():
    """A paged store in the rotation's own pass (``blocks``): each token's rotated K and its V
    land in its block and slot, as ``PagedKVCache.write`` puts them."""
    rope, store, filled = _interpret(PAGED_ROPE)
    assert rope < 1e-5 and filled > 0 and store < 1e-5


@pytest.mark.parametrize("cache_fp8", [False, True])
def test_the_rope_kernel_compiles_for_hopper_with_each_cache(cache_fp8):
    """No cache, a static cache or a paged one (the serving iteration's store), for sm_90."""
    from executor.elementwise import _rope_cache_kernel
    from tests.executor.conftest import compile_for_hopper

    cache = "*fp8e4nv" if cache_fp8 else "*bf16"
    types = {"qkv_ptr": "*bf16", "cos_ptr": "*bf16", "sin_ptr": "*bf16", "pos_ptr": "*i64",
             "blocks_ptr": "*i64", "k_cache_ptr": cache, "v_cache_ptr": cache,
             "cache_inv_scale": "fp32"}  # fmt: skip
    for has_cache, paged in ((False, False), (True, False), (True, True)):
        constants = {"HALF": 64, "BLOCK_H": 16, "HAS_CACHE": has_cache,
                     "CACHE_FP8": cache_fp8 and has_cache, "USE_PDL": True, "PAGED": paged}  # fmt: skip
        assert ".target sm_90" in compile_for_hopper(_rope_cache_kernel, types, constants)


def test_the_rope_kernel_compiles_once_for_any_split_of_an_iteration(monkeypatch):
    """A serving iteration's chunk tokens follow its decodes: their slots and blocks are views
    at any offset, their count any number. Launched as ``rope_cache`` launches it for several
    such splits, the kernel's specialization for sm_90 is the same each time (else each new
    one compiled inside a timed iteration, as on an H100: two ``_rope_cache_kernel`` compiles
    in the light load of ``studies/serving-validation/h100-by-work-2026-12-07/``)."""
    jit = pytest.importorskip("triton.runtime.jit")
    if not hasattr(jit, "create_function_from_signature"):
        pytest.skip("this Triton binds launch arguments another way")
    from triton.backends.compiler import GPUTarget
    from triton.backends.nvidia.compiler import CUDABackend

    from executor import elementwise
    from executor.kv_cache import PagedKVCache

    kernel = elementwise._rope_cache_kernel
    launches = []

    class Recorder:
        fn = staticmethod(kernel.fn)

        def __getitem__(self, grid):
            return lambda *args, **kwargs: launches.append((args, kwargs))

    monkeypatch.setattr(elementwise, "_rope_cache_kernel", Recorder())
    heads, kv_heads, tokens = 4, 2, 40
    qkv = torch.zeros(1, tokens, heads + 2 * kv_heads, 128, dtype=torch.bfloat16)
    cos = torch.zeros(tokens, 128)
    slots = torch.zeros(tokens, dtype=torch.int64)
    cache = PagedKVCache(8, kv_heads, 16, 128, torch.bfloat16, "cpu")
    for decodes, chunk in ((0, 32), (1, 32), (3, 7), (2, 1), (5, 16)):
        rows = slice(decodes, decodes + chunk)
        elementwise.rope_cache(qkv[:, rows], cos[rows], cos[rows], heads, kv_heads, cache,
                               slots[rows], blocks=slots[rows])  # fmt: skip
    bind = jit.create_function_from_signature(kernel.signature, kernel.params,
                                              CUDABackend(GPUTarget("cuda", 90, 32)))  # fmt: skip
    keys = set()
    for args, kwargs in launches:
        kwargs = {k: v for k, v in kwargs.items() if k in kernel.arg_names}  # no launch options
        keys.add(repr(bind(*args, **kwargs)[1]))
    assert len(launches) == 5 and len(keys) == 1, keys


def test_elementwise_kernels_match_eager_in_interpreter():
    rope, cache, no_cache, cache_filled, swiglu, add_norm = _interpret(ELEMENTWISE)
    assert rope < 1e-5, "q and k rotated (and v left) exactly as the eager rotate-half"
    assert cache_filled > 0 and cache < 1e-5, "K and V stored at input_pos, as KVCache.write"
    assert no_cache < 1e-5, "without a cache only the rotation happens"
    assert swiglu < 1e-5, "silu(gate) * up"
    assert add_norm < 1e-5, "residual + delta, and its RMSNorm"


QUANTIZE_ROWS = """
    import torch
    from executor import fp8_kernels
    from executor.quant import quantize_fp8

    # Rows of FP8-representable values times a power of two, each reaching 448 x its scale: the
    # scaled values are exact, so no rounding is involved. (The interpreter's float8 cast rounds
    # ties away from zero and can drop a carry into the exponent; the GPU's cvt.rn rounds to
    # nearest even, and tests/executor/test_gpu.py compares on random data there.)
    torch.manual_seed(0)
    codes = torch.randn(5, 2600).clamp(-400, 400).to(torch.float8_e4m3fn).float()
    codes[:, 2590] = 448.0  # the amax in the last, masked block
    scales = torch.tensor([2.0**-9, 2.0**3, 1.0, 1.0, 2.0**-2])[:, None]
    x = (codes * scales).to(torch.bfloat16)
    x[3] = 0.0  # an all-zero row: the floored scale, zeros out
    want, want_scale = quantize_fp8(x, granularity="rowwise")
    for max_block in (16384, 1024):  # the row in one read; block by block with a masked tail
        got, got_scale = fp8_kernels.quantize_rows(x, max_block=max_block)
        print((got.float() - want.float()).abs().max().item(),
              ((got_scale - want_scale).abs() / want_scale).max().item(),
              got.float()[3].abs().max().item(), float(got.dtype == torch.float8_e4m3fn),
              float(tuple(got_scale.shape) == (5, 1)))
"""


def test_per_token_fp8_quantization_matches_pytorch_in_interpreter():
    results = _interpret(QUANTIZE_ROWS)
    for one_read, block_by_block in zip(results[:5], results[5:], strict=True):
        assert one_read == block_by_block
    values, scales, zero_row, is_fp8, scale_shape = results[:5]
    assert values == 0.0, "the same FP8 values as quantize_fp8 (amax, scale, divide, cast)"
    assert scales < 1e-6, "one scale per row: amax / 448"
    assert zero_row == 0.0 and is_fp8 == 1.0 and scale_shape == 1.0


SCALE_ROWS_COLS = """
    import torch
    from executor import fp8_kernels

    torch.manual_seed(0)
    x = torch.randn(3, 1500) * 1000.0  # wider than one block, with a masked tail
    rows, cols = torch.rand(3, 1), torch.rand(1, 1500)
    got = fp8_kernels.scale_rows_cols(x, rows, cols, torch.bfloat16)
    want = x * (rows * cols)  # float32; the kernel multiplies the two scales first
    print(((got.float() - want).abs() / want.abs()).max().item(), float(got.dtype == torch.bfloat16))
"""


def test_row_and_column_scales_in_interpreter():
    # Within one bf16 step (2^-7 relative): the interpreter's cast truncates, a GPU rounds.
    error, is_bf16 = _interpret(SCALE_ROWS_COLS)
    assert error <= 2**-7 and is_bf16 == 1.0, "x * row_scale * col_scale, rounded once to bf16"
