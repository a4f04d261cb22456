"""The one-kernel decode attention (RoPE, cache write, flash decoding) against the eager path
(``fused.rope_cache`` then SDPA over the valid cache), in Triton's CPU interpreter: GQA, a batch
of two, a valid length that no chunk size divides, several chunks merged by the last one to
finish, and a single chunk."""

from __future__ import annotations

import itertools

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

from tests.executor.conftest import run_in_interpreter  # noqa: E402

SCRIPT = """
    import torch
    import torch.nn.functional as F
    from executor import decode_attention as attention
    from executor import decode_splits
    from executor import fused
    from executor.kv_cache import KVCache

    torch.manual_seed(0)
    B, HQ, HKV, D, S_MAX, LENGTH = 2, 8, 2, 64, 320, 203
    angles = torch.randn(1, D // 2).repeat(1, 2)  # the halves share angles, as in the model
    cos, sin = angles.cos(), angles.sin()
    decode_splits.MIN_KEYS_PER_SPLIT = 32  # several chunks, the last one short

    def caches():
        mine = KVCache(B, HKV, S_MAX, D, torch.float32, "cpu")
        mine.k.normal_()
        mine.v.normal_()
        ref = KVCache(B, HKV, S_MAX, D, torch.float32, "cpu")
        ref.k.copy_(mine.k)
        ref.v.copy_(mine.v)
        return mine, ref

    for length in (LENGTH, 16):  # 16 keys: one chunk, written without the merge
        position = torch.tensor([length - 1])
        qkv = torch.randn(B, 1, HQ + 2 * HKV, D)
        mine, ref = caches()
        other = KVCache(B, HKV, S_MAX, D, torch.float32, "cpu")  # for another tile
        other.k.copy_(mine.k)
        other.v.copy_(mine.v)
        got = attention.decode_attention(qkv.clone(), cos, sin, position, mine, length, HQ)
        tiled = attention.decode_attention(qkv.clone(), cos, sin, position, other, length, HQ,
                                           block_s=16, num_warps=2, num_stages=2)  # the sweep's
        want_qkv = fused.rope_cache(qkv.clone(), cos, sin, HQ, HKV, ref, position)
        q = want_qkv[:, :, :HQ].transpose(1, 2)
        k_all, v_all = ref.read(B, q.dtype, length)
        want = F.scaled_dot_product_attention(q, k_all, v_all, enable_gqa=True)
        want = want.transpose(1, 2).reshape(B, 1, HQ * D)
        splits = -(-length // -(-length // decode_splits.split_count(B, HKV, length)))
        print(
            (got - want).abs().max().item(),
            want.abs().max().item(),
            (mine.k - ref.k).abs().max().item() + (mine.v - ref.v).abs().max().item(),
            mine.split_counters.abs().sum().item(),
            splits,
            (tiled - got).abs().max().item(),
        )
"""


def test_decode_attention_matches_rope_cache_and_sdpa_in_interpreter():
    lines = run_in_interpreter(SCRIPT).strip().splitlines()
    split_counts = []
    for line in lines:
        error, scale, cache_error, counters, splits, tiled = map(float, line.split())
        assert scale > 0.1 and error < 1e-4, f"max abs error {error:.2e} against SDPA"
        assert tiled < 1e-4, "another tile computes the same attention"
        assert cache_error < 1e-5, "the new K and V are stored rotated, as rope_cache stores them"
        assert counters == 0, "the merging program leaves the counters at zero for the next step"
        split_counts.append(splits)
    assert split_counts[0] > 1 and split_counts[1] == 1, "both the merge and one chunk run"


