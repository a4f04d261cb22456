"""A matrix-vector kernel for one-token decode, in Triton.

At batch 1 a decode step is ``y = W x`` for every weight matrix: pure weight streaming, one
multiply-add per weight byte or two. cuBLAS serves this shape with general GEMM kernels that
reach about 2.4-2.8 TB/s of an H100's ~3.1 TB/s on the 4096-wide Llama matrices; this kernel
streams each row block of ``W`` once with wide loads and many blocks in flight.

``gemv(x, weight, scale=None)`` computes ``x @ weight.T`` for ``x [1, K]`` and ``weight [N, K]``
in bf16, or float8_e4m3fn (then ``x`` may be bf16 or float8, and ``scale`` multiplies the float32
sum: the product of the activation and weight scales, one value or one per output row). Rows of
``W`` are split over programs (``BLOCK_N`` rows each); K is walked in ``BLOCK_K`` steps.

``gated=True`` fuses the SwiGLU before the MLP's down projection: ``x`` is the ``[gate | up]``
output of the fused gate/up projection and the kernel multiplies by ``silu(gate) * up``, so a
one-token MLP is two kernels, not three.

Under tensor parallelism, ``push`` (the group's ``executor.allreduce.OneShotAllReduce``, given
to the row-parallel weights) has each program also store its share of ``y`` into the peers'
all-reduce buffers, as soon as it is computed; the all-reduce kernel then only waits for it.

Where the GPU has programmatic dependent launch (``executor.pdl``), each program fetches its
first weight tile before it waits for the previous kernel: the weights never depend on it.

``GemvLinear`` is an ``nn.Linear`` that takes this path for a single token on a GPU and
``F.linear`` otherwise; ``use_gemv(model)`` swaps it in after the model is built (and sharded).
``available()`` says whether Triton and a GPU are here.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from executor import pdl
from executor.tritonlib import available, tl, triton

__all__ = ["available", "gemv", "GemvLinear", "use_gemv"]


def _gemv_configs() -> list:
    # Tiles of 4k-32k weights per step (4-32 kB of FP8, 8-64 kB of bf16): enough bytes in flight
    # per program for either; the autotuner keeps the fastest per shape and dtype.
    return [
        triton.Config({"BLOCK_N": n, "BLOCK_K": k}, num_warps=w)
        for n in (1, 2, 4, 8, 16, 32)
        for k in (256, 512, 1024, 2048, 4096)
        for w in (4, 8)
        if 4096 <= n * k <= 32768
    ]


if triton is not None:
    from executor.allreduce import push_row

    @triton.jit
    def _tile_dot(w, x_ptr, cols, col_ok, K, GATED: tl.constexpr):
        # One [BLOCK_N, BLOCK_K] weight tile times the matching slice of x, summed over K.
        x = tl.load(x_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
        if GATED:  # x holds [gate | up]: the SwiGLU input silu(gate) * up, made here
            up = tl.load(x_ptr + K + cols, mask=col_ok, other=0.0).to(tl.float32)
            x = x * tl.sigmoid(x) * up
        return tl.sum(w.to(tl.float32) * x[None, :], axis=1)

    @triton.autotune(configs=_gemv_configs(), key=["N", "K", "SCALE_PER_ROW", "GATED"])
    @triton.jit
    def _gemv_kernel(
        x_ptr,
        w_ptr,
        y_ptr,
        scale_ptr,
        N,
        K,
        stride_wn,
        push_buffers_ptr,
        push_counters_ptr,
        push_max_rows,
        HAS_SCALE: tl.constexpr,
        SCALE_PER_ROW: tl.constexpr,
        GATED: tl.constexpr,
        PUSH: tl.constexpr,
        RANK: tl.constexpr,
        WORLD: tl.constexpr,
        USE_PDL: tl.constexpr,
        BLOCK_N: tl.constexpr,
        BLOCK_K: tl.constexpr,
    ):
        pid = tl.program_id(0)
        rows = pid * BLOCK_N + tl.arange(0, BLOCK_N)  # [BLOCK_N]
        row_ok = rows < N
        cols = tl.arange(0, BLOCK_K)
        col_ok = cols < K
        tile = w_ptr + rows[:, None] * stride_wn + cols[None, :]
        # The first weight tile does not depend on the previous kernel: under PDL it is in
        # flight while that kernel finishes, and only x waits.
        w = tl.load(tile, mask=row_ok[:, None] & col_ok[None, :], other=0.0)
        pdl.start(USE_PDL)
        acc = _tile_dot(w, x_ptr, cols, col_ok, K, GATED)
        for k0 in range(BLOCK_K, K, BLOCK_K):
            cols = k0 + tl.arange(0, BLOCK_K)
            col_ok = cols < K
            w = tl.load(
                w_ptr + rows[:, None] * stride_wn + cols[None, :],
                mask=row_ok[:, None] & col_ok[None, :],
                other=0.0,
            )
            acc += _tile_dot(w, x_ptr, cols, col_ok, K, GATED)
        if HAS_SCALE:
            if SCALE_PER_ROW:
                acc = acc * tl.load(scale_ptr + rows, mask=row_ok, other=0.0)
            else:
                acc = acc * tl.load(scale_ptr)
        y = acc.to(y_ptr.dtype.element_ty)
        tl.store(y_ptr + rows, y, mask=row_ok)
        if PUSH:  # a row-parallel GEMV under TP: the peers get this share of y now
            push_row(
                y,
                rows,
                row_ok,
                push_buffers_ptr,
                push_counters_ptr,
                0,
                N,
                push_max_rows,
                RANK,
                WORLD,
                min(BLOCK_N, 8),
            )


def gemv(
    x: torch.Tensor,
    weight: torch.Tensor,
    scale: torch.Tensor | None = None,
    out_dtype: torch.dtype = torch.bfloat16,
    gated: bool = False,
    push=None,
) -> torch.Tensor:
    """x [1, K] @ weight[N, K].T -> [1, N] (times ``scale``: [] or [N], float32). ``gated``: x
    is ``[1, 2K]``, a gate and an up half, and the GEMV reads ``silu(gate) * up``. ``push``: the
    TP group's ``OneShotAllReduce``, for a row-parallel weight; each program then also stores
    its outputs into the peers' buffers, and the all-reduce of y only waits for theirs."""
    assert x.shape[0] == 1 and weight.stride(1) == 1, "gemv: one row of x, row-major weight"
    n, k = weight.shape
    assert x.shape[1] == (2 * k if gated else k), "gemv: x does not match the weight"
    x = x.contiguous()
    y = torch.empty(1, n, dtype=out_dtype, device=x.device)
    if push is not None and not push.applies(y):
        push = None
    scale_per_row = scale is not None and scale.numel() > 1
    scale_arg = scale.reshape(-1).contiguous() if scale is not None else y

    def grid(meta):
        return (triton.cdiv(n, meta["BLOCK_N"]),)

    def launch(pushing: bool) -> None:
        _gemv_kernel[grid](
            x,
            weight,
            y,
            scale_arg,
            n,
            k,
            weight.stride(0),
            push.pointers if push is not None else y,
            push.counters if push is not None else y,
            push.max_rows if push is not None else 0,
            HAS_SCALE=scale is not None,
            SCALE_PER_ROW=scale_per_row,
            GATED=gated,
            PUSH=pushing,
            RANK=push.rank if push is not None else 0,
            WORLD=push.world_size if push is not None else 1,
            **pdl.launch_options(),
        )

    if push is not None:
        # The autotuner times each shape on its first call by running it many times, configs
        # that round differently included: do that without pushing, so that the peers only
        # ever receive the chosen config's result.
        tune_key = (n, k, x.dtype, weight.dtype, scale_per_row, gated)
        if tune_key not in _TUNED_FOR_PUSH:
            launch(False)
            _TUNED_FOR_PUSH.add(tune_key)
        launch(True)
        push.mark_pushed(y)
    else:
        launch(False)
    return y


