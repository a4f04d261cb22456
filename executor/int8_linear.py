"""INT8 W8A8: the GEMM on the integer tensor cores, as SmoothQuant serves it.

The weight ``W [out, in]`` is stored as int8 with one scale per output channel; each call
quantizes the activation ``x [M, in]`` per token (``x ~= x_q * x_scale [M, 1]``), multiplies in
int8 with int32 accumulation (``torch._int_mm``) and scales back: ``(x_q @ W_q^T) * x_scale *
w_scale``. SmoothQuant (Xiao et al. 2023, arXiv:2211.10438) first moves the activations'
outliers into the weights with a per-channel smoothing factor, which is a one-time rescaling of
both and costs nothing at run time, so random weights need none.

``outlier_fraction`` keeps that share of the input channels in bf16, as LLM.int8 does (Dettmers
et al. 2022, arXiv:2208.07339): a gather of those columns and a small bf16 GEMM beside the int8
one, the cost the model prices for ``int8_outlier_fraction``. With random weights the channels
with the largest weight columns stand in for the activations' outliers.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Int8Linear"]

# On a GPU ``torch._int_mm`` takes more than 16 rows, and inner and outer sizes in multiples of 8.
_MIN_ROWS = 17


class Int8Linear(nn.Module):
    """INT8 W8A8 with per-token activation and per-channel weight scales."""

    def __init__(self, weight: torch.Tensor, outlier_fraction: float = 0.0) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        kept = round(outlier_fraction * self.in_features / 8) * 8  # int8 needs multiples of 8
        columns = weight.float().abs().amax(dim=0)
        outliers = columns.topk(kept).indices.sort().values if kept else None
        inliers = torch.ones(self.in_features, dtype=torch.bool, device=weight.device)
        if outliers is not None:
            inliers[outliers] = False
        int8_part = weight[:, inliers].float()
        scale = int8_part.abs().amax(dim=1).clamp(min=1e-12) / 127.0  # [out]
        qweight = torch.round(int8_part / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight", qweight)  # [out, in - kept]
        self.register_buffer("weight_scale", scale)  # float32
        self.register_buffer("inliers", inliers.nonzero().flatten() if kept else None)
        self.register_buffer("outliers", outliers)
        self.register_buffer("outlier_weight", weight[:, outliers] if kept else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features)
        part = x2d if self.inliers is None else x2d[:, self.inliers]
        x_scale = part.float().abs().amax(dim=1, keepdim=True).clamp(min=1e-12) / 127.0
        x_q = torch.round(part.float() / x_scale).clamp(-127, 127).to(torch.int8)
        rows = x_q.shape[0]
        if x_q.is_cuda and rows < _MIN_ROWS:  # padded rows: a GEMM of 17 costs what 1 does
            x_q = F.pad(x_q, (0, 0, 0, _MIN_ROWS - rows))
        acc = torch._int_mm(x_q, self.weight.t())[:rows]  # int32 [M, out]
        out = (acc.float() * x_scale * self.weight_scale[None, :]).to(x.dtype)
        if self.outliers is not None:
            out = out + F.linear(x2d[:, self.outliers], self.outlier_weight)
        return out.reshape(*leading, self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        """``W`` as the int8 GEMM and the bf16 outlier columns together represent it."""
        full = torch.empty(self.out_features, self.in_features, device=self.weight.device)
        inliers = slice(None) if self.inliers is None else self.inliers
        full[:, inliers] = self.weight.float() * self.weight_scale[:, None]
        if self.outliers is not None:
            full[:, self.outliers] = self.outlier_weight.float()
        return full
