"""How the executor's FP8 GEMMs scale with the tokens of an iteration, on a GPU: Llama-3.1-8B's
four linear shapes at M tokens, bf16 against the three FP8 paths of ``executor.quant``.

The FP8 plan's iterations with prompt chunks ran 2.6-3x the predicted step (bf16's 1.4x), and
a 1,024-token chunk's FP8 GEMMs took 16.8 ms, barely under bf16's 19 ms. Dynamic per-token
scales run cuBLAS's row-wise scaled kernel (``..._ovscale``) above ``quant.SMALL_M`` tokens;
up to it, the per-tensor kernel unscaled into float32 and a scale epilogue. This times, per M
(graph replays, medians): bf16 ``F.linear``; FP8 row-wise with the epilogue path up to 64
tokens; the row-wise epilogue path forced at every M; dynamic per-tensor scales; and the
operands swapped (``swap-ab``: the weight's output channels as the GEMM's long side, the few
tokens as its short one, the way CUTLASS kernels for few tokens run), with the scales in an
epilogue or in cuBLAS's row-wise kernel; each FP8 variant's error against bf16 beside its
time. Prints one table, writes JSON. (Until `h100-bound-2026-12-07/` it also timed a
one-kernel Triton GEMM for up to 128 rows; it lost to cuBLAS at every M there and was
removed.)

    python3 studies/serving-validation/fp8_gemm_sweep.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from executor import fp8_kernels, quant
from executor.engine import time_graph

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
TOKENS = (8, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048)


class Swapped:
    """``x @ W^T`` as ``(W @ x^T)^T`` with row-wise FP8 scales: cuBLAS's long side is then
    the weight's output channels. The tokens are padded to a multiple of 16 (``_scaled_mm``'s
    rule for a dimension); the result is transposed back into a contiguous ``[M, N]``."""

    def __init__(self, weight: torch.Tensor, quantize, *, epilogue: bool) -> None:
        self.linear = quant.Fp8Linear(weight, granularity="rowwise", quantize=quantize)
        self.epilogue = epilogue

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        linear, m = self.linear, x.shape[0]
        x = F.pad(x, (0, 0, 0, -m % 16))
        x_fp8, x_scale = linear.quantize(x, granularity="rowwise")
        if self.epilogue:
            unit = linear.unit_scale
            t = torch._scaled_mm(linear.weight, x_fp8.t(), scale_a=unit, scale_b=unit,
                                 out_dtype=torch.float32)  # fmt: skip
            return fp8_kernels.scale_rows_cols(t.t()[:m], x_scale[:m], linear.weight_scale,
                                               torch.bfloat16)  # fmt: skip
        t = torch._scaled_mm(linear.weight, x_fp8.t(), scale_a=linear.weight_scale.reshape(-1, 1),
                             scale_b=x_scale.reshape(1, -1), out_dtype=torch.bfloat16)  # fmt: skip
        return t.t()[:m].contiguous()


def main() -> int:
    torch.manual_seed(0)
    layers = {name: torch.randn(n, k, device="cuda", dtype=torch.bfloat16) * 0.02
              for name, (n, k) in SHAPES.items()}  # fmt: skip
    # The activation quantization the executor runs (quantize_model's compile_quantize).
    fast = quant._fast_quantize(torch.compile(quant.quantize_fp8, dynamic=True))
    variants = {
        "bf16": lambda w: lambda x: F.linear(x, w),
        "fp8-rowwise": lambda w: quant.Fp8Linear(w, granularity="rowwise", quantize=fast),
        "fp8-rowwise-epilogue": lambda w: quant.Fp8Linear(w, granularity="rowwise",
                                                          quantize=fast),
        "fp8-per-tensor": lambda w: quant.Fp8Linear(w, granularity="per_tensor", quantize=fast),
        "fp8-swap-ab-epilogue": lambda w: Swapped(w, fast, epilogue=True),
        "fp8-swap-ab-rowwise": lambda w: Swapped(w, fast, epilogue=False),
    }  # fmt: skip
    rows = []
    for m in TOKENS:
        row = {"tokens": m}
        for variant, make in variants.items():
            # The epilogue path is the row-wise one below SMALL_M; forced here at every M.
            quant.SMALL_M = 1 << 30 if variant == "fp8-rowwise-epilogue" else 64
            total = 0.0
            for name, weight in layers.items():
                x = torch.randn(m, weight.shape[1], device="cuda", dtype=torch.bfloat16)
                linear = make(weight)
                if variant.startswith("fp8"):  # relative to bf16: FP8's rounding, or a bug
                    want = F.linear(x, weight).float()
                    error = ((linear(x).float() - want).norm() / want.norm()).item()
                    row[f"{variant}:{name}_rel_error"] = round(error, 4)
                seconds = time_graph(lambda linear=linear, x=x: linear(x))
                row[f"{variant}:{name}_us"] = round(seconds * 1e6, 1)
                total += seconds
            flops = 2 * m * sum(n * k for n, k in SHAPES.values())
            row[f"{variant}_us"] = round(total * 1e6, 1)
            row[f"{variant}_tflops"] = round(flops / total / 1e12)
        quant.SMALL_M = 64
        rows.append(row)
        print(f"M={m:>5}: " + "  ".join(f"{v} {row[v + '_us']:>8.1f} us ({row[v + '_tflops']} "
                                        "TFLOP/s)" for v in variants), flush=True)  # fmt: skip
    with open(sys.argv[1], "w") as out:
        json.dump({"card": torch.cuda.get_device_name(), "torch": torch.__version__,
                   "layer_shapes": SHAPES, "rows": rows}, out, indent=1)  # fmt: skip
    return 0


if __name__ == "__main__":
    with torch.inference_mode():
        sys.exit(main())