PAGED = """
    import torch
    import torch.nn.functional as F
    from executor import decode_attention as attention
    from executor import decode_splits
    from executor import fused
    from executor.kv_cache import PagedKVCache

    torch.manual_seed(0)
    HQ, HKV, D, BS, BLOCKS = 8, 2, 64, 4, 48
    decode_splits.MIN_KEYS_PER_SPLIT = 16  # several chunks, some past a short sequence's end
    lengths = [5, 23, 40]  # each sequence's keys, its new token last
    order = torch.randperm(BLOCKS).tolist()  # blocks scattered over the cache
    tables, taken = [], 0
    for n in lengths:
        count = -(-n // BS)
        tables.append(order[taken : taken + count] + [0] * (10 - count))
        taken += count
    tables = torch.tensor(tables)
    positions = torch.tensor([n - 1 for n in lengths])
    angles = torch.randn(3, D // 2).repeat(1, 2)
    cos, sin = angles.cos(), angles.sin()
    qkv = torch.randn(3, 1, HQ + 2 * HKV, D)

    def cache():
        c = PagedKVCache(BLOCKS, HKV, BS, D, torch.float32, "cpu")
        torch.manual_seed(1)
        c.k.normal_()
        c.v.normal_()
        return c

    mine = cache()
    got = attention.decode_attention(qkv.clone(), cos, sin, positions, mine, max(lengths), HQ,
                                     block_table=tables)
    ref = cache()
    worst = 0.0
    for i, n in enumerate(lengths):
        row = fused.rope_cache(qkv[i : i + 1].clone(), cos[i : i + 1], sin[i : i + 1], HQ, HKV)
        block, offset = tables[i, (n - 1) // BS], (n - 1) % BS
        ref.write(block[None], torch.tensor([offset]), row[0, :, HQ : HQ + HKV],
                  row[0, :, HQ + HKV :])
        k, v = ref.gather(tables[i], n, torch.float32)
        q = row[0, :, :HQ][None].transpose(1, 2)  # [1, HQ, 1, D]
        want = F.scaled_dot_product_attention(q, k, v, enable_gqa=True).reshape(HQ * D)
        worst = max(worst, (got[i, 0] - want).abs().max().item())
    print(worst, (mine.k - ref.k).abs().max().item(), mine.split_counters.abs().sum().item())
"""


@pytest.mark.parametrize(("by_work", "round_down"), [(False, False), (True, False), (True, True)])
def test_decode_attention_over_paged_blocks_in_interpreter(by_work, round_down):
    """Sequences of different lengths, their blocks scattered: each attends over its own keys
    through its block table, the new K and V land in its block, and no counter is left set,
    whether each sequence's keys spread over all of the grid's chunks or over its share of the
    launch's keys (the longest over several, the shortest in one), its chunks rounded up or
    down."""
    script = PAGED.replace(
        "decode_splits.MIN_KEYS",
        f"decode_splits.BY_WORK = {by_work}\n    decode_splits.ROUND_DOWN = {round_down}\n    "
        # By work, chunks of 34 keys, or of 17 rounded down (the longest, 40 keys, takes two)
        + (f"decode_splits.TARGET_PROGRAMS = {8 if round_down else 4}\n    " if by_work else "")
        + "decode_splits.MIN_KEYS",
    )
    error, cache_error, counters = map(float, run_in_interpreter(script).split())
    assert error < 1e-4, f"max abs error {error:.2e} against SDPA over the gathered blocks"
    assert cache_error < 1e-5 and counters == 0


def test_a_decode_rotated_and_stored_before_the_kernel_in_interpreter():
    """One new token whose q is rotated and K/V stored before the kernel (as the piecewise
    graphs' pieces do; ``rotated=True``): the kernel reads it from the cache, and the outputs
    and the cache are those of the kernel that rotates and stores it itself."""
    script = PAGED.replace(
        """    got = attention.decode_attention(qkv.clone(), cos, sin, positions, mine, max(lengths), HQ,
                                     block_table=tables)""",
        """    rows = qkv.clone()
    blocks = tables[torch.arange(3), positions // BS]
    fused.rope_cache(rows.view(1, 3, HQ + 2 * HKV, D), cos, sin, HQ, HKV, mine,
                     positions % BS, blocks)
    got = attention.decode_attention(rows, None, None, positions, mine, max(lengths), HQ,
                                     block_table=tables, rotated=True)""",
    )
    assert "rotated=True" in script
    error, cache_error, counters = map(float, run_in_interpreter(script).split())
    assert error < 1e-4, f"max abs error {error:.2e} against SDPA over the gathered blocks"
    assert cache_error < 1e-5 and counters == 0


