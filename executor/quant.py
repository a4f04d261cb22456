"""Quantized linears: FP8 W8A8 through ``torch._scaled_mm``, weight-only INT8 and INT4.

FP8 W8A8 (``Fp8Linear``). The weight ``W [out, in]`` is stored as float8_e4m3fn with a scale,
``W ~= W_fp8 * w_scale``; the activation ``x [M, in]`` is quantized the same way just before the
GEMM, ``x ~= x_fp8 * x_scale``, and ``_scaled_mm`` computes ``(x_fp8 @ W_fp8^T) * x_scale *
w_scale`` on the FP8 tensor cores, accumulating in float32 and writing bf16.
- granularity: ``per_tensor`` (one scale each) or ``rowwise`` (one scale per output channel of
  W and per token of x: ``x_scale [M, 1]``, ``w_scale [1, out]``), which tolerates outliers better.
- activation scaling: ``dynamic`` takes ``amax(|x|)`` of every call (one reduction more per
  GEMM); ``static`` uses a scale fixed once from calibration data (``calibrate_static_scales``).
- a few tokens with row-wise scales (``SMALL_M`` rows or fewer): cuBLAS picks a 128-row tile
  for row-wise scaled FP8, so 4 tokens pay for 128. Measured on an H100 (Llama-3.1-8B, batch 4):
  4.44 ms of GEMMs a step against 3.01 ms per tensor
  (``studies/executor-h100/measure/profile-before.log``). Such a GEMM runs unscaled through the
  per-tensor kernel into float32, and one kernel then applies both scales: the step went from
  5.41 to 4.29 ms, against 3.99 ms with static scales (``measure/small-m-fp8/profile.log``).
  Swept over M on an H100 (Llama-3.1-8B's four linear shapes, graph replays: ``studies/
  serving-validation/fp8_gemm_sweep.py``, ``h100-by-work-2026-12-07/2-fp8/fp8-gemm.log``), this
  path stays ahead of the row-wise kernel up to 192 rows (112 against 122 us a layer at 96,
  147 against 164 at 192) and falls behind from 256 (154 against 145).
Scale = amax / 448, 448 being the largest finite float8_e4m3fn.

For one token (batch-1 decode) ``executor.kernels.use_gemv`` routes an ``Fp8Linear`` to a Triton
GEMV that streams the FP8 weights and takes the activation as it comes: bf16 (W8A16, no
quantization kernel at all) or FP8 handed over by the previous kernel (``static_input_scale``).

Weight-only INT8 (``Int8WeightOnlyLinear``): per-output-channel symmetric int8; the forward
dequantizes to the activation dtype and runs a bf16 GEMM (memory: half of bf16; compute: bf16).
INT4 (``Int4WeightOnlyLinear``) uses ``torch.ops.aten._weight_int4pack_mm`` with group scales
where the installed torch has that kernel for the device; ``int4_available`` says whether it does.

The FP8 KV cache lives in ``executor.kv_cache.KVCache`` (``kv_dtype=torch.float8_e4m3fn``).
``quantize_model`` swaps the linears of a built model in place; the lm_head stays in bf16 unless
asked (its error shows directly in the logits) and the embedding is a gather, never quantized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn

from executor import fp8_kernels

__all__ = [
    "FP8_MAX",
    "Fp8Linear",
    "Int8WeightOnlyLinear",
    "Int4WeightOnlyLinear",
    "quantize_fp8",
    "quantize_model",
    "calibrate_static_scales",
    "fp8_supported",
    "int4_available",
]

FP8_DTYPE = torch.float8_e4m3fn
FP8_MAX = 448.0
SMALL_M = 192  # rows up to which a row-wise FP8 GEMM runs per tensor, its scales applied after
Granularity = Literal["per_tensor", "rowwise"]
Scaling = Literal["dynamic", "static"]


def fp8_supported(device: torch.device | str) -> tuple[bool, str]:
    """Whether ``_scaled_mm`` runs here, and why not if it does not."""
    device = torch.device(device)
    if device.type != "cuda":
        return False, "torch._scaled_mm needs a CUDA GPU with FP8 tensor cores (sm_89+)"
    major, minor = torch.cuda.get_device_capability(device)
    if (major, minor) < (8, 9):
        return False, f"compute capability {major}.{minor} has no FP8 tensor cores"
    return True, ""


def quantize_fp8(
    x: torch.Tensor, *, granularity: Granularity, scale: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """x [M, K] -> (x_fp8 [M, K], scale): scale is [] (per tensor) or [M, 1] (rowwise), float32.
    With ``scale`` given (static scaling) it is used as is; values past it saturate."""
    x_float = x.float()
    if scale is None:
        if granularity == "rowwise":
            amax = x_float.abs().amax(dim=-1, keepdim=True)
        else:
            amax = x_float.abs().amax()
        scale = amax.clamp(min=1e-12) / FP8_MAX
    elif granularity == "rowwise" and scale.dim() == 0:
        scale = scale.expand(x.shape[0], 1).contiguous()
    x_fp8 = (x_float / scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
    return x_fp8, scale.float()


class Fp8Linear(nn.Module):
    """``y = x W^T`` with W and x in float8_e4m3fn, through ``torch._scaled_mm``."""

    def __init__(
        self,
        weight: torch.Tensor,
        *,
        granularity: Granularity = "per_tensor",
        scaling: Scaling = "dynamic",
        quantize: Callable = quantize_fp8,
    ) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        self.granularity, self.scaling = granularity, scaling
        self.output_dtype = weight.dtype if weight.dtype != torch.float32 else torch.bfloat16
        if granularity == "rowwise":
            amax = weight.float().abs().amax(dim=1, keepdim=True)  # [out, 1]
        else:
            amax = weight.float().abs().amax()
        w_scale = amax.clamp(min=1e-12) / FP8_MAX
        w_fp8 = (weight.float() / w_scale).clamp(-FP8_MAX, FP8_MAX).to(FP8_DTYPE)
        self.register_buffer("weight", w_fp8)  # [out, in]
        # _scaled_mm wants the second scale as [1, out] for rowwise, [] for per tensor.
        self.register_buffer("weight_scale", w_scale.reshape(1, -1) if w_scale.dim() else w_scale)
        self.register_buffer("input_scale", torch.ones((), device=weight.device))
        self.register_buffer("unit_scale", torch.ones((), device=weight.device))
        # The GEMV's output scale for an FP8 input: input scale x weight scale, one per output
        # row, kept up to date by set_input_scale (no multiply kernel in every decode step).
        self.register_buffer("gemv_scale", self.weight_scale.reshape(-1).float().clone())
        self.quantize = quantize
        self.observe = False  # calibrate_static_scales turns this on to record amax
        self.use_gemv = False  # executor.kernels.use_gemv: one token through the Triton GEMV
        self.gemv_push = None  # executor.parallel.push_from_gemv: the GEMV's ``push``

    def set_input_scale(self, scale: torch.Tensor) -> None:
        """Fix the activation scale (static scaling), and the GEMV's combined scale with it."""
        self.input_scale = scale.float().reshape(())
        self.gemv_scale = self.weight_scale.reshape(-1).float() * self.input_scale

    def static_input_scale(self) -> torch.Tensor | None:
        """The fixed input scale when the previous kernel may hand over FP8 directly."""
        if self.scaling == "static" and self.granularity == "per_tensor" and not self.observe:
            return self.input_scale
        return None

    def _gemv(self, x2d: torch.Tensor, gated: bool = False) -> torch.Tensor:
        # One token: stream the FP8 weights through the GEMV; a bf16 input stays bf16 (W8A16),
        # an FP8 input (static scale upstream) brings its scale along.
        from executor.kernels import gemv

        scale = self.gemv_scale if x2d.dtype == FP8_DTYPE else self.weight_scale.reshape(-1)
        return gemv(
            x2d, self.weight, scale, out_dtype=self.output_dtype, gated=gated, push=self.gemv_push
        )

    def forward_gated(self, gate_up: torch.Tensor) -> torch.Tensor | None:
        """``self(silu(gate) * up)`` for one token in one GEMV kernel; None where the GEMV does
        not apply."""
        if not (self.use_gemv and gate_up.is_cuda and gate_up.numel() == 2 * self.in_features):
            return None
        out = self._gemv(gate_up.reshape(1, -1), gated=True)
        return out.reshape(*gate_up.shape[:-1], self.out_features)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        x2d = x.reshape(-1, self.in_features)  # [M, in]
        if self.use_gemv and x2d.shape[0] == 1 and x2d.is_cuda:
            return self._gemv(x2d).reshape(*leading, self.out_features)
        if x.dtype == FP8_DTYPE:  # already quantized with static_input_scale() upstream
            out = torch._scaled_mm(
                x2d,
                self.weight.t(),
                scale_a=self.input_scale,
                scale_b=self.weight_scale,
                out_dtype=self.output_dtype,
            )
            return out.reshape(*leading, self.out_features)
        if self.observe:
            self.input_scale = torch.maximum(self.input_scale, x2d.float().abs().amax() / FP8_MAX)
        static = self.input_scale if self.scaling == "static" else None
        x_fp8, x_scale = self.quantize(x2d, granularity=self.granularity, scale=static)
        few_rows = self.granularity == "rowwise" and x2d.shape[0] <= SMALL_M
        if few_rows and x2d.is_cuda and fp8_kernels.available():
            unscaled = torch._scaled_mm(
                x_fp8,
                self.weight.t(),
                scale_a=self.unit_scale,
                scale_b=self.unit_scale,
                out_dtype=torch.float32,
            )
            out = fp8_kernels.scale_rows_cols(
                unscaled, x_scale, self.weight_scale, self.output_dtype
            )
            return out.reshape(*leading, self.out_features)
        out = torch._scaled_mm(
            x_fp8,
            self.weight.t(),
            scale_a=x_scale,
            scale_b=self.weight_scale,
            out_dtype=self.output_dtype,
        )
        return out.reshape(*leading, self.out_features)

    def dequantized_weight(self) -> torch.Tensor:
        scale = self.weight_scale.reshape(-1, 1) if self.weight_scale.dim() else self.weight_scale
        return self.weight.float() * scale