_TUNED_FOR_PUSH: set[tuple] = set()


class GemvLinear(nn.Linear):
    """nn.Linear whose single-token forward on a GPU runs ``gemv``; ``gemv_push`` (set by
    ``executor.parallel.push_from_gemv`` on row-parallel weights) is its ``push``."""

    gemv_push = None

    def _takes_gemv(self, x: torch.Tensor, width: int) -> bool:
        return x.is_cuda and x.numel() == width and x.dtype == self.weight.dtype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self._takes_gemv(x, self.in_features):
            out = gemv(x.reshape(1, -1), self.weight, out_dtype=x.dtype, push=self.gemv_push)
            return out.view(*x.shape[:-1], self.out_features)
        return F.linear(x, self.weight)

    def forward_gated(self, gate_up: torch.Tensor) -> torch.Tensor | None:
        """``self(silu(gate) * up)`` for one token in a single GEMV kernel, or None where the
        GEMV does not apply (the caller then runs SwiGLU and the linear apart)."""
        if not self._takes_gemv(gate_up, 2 * self.in_features):
            return None
        out = gemv(
            gate_up.reshape(1, -1),
            self.weight,
            out_dtype=gate_up.dtype,
            gated=True,
            push=self.gemv_push,
        )
        return out.view(*gate_up.shape[:-1], self.out_features)


def use_gemv(model: nn.Module, enabled: bool = True) -> nn.Module:
    """Turn every ``nn.Linear`` of ``model`` into a ``GemvLinear`` (same weights, in place) and
    tell FP8 linears to use ``gemv`` for one token; ``enabled=False`` turns both back. No-op
    without Triton or a GPU."""
    if not available():
        return model
    for module in model.modules():
        if enabled and type(module) is nn.Linear:
            module.__class__ = GemvLinear
        elif not enabled and type(module) is GemvLinear:
            module.__class__ = nn.Linear
        elif hasattr(module, "use_gemv"):
            module.use_gemv = enabled
    return model