VERIFY = """
    import torch
    import torch.nn.functional as F
    from executor import decode_attention as attention
    from executor import decode_splits
    from executor.kv_cache import PagedKVCache

    torch.manual_seed(0)
    HQ, HKV, D, BS, BLOCKS, Q = 8, 2, 64, 4, 48, 3
    decode_splits.MIN_KEYS_PER_SPLIT = 8  # chunks of 8 keys: the second sequence's first new
    lengths = [5, 18, 40]  # token (15) sees none of the chunk from 16, its last does
    order = torch.randperm(BLOCKS).tolist()
    tables, taken = [], 0
    for n in lengths:
        count = -(-n // BS)
        tables.append(order[taken : taken + count] + [0] * (10 - count))
        taken += count
    tables = torch.tensor(tables)
    first = torch.tensor([n - Q for n in lengths])
    cache = PagedKVCache(BLOCKS, HKV, BS, D, torch.float32, "cpu")
    cache.k.normal_()
    cache.v.normal_()
    qkv = torch.randn(3, Q, HQ + 2 * HKV, D)  # q as if rotated; the new K/V already stored
    got = attention.decode_attention(qkv, None, None, first, cache, max(lengths), HQ,
                                     block_table=tables)
    worst = 0.0
    for i, n in enumerate(lengths):
        k, v = cache.gather(tables[i], n, torch.float32)  # [1, HKV, n, D]
        q = qkv[i, :, :HQ].transpose(0, 1)[None]  # [1, HQ, Q, D]
        visible = torch.arange(n)[None, :] <= (n - Q + torch.arange(Q))[:, None]
        want = F.scaled_dot_product_attention(q, k, v, attn_mask=visible, enable_gqa=True)
        want = want[0].transpose(0, 1).reshape(Q, HQ * D)
        worst = max(worst, (got[i] - want).abs().max().item())
    finite = bool(torch.isfinite(got).all())  # a row that sees no key of a chunk adds nothing
    print(worst if finite else "nan", tuple(got.shape) == (3, Q, HQ * D),
          cache.split_counters.abs().sum().item())
"""


@pytest.mark.parametrize("by_work", [False, True])
def test_a_speculative_verify_attends_causally_over_its_blocks_in_interpreter(by_work):
    """Three new tokens per sequence (a verify of two drafts): each sees the cache up to its own
    position, through the block table, in the decode kernel's tile."""
    script = VERIFY.replace(
        "decode_splits.MIN_KEYS",
        f"decode_splits.BY_WORK = {by_work}\n    decode_splits.MIN_KEYS",
    )
    error, shape, counters = run_in_interpreter(script).split()
    assert float(error) < 1e-4, f"max abs error {float(error):.2e} against masked SDPA"
    assert shape == "True" and float(counters) == 0


@pytest.mark.parametrize("by_work", [False, True])
@pytest.mark.parametrize("kv_heads", [1, 2, 8])
@pytest.mark.parametrize("max_length", [1, 63, 64, 65, 1000, 4096, 8193, 131072])
def test_the_warm_up_lengths_meet_every_split_width_a_serving_run_can(
    kv_heads, max_length, by_work, monkeypatch
):
    """``BLOCK_SPLITS`` is a compile-time width: every value any batch and length up to the
    cache's longest can need is met by one of ``split_lengths``' one-sequence calls (a width
    first met mid-run would compile inside the timing), and there are only a few of them."""
    import random

    from executor import decode_splits
    from executor.decode_splits import split_lengths, split_width

    monkeypatch.setattr(decode_splits, "BY_WORK", by_work)

    def width(batch: int, length: int) -> int:  # what a launch compiles for
        return split_width(batch, kv_heads, length)

    lengths = split_lengths(kv_heads, max_length)
    assert all(1 <= length <= max_length for length in lengths)
    met = {width(1, length) for length in lengths}
    assert len(met) == len(lengths) <= max_length.bit_length() + 1
    rng = random.Random(max_length)
    probes = {max_length, 1} | {rng.randint(1, max_length) for _ in range(300)}
    probes |= {
        p + d for p in (2**k for k in range(18)) for d in (-1, 0, 1) if 1 <= p + d <= max_length
    }
    for length in probes:
        for batch in (1, 2, 3, 5, 16, 33, 100, 256, 600):
            assert width(batch, length) in met, (batch, length)


def kernel_types(cache_fp8: bool) -> dict[str, str]:
    """The decode kernel's pointer and float arguments as a serving launch types them."""
    cache = "*fp8e4nv" if cache_fp8 else "*bf16"
    return {"qkv_ptr": "*bf16", "cos_ptr": "*fp32", "sin_ptr": "*fp32", "pos_ptr": "*i64",
            "table_ptr": "*i64", "k_ptr": cache, "v_ptr": cache, "partial_ptr": "*fp32",
            "lse_ptr": "*fp32", "counters_ptr": "*i32", "out_ptr": "*bf16",
            "sm_scale": "fp32", "cache_scale": "fp32"}  # fmt: skip


