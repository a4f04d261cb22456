"""Triton kernels around an FP8 GEMM with per-token activation scales (``executor.quant``).

- ``quantize_rows``: dynamic per-token FP8 quantization of a GEMM's input, one row per program:
  the row's amax, its scale and the FP8 row in one kernel. Compiled PyTorch takes a reduction
  kernel and a scaling kernel for it.
- ``scale_rows_cols``: ``out[m, n] * row_scale[m] * col_scale[n]`` into the model's dtype, the
  epilogue of a few-token FP8 GEMM with per-token and per-channel scales.

Both launch with programmatic dependent launch where the GPU has it (``executor.pdl``);
``available()`` says whether they can run here. Tests run them in Triton's CPU interpreter.
"""

from __future__ import annotations

import torch

from executor import pdl
from executor.triton_launch import launch
from executor.tritonlib import available, tl, triton

__all__ = ["available", "quantize_rows", "scale_rows_cols"]


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
