"""Triton kernels around an FP8 GEMM with per-token activation scales (``executor.quant``).

- ``quantize_rows``: dynamic per-token FP8 quantization of a GEMM's input, one row per program:
  the row's amax, its scale and the FP8 row in one kernel. Compiled PyTorch takes a reduction
  kernel and a scaling kernel for it.
- ``scale_rows_cols``: ``out[m, n] * row_scale[m] * col_scale[n]`` into the model's dtype, the
  epilogue of a few-token FP8 GEMM with per-token and per-channel scales.
- ``few_rows_gemm`` (an experiment, off unless ``ROOFTUNE_FP8_FEW_ROWS=1``): the whole
  few-token row-wise FP8 GEMM in one kernel. Each program holds every row (up to 128) and
  ``BLOCK_N`` output channels, and streams those channels' weights once, both scales applied
  before the store. cuBLAS's row-wise FP8 GEMM at 64-128 rows took 105-124 us for Llama-3.1-8B's
  four linears of a layer, against some 71 us of weight bytes
  (``studies/serving-validation/h100-by-work-2026-12-07/2-fp8/fp8-gemm.log``). Whether this
  does better is for ``studies/serving-validation/fp8_gemm_sweep.py`` to say on a GPU.

Both launch with programmatic dependent launch where the GPU has it (``executor.pdl``);
``available()`` says whether they can run here. Tests run them in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch

from executor import pdl
from executor.triton_launch import launch
from executor.tritonlib import available, tl, triton

__all__ = ["available", "quantize_rows", "scale_rows_cols", "few_rows_gemm", "FEW_ROWS_MAX"]

FEW_ROWS_MAX = 128  # the rows one program of few_rows_gemm holds


if triton is not None:
    FP8_MAX = tl.constexpr(448.0)  # the largest finite float8_e4m3fn

    @triton.jit
    def _quantize_rows_kernel(
        x_ptr,
        out_ptr,
        scale_ptr,
        width,
        stride_x,
        stride_out,
        BLOCK: tl.constexpr,
        ONE_PASS: tl.constexpr,
        USE_PDL: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        # 64-bit: a prefill's [M, K] passes 2^31 elements (131,072 tokens x 28,672 gate_up).
        row = tl.program_id(0).to(tl.int64)
        cols = tl.arange(0, BLOCK)
        x_row, out_row = x_ptr + row * stride_x, out_ptr + row * stride_out
        if ONE_PASS:  # the whole row in registers: one read
            ok = cols < width
            x = tl.load(x_row + cols, mask=ok, other=0.0).to(tl.float32)
            # As quantize_fp8 computes it: amax floored at 1e-12, over the largest FP8 value.
            scale = tl.maximum(tl.max(tl.abs(x), axis=0), 1e-12) / FP8_MAX
            y = tl.clamp(x / scale, -FP8_MAX, FP8_MAX)
            tl.store(out_row + cols, y.to(out_ptr.dtype.element_ty), mask=ok)
        else:  # a wider row: its amax block by block, then a second read to scale it
            amax = tl.zeros([BLOCK], dtype=tl.float32)
            for start in range(0, width, BLOCK):
                ok = start + cols < width
                x = tl.load(x_row + start + cols, mask=ok, other=0.0)
                amax = tl.maximum(amax, tl.abs(x.to(tl.float32)))
            scale = tl.maximum(tl.max(amax, axis=0), 1e-12) / FP8_MAX
            for start in range(0, width, BLOCK):
                ok = start + cols < width
                x = tl.load(x_row + start + cols, mask=ok, other=0.0)
                y = tl.clamp(x.to(tl.float32) / scale, -FP8_MAX, FP8_MAX)
                tl.store(out_row + start + cols, y.to(out_ptr.dtype.element_ty), mask=ok)
        tl.store(scale_ptr + row, scale)

    @triton.jit
    def _scale_rows_cols_kernel(
        x_ptr,
        row_scale_ptr,
        col_scale_ptr,
        out_ptr,
        width,
        BLOCK: tl.constexpr,
        USE_PDL: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        row = tl.program_id(0).to(tl.int64)
        cols = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
        ok = cols < width
        x = tl.load(x_ptr + row * width + cols, mask=ok, other=0.0)
        scale = tl.load(row_scale_ptr + row) * tl.load(col_scale_ptr + cols, mask=ok, other=0.0)
        y = x * scale
        tl.store(out_ptr + row * width + cols, y.to(out_ptr.dtype.element_ty), mask=ok)


if triton is not None:

    @triton.jit
    def _few_rows_gemm_kernel(
        x_ptr,
        w_ptr,
        x_scale_ptr,
        w_scale_ptr,
        out_ptr,
        rows,
        n,
        k,
        stride_x,
        stride_w,
        stride_out,
        BLOCK_M: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
        USE_PDL: tl.constexpr,
    ):
        pdl.start(USE_PDL)
        rm = tl.arange(0, BLOCK_M)
        rn = tl.program_id(0) * BLOCK_N + tl.arange(0, BLOCK_N)
        rk = tl.arange(0, BLOCK_K)
        x_rows, w_rows = (
            x_ptr + rm[:, None] * stride_x,
            w_ptr + rn[:, None].to(tl.int64) * stride_w,
        )
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for start in range(0, k, BLOCK_K):
            kk = start + rk
            a = tl.load(x_rows + kk[None, :], mask=(rm[:, None] < rows) & (kk[None, :] < k),
                        other=0.0)  # fmt: skip
            b = tl.load(w_rows + kk[None, :], mask=(rn[:, None] < n) & (kk[None, :] < k),
                        other=0.0)  # fmt: skip
            acc += tl.dot(a, tl.trans(b))
        x_scale = tl.load(x_scale_ptr + rm, mask=rm < rows, other=0.0)
        w_scale = tl.load(w_scale_ptr + rn, mask=rn < n, other=0.0)
        out = acc * x_scale[:, None] * w_scale[None, :]
        tl.store(out_ptr + rm[:, None] * stride_out + rn[None, :],
                 out.to(out_ptr.dtype.element_ty), mask=(rm[:, None] < rows) & (rn[None, :] < n))  # fmt: skip


def few_rows_gemm(x_fp8: torch.Tensor, x_scale: torch.Tensor, w_fp8: torch.Tensor,
                  w_scale: torch.Tensor, dtype: torch.dtype, *, block_n: int = 32,
                  block_k: int = 128) -> torch.Tensor:  # fmt: skip
    """``(x_fp8 @ w_fp8^T) * x_scale * w_scale`` in ``dtype``: ``x_fp8 [M, K]`` with ``M`` up
    to ``FEW_ROWS_MAX``, ``x_scale [M, 1]``, ``w_fp8 [N, K]``, ``w_scale [1, N]`` (float32)."""
    rows, k = x_fp8.shape
    n = w_fp8.shape[0]
    assert rows <= FEW_ROWS_MAX and x_fp8.stride(1) == 1 and w_fp8.stride(1) == 1
    out = torch.empty(rows, n, dtype=dtype, device=x_fp8.device)
    launch(_few_rows_gemm_kernel, (triton.cdiv(n, block_n),), x_fp8, w_fp8,
           x_scale.contiguous(), w_scale.contiguous(), out, rows, n, k, x_fp8.stride(0),
           w_fp8.stride(0), out.stride(0), BLOCK_M=max(16, triton.next_power_of_2(rows)),
           BLOCK_N=block_n, BLOCK_K=block_k, num_warps=4, num_stages=4,
           **pdl.launch_options())  # fmt: skip
    return out


def quantize_rows(x: torch.Tensor, *, max_block: int = 16384) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token FP8: ``x [M, K]`` -> (``x_fp8 [M, K]``, float32 ``scale [M, 1]``),
    ``x ~= x_fp8 * scale``, equal to ``quantize.quantize_fp8(x, granularity="rowwise")``.

    One program per row. A row of up to ``max_block`` elements is read once and held in
    registers; at decode there are only a few rows, so a row walked block by block would be a
    chain of dependent loads (~8 us a call at batch 4 on an H100, measured)."""
    rows, width = x.shape
    assert x.stride(1) == 1, "quantize_rows: contiguous last dimension"
    out = torch.empty(rows, width, dtype=torch.float8_e4m3fn, device=x.device)
    scale = torch.empty(rows, 1, dtype=torch.float32, device=x.device)
    block = min(max_block, triton.next_power_of_2(width))
    launch(
        _quantize_rows_kernel,
        (rows,),
        x,
        out,
        scale,
        width,
        x.stride(0),
        out.stride(0),
        BLOCK=block,
        ONE_PASS=block >= width,
        num_warps=4 if block <= 2048 else (8 if block <= 8192 else 16),
        **pdl.launch_options(),
    )
    return out, scale


def scale_rows_cols(
    x: torch.Tensor, row_scale: torch.Tensor, col_scale: torch.Tensor, dtype: torch.dtype
) -> torch.Tensor:
    """``x [M, N]`` (float32) times ``row_scale [M, 1]`` and ``col_scale [1, N]`` (float32),
    cast to ``dtype``: the row-wise FP8 GEMM's epilogue, in one kernel."""
    rows, width = x.shape
    x = x.contiguous()
    out = torch.empty(rows, width, dtype=dtype, device=x.device)
    block = min(1024, triton.next_power_of_2(width))
    launch(
        _scale_rows_cols_kernel,
        (rows, triton.cdiv(width, block)),
        x,
        row_scale.contiguous(),
        col_scale.contiguous(),
        out,
        width,
        BLOCK=block,
        **pdl.launch_options(),
    )
    return out
