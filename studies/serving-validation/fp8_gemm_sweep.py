"""How the executor's FP8 GEMMs scale with the tokens of an iteration, on a GPU: Llama-3.1-8B's
four linear shapes at M tokens, bf16 against the three FP8 paths of ``executor.quant``.

The FP8 plan's iterations with prompt chunks ran 2.6-3x the predicted step (bf16's 1.4x), and
a 1,024-token chunk's FP8 GEMMs took 16.8 ms, barely under bf16's 19 ms. Dynamic per-token
scales run cuBLAS's row-wise scaled kernel (``..._ovscale``) above ``quant.SMALL_M`` tokens;
up to it, the per-tensor kernel unscaled into float32 and a scale epilogue. This times, per M
(graph replays, medians): bf16 ``F.linear``; FP8 row-wise as the plan runs it; the row-wise
epilogue path forced at every M; dynamic per-tensor scales; the Triton few-rows kernel
(``executor.fp8_kernels.few_rows_gemm``, up to 128 rows). Prints one table, writes JSON.

    python3 studies/serving-validation/fp8_gemm_sweep.py OUT.json
"""

from __future__ import annotations

import json
import sys

import torch
import torch.nn.functional as F

from executor import quant
from executor.engine import time_graph

SHAPES = {"qkv": (6144, 4096), "o": (4096, 4096), "gate_up": (28672, 4096), "down": (4096, 14336)}
TOKENS = (8, 32, 64, 96, 128, 192, 256, 384, 512, 1024, 2048)


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
        # executor.fp8_kernels.few_rows_gemm up to 128 rows (the epilogue path above).
        "fp8-triton-few-rows": lambda w: quant.Fp8Linear(w, granularity="rowwise",
                                                         quantize=fast),
    }  # fmt: skip
    rows = []
    for m in TOKENS:
        row = {"tokens": m}
        for variant, make in variants.items():
            # The epilogue path is the row-wise one below SMALL_M; forced here at every M.
            few_rows = variant == "fp8-triton-few-rows"
            quant.SMALL_M = 1 << 30 if variant == "fp8-rowwise-epilogue" or few_rows else 64
            quant.FEW_ROWS_TRITON = few_rows
            total = 0.0
            for name, weight in layers.items():
                x = torch.randn(m, weight.shape[1], device="cuda", dtype=torch.bfloat16)
                linear = make(weight)
                seconds = time_graph(lambda linear=linear, x=x: linear(x))
                row[f"{variant}:{name}_us"] = round(seconds * 1e6, 1)
                total += seconds
            flops = 2 * m * sum(n * k for n, k in SHAPES.values())
            row[f"{variant}_us"] = round(total * 1e6, 1)
            row[f"{variant}_tflops"] = round(flops / total / 1e12)
        quant.SMALL_M, quant.FEW_ROWS_TRITON = 64, False
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