@pytest.mark.parametrize("cache_fp8", [False, True])
def test_every_variant_of_the_decode_kernel_compiles_for_hopper(cache_fp8):
    """Triton's interpreter runs a kernel without compiling it, so a kernel that only a real
    compile refuses (a loop-carried value that changes type, say) passes every test above. This
    compiles each variant a serving run launches (bf16 or FP8 cache, its dots in either dtype,
    each chunk rule, a decode or a 3-token verify) for sm_90 on the CPU."""
    from executor.decode_attention import _decode_kernel
    from tests.executor.conftest import compile_for_hopper

    types = kernel_types(cache_fp8)
    rules = ((False, False), (True, False), (True, True))  # (by work, rounded down)
    dots = (False, True) if cache_fp8 else (False,)  # an FP8 cache's dots in float16 or not
    for (by_work, round_down), query, as_f16 in itertools.product(rules, (1, 3), dots):
        constants = {"HALF": 64, "BLOCK_G": 16, "BLOCK_S": 64, "BLOCK_SPLITS": 4,
                     "GROUP": 4, "CACHE_FP8": cache_fp8,
                     "USE_PDL": True, "QUERY": query, "FUSED": query == 1,
                     "BY_WORK": by_work, "ROUND_DOWN": round_down,
                     "FP8_AS_F16": as_f16}  # fmt: skip
        ptx = compile_for_hopper(_decode_kernel, types, constants)
        assert ".target sm_90" in ptx, (by_work, round_down, query, as_f16)


def aligned_arguments(types: dict[str, str]) -> tuple[str, ...]:
    """What a serving launch finds divisible by 16: every pointer, the cache's strides and its
    block size (16 tokens), the fused projection's row stride."""
    return (*(name for name in types if name.endswith("_ptr")), "stride_kb", "stride_kh",
            "stride_ks", "page", "stride_qkv_b")  # fmt: skip


@pytest.mark.parametrize("cache_fp8", [False, True])
def test_the_loop_keeps_several_tiles_in_flight_straight_to_the_dots(cache_fp8):
    """Compiled for sm_90, the loop's software pipeline holds ``stages - 1`` shared-memory
    buffers of each K/V tile (how many tiles are in flight: one, whatever the stages, when a
    step's block numbers were loaded in the step that used them), and the tiles go from those
    buffers to the dots: the loop allocates shared memory once, for the softmax's P operand
    (five times when the new K/V were substituted into each loaded tile from registers)."""
    import re

    from executor.decode_attention import BLOCK_S, _decode_kernel
    from executor.decode_splits import ROUND_DOWN
    from tests.executor.conftest import compile_for_hopper

    types = kernel_types(cache_fp8)
    element = "f8E4M3FN" if cache_fp8 else "bf16"
    aligned = aligned_arguments(types)
    # The tile a launch uses (``BLOCK_S`` keys a step).
    constants = {"HALF": 64, "BLOCK_G": 16, "BLOCK_S": BLOCK_S, "BLOCK_SPLITS": 4, "GROUP": 4,
                 "CACHE_FP8": cache_fp8, "USE_PDL": True, "QUERY": 1, "FUSED": True,
                 "BY_WORK": True, "ROUND_DOWN": ROUND_DOWN}  # fmt: skip
    for stages in (2, 3, 4):
        ir = compile_for_hopper(_decode_kernel, types, constants, asm="ttgir",
                                num_stages=stages, divisible=aligned)  # fmt: skip
        buffers = set(re.findall(rf"memdesc<(\d+)x{BLOCK_S}x64x{element}", ir))
        assert buffers == {str(stages - 1)}, (stages, buffers)
        loop = ir[ir.index("scf.for", ir.index("async_copy_global_to_local")) :]
        loop = loop[: loop.index("scf.yield")]
        assert loop.count("ttg.local_alloc") == 1, loop.count("ttg.local_alloc")


# Shared memory per SM on Hopper (H100 and H200: 228 KiB, of which 1 KiB per resident block is
# reserved by the hardware; CUDA C++ Programming Guide, "Compute Capability 9.0").
HOPPER_SHARED_PER_SM = 228 * 1024