class Int8WeightOnlyLinear(nn.Module):
    """Per-output-channel symmetric int8 weights; the GEMM runs in the activation dtype."""

    def __init__(self, weight: torch.Tensor) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        scale = weight.float().abs().amax(dim=1).clamp(min=1e-12) / 127.0  # [out]
        qweight = torch.round(weight.float() / scale[:, None]).clamp(-127, 127).to(torch.int8)
        self.register_buffer("weight", qweight)  # [out, in]
        self.register_buffer("weight_scale", scale.to(weight.dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.linear(x, self.weight.to(x.dtype)) * self.weight_scale

    def dequantized_weight(self) -> torch.Tensor:
        return self.weight.float() * self.weight_scale.float()[:, None]


def int4_available(device: torch.device | str) -> tuple[bool, str]:
    """Whether this torch has a fast int4 weight-only kernel for the device."""
    device = torch.device(device)
    if not hasattr(torch.ops.aten, "_weight_int4pack_mm"):
        return False, "this torch has no aten._weight_int4pack_mm"
    if device.type != "cuda":
        return False, "int4 packed kernels are only benchmarked on CUDA here"
    try:
        weight = torch.randint(0, 16, (256, 128), dtype=torch.int32, device=device)
        packed = torch.ops.aten._convert_weight_to_int4pack(weight.to(torch.uint8), 8)
        scales = torch.ones(128 // 128, 256, 2, dtype=torch.bfloat16, device=device)
        x = torch.randn(1, 128, dtype=torch.bfloat16, device=device)
        torch.ops.aten._weight_int4pack_mm(x, packed, 128, scales)
    except (RuntimeError, NotImplementedError) as error:
        return False, f"int4 kernel unavailable: {str(error).splitlines()[0]}"
    return True, ""


class Int4WeightOnlyLinear(nn.Module):
    """Asymmetric int4 with a scale and zero point per ``group_size`` inputs of each output row,
    packed for ``aten._weight_int4pack_mm`` (tinygemm layout, ``inner_k_tiles=8``)."""

    def __init__(self, weight: torch.Tensor, *, group_size: int = 128) -> None:
        super().__init__()
        self.out_features, self.in_features = weight.shape
        if self.in_features % group_size:
            raise ValueError(f"in_features {self.in_features} is not a multiple of {group_size}")
        self.group_size = group_size
        grouped = weight.float().reshape(self.out_features, -1, group_size)  # [out, groups, g]
        low, high = grouped.amin(-1), grouped.amax(-1)
        scale = ((high - low) / 15).clamp(min=1e-6)
        zero = low + scale * 8  # tinygemm: w = (q - 8) * scale + zero
        q = torch.round((grouped - low[..., None]) / scale[..., None]).clamp(0, 15)
        q = q.reshape(self.out_features, self.in_features).to(torch.int32)
        self.register_buffer(
            "weight", torch.ops.aten._convert_weight_to_int4pack(q.to(torch.uint8), 8)
        )
        scales_and_zeros = torch.stack([scale, zero], dim=-1).transpose(0, 1).contiguous()
        self.register_buffer("scales_and_zeros", scales_and_zeros.to(torch.bfloat16))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        leading = x.shape[:-1]
        out = torch.ops.aten._weight_int4pack_mm(
            x.reshape(-1, self.in_features).to(torch.bfloat16),
            self.weight,
            self.group_size,
            self.scales_and_zeros,
        )
        return out.reshape(*leading, self.out_features).to(x.dtype)


def _quantizable_linears(model: nn.Module, include_lm_head: bool) -> Iterable[tuple]:
    for parent in model.modules():
        for child_name, child in parent.named_children():
            if isinstance(child, nn.Linear) and (include_lm_head or child_name != "lm_head"):
                yield parent, child_name, child


def _fast_quantize(compiled: Callable) -> Callable:
    """``quantize_fp8`` with dynamic per-token scales on a GPU in one Triton kernel."""

    def quantize(x, *, granularity: Granularity, scale: torch.Tensor | None = None):
        if scale is None and granularity == "rowwise" and x.is_cuda and fp8_kernels.available():
            return fp8_kernels.quantize_rows(x)
        return compiled(x, granularity=granularity, scale=scale)

    return quantize


@torch.no_grad()
def quantize_model(
    model: nn.Module,
    *,
    weights: str,
    granularity: Granularity = "per_tensor",
    scaling: Scaling = "dynamic",
    include_lm_head: bool = False,
    compile_quantize: bool = False,
    int4_group_size: int = 128,
    activations: str = "bf16",
    outlier_fraction: float = 0.0,
) -> nn.Module:
    """Replace the model's ``nn.Linear`` layers in place: ``weights`` is fp8 (W8A8), int8 or
    int4 (weight-only; int8 with ``activations="int8"``: W8A8, ``executor.int8_linear``, with
    ``outlier_fraction`` of the input channels in bf16). ``compile_quantize`` (GPU only) runs
    the FP8 activation quantization as compiled kernels, and dynamic per-token scales as one
    Triton kernel (``executor.fp8_kernels.quantize_rows``)."""
    from executor.int8_linear import Int8Linear

    quantize: Callable = quantize_fp8
    if compile_quantize:
        quantize = _fast_quantize(torch.compile(quantize_fp8, dynamic=True))
    for parent, name, linear in list(_quantizable_linears(model, include_lm_head)):
        weight = linear.weight.data
        if weights == "fp8":
            new: nn.Module = Fp8Linear(
                weight, granularity=granularity, scaling=scaling, quantize=quantize
            )
        elif weights == "int8" and activations == "int8":
            new = Int8Linear(weight, outlier_fraction)
        elif weights == "int8":
            new = Int8WeightOnlyLinear(weight)
        elif weights == "int4":
            new = Int4WeightOnlyLinear(weight, group_size=int4_group_size)
        else:
            raise ValueError(f"unknown weight dtype {weights!r} (fp8, int8, int4)")
        setattr(parent, name, new)
        del linear
    return model


@torch.no_grad()
def calibrate_static_scales(model: nn.Module, run: Callable[[], object]) -> None:
    """Fix every Fp8Linear's activation scale to the amax seen while ``run()`` executes (for
    ``scaling='static'``): dynamic quantization during the run, observation on."""
    layers = [m for m in model.modules() if isinstance(m, Fp8Linear)]
    saved = [layer.scaling for layer in layers]
    for layer in layers:
        layer.input_scale = torch.full_like(layer.input_scale, 1e-12)
        layer.observe, layer.scaling = True, "dynamic"
    run()
    for layer, scaling in zip(layers, saved, strict=True):
        layer.observe, layer.scaling = False, scaling
        layer.set_input_scale(layer.input_scale)
