"""The Triton GEMV against a float32 matmul, in Triton's CPU interpreter (skipped without it)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

pytest.importorskip("torch")
pytest.importorskip("triton")

SCRIPT = textwrap.dedent("""
    import torch, triton
    from executor import kernels

    def run(x, w, scale=None):
        n, k = w.shape
        y = torch.empty(1, n, dtype=torch.bfloat16)
        per_row = scale is not None and scale.numel() > 1
        kernels._gemv_kernel.fn[(triton.cdiv(n, 8),)](
            x, w, y, scale if scale is not None else y, n, k, w.stride(0),
            HAS_SCALE=scale is not None, SCALE_PER_ROW=per_row, BLOCK_N=8, BLOCK_K=256)
        return y

    torch.manual_seed(0)
    x = torch.randn(1, 640).to(torch.bfloat16)      # K not a multiple of BLOCK_K: masked tail
    w = torch.randn(44, 640).to(torch.bfloat16)     # N not a multiple of BLOCK_N
    ref = x.float() @ w.float().T
    rel = lambda y: ((y.float() - ref).norm() / ref.norm()).item()
    rows = w.float().abs().amax(1) / 448
    w8 = (w.float() / rows[:, None]).to(torch.float8_e4m3fn)
    print(rel(run(x, w)), rel(run(x, w8, rows.contiguous())))
""")


def test_gemv_matches_matmul_in_interpreter():
    env = {**os.environ, "TRITON_INTERPRET": "1"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        cwd=os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
    )
    if out.returncode:
        pytest.skip(f"Triton interpreter unavailable here: {out.stderr.strip()[-200:]}")
    bf16_error, fp8_error = map(float, out.stdout.split())
    assert bf16_error < 1e-2, "bf16 output rounding only: well under 1%"
    assert fp8_error < 0.06, "e4m3 weights: a few percent (see test_quant.FP8_TOLERANCE)"