@pytest.mark.parametrize("cache_fp8", [False, True])
def test_the_default_launch_leaves_room_for_three_programs_an_sm(cache_fp8):
    """With three pipeline stages the 128-key tile took 136 KiB of shared memory (bf16 cache),
    so an SM held one program, and a launch of more programs than SMs ran in two waves: the
    default tile keeps three programs on an SM (``decode_attention.NUM_STAGES``)."""
    from executor import decode_attention, decode_splits
    from tests.executor.conftest import compile_for_hopper

    constants = {"HALF": 64, "BLOCK_G": 16, "BLOCK_S": decode_attention.BLOCK_S,
                 "BLOCK_SPLITS": 32, "GROUP": 4, "CACHE_FP8": cache_fp8, "USE_PDL": True,
                 "QUERY": 1, "FUSED": True, "BY_WORK": decode_splits.BY_WORK,
                 "ROUND_DOWN": decode_splits.ROUND_DOWN}  # fmt: skip
    types = kernel_types(cache_fp8)
    shared = compile_for_hopper(decode_attention._decode_kernel, types, constants, asm="shared",
                                num_stages=decode_attention.NUM_STAGES,
                                divisible=aligned_arguments(types))  # fmt: skip
    assert 3 * (shared + 1024) <= HOPPER_SHARED_PER_SM, f"{shared / 1024:.0f} KiB a program"


def test_an_fp8_cache_in_float16_dots_is_widened_once_an_element_pair():
    """Compiled for sm_90, an FP8 cache's K/V tiles widen to float16 in one instruction per
    element pair (``cvt.rn.f16x2.e4m3x2``); for bfloat16 dots every element then takes one
    more (``cvt.bf16.f16``), which ``decode_attention.FP8_AS_F16`` leaves out."""
    from executor import decode_attention
    from tests.executor.conftest import compile_for_hopper

    types = kernel_types(cache_fp8=True)
    counts = {}
    for as_f16 in (False, True):
        constants = {"HALF": 64, "BLOCK_G": 16, "BLOCK_S": decode_attention.BLOCK_S,
                     "BLOCK_SPLITS": 32, "GROUP": 4, "CACHE_FP8": True, "USE_PDL": True,
                     "QUERY": 1, "FUSED": True, "BY_WORK": True, "ROUND_DOWN": True,
                     "FP8_AS_F16": as_f16}  # fmt: skip
        ptx = compile_for_hopper(decode_attention._decode_kernel, types, constants,
                                 num_stages=decode_attention.NUM_STAGES,
                                 divisible=aligned_arguments(types))  # fmt: skip
        counts[as_f16] = (ptx.count("cvt.rn.f16x2.e4m3x2"), ptx.count("cvt.bf16.f16"))
    pairs = decode_attention.BLOCK_S * 64 * 4 // (2 * 32 * decode_attention.NUM_WARPS)
    assert counts[True] == (pairs, 0) and counts[False] == (pairs, 2 * pairs), counts


def test_a_verify_merges_its_chunks_without_spilling_registers():
    """A speculative verify's three tokens of four query heads, split 32 ways (one sequence):
    merged all at once their chunks took 255 registers and spilled 1,448 bytes a thread, and
    a verify's attention ran 29 us a layer on an H100 against 8.5 for one token
    (``studies/serving-validation/h100-prefix-2026-12-08/``); a token at a time, none spill."""
    from executor import decode_attention
    from tests.executor.conftest import compile_for_hopper, ptxas_usage

    types = kernel_types(cache_fp8=False)
    for query in (1, 3):  # an 8B's heads, one sequence of up to 8,192 keys: 32 chunks
        constants = {**decode_attention.kernel_constants(1, query, 32, 8, 128, 8192,
                                                         cache_fp8=False, fused=query == 1),
                     "USE_PDL": True}  # as prepare launches it on Hopper  # fmt: skip
        assert constants["BLOCK_SPLITS"] == 32
        ptx = compile_for_hopper(decode_attention._decode_kernel, types, constants,
                                 num_stages=decode_attention.NUM_STAGES,
                                 divisible=aligned_arguments(types))  # fmt: skip
        registers, spilled = ptxas_usage(ptx)
        assert spilled == 0 and registers < 255, (query, registers, spilled)
