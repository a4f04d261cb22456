"""Efficiency fitting and fidelity tables, on hand-made measurements (numpy only)."""

from __future__ import annotations

import math

import pytest

from simulator.calibration.fidelity import fidelity_table, format_fidelity
from simulator.calibration.fit import fit_efficiency
from simulator.data.hardware import load_hardware


@pytest.fixture
def h100():
    return load_hardware("h100-sxm", calibration=False)


def _micro(peak_bf16: float, peak_fp8: float) -> dict:
    # GEMMs at 50% of peak for M <= 64 and 80% above (bf16); fp8 at 72% of its own peak.
    gemm = []
    for m in (1, 64, 1024, 8192):
        for dtype, peak, eff in (
            ("bf16", peak_bf16, 0.5 if m <= 64 else 0.8),
            ("fp8", peak_fp8, 0.72),
        ):
            gemm.append(
                {
                    "name": "gate_up_proj",
                    "tp": 1,
                    "dtype": dtype,
                    "m": m,
                    "flops_per_s": eff * peak,
                    "time_s": 1.0 / eff,
                }
            )
    return {
        "hbm": {"read_bytes_per_s": 3.015e12},
        "gemm": gemm,
        "attention_prefill": [
            {"seq": 128, "flops_per_s": 1e12},
            {"seq": 1024, "flops_per_s": 0.4 * peak_bf16},
            {"seq": 8192, "flops_per_s": 0.3 * peak_bf16},
        ],
        "attention_decode": [{"bytes_per_s": 2.7135e12}],
        "kernel_overhead": {"eager_per_kernel_s": 6e-6, "graph_per_kernel_s": 1e-6},
    }


def test_fit_efficiency_from_hand_made_measurements(h100):
    eff = fit_efficiency(_micro(h100.peak("bf16"), h100.peak("fp8")), h100)
    assert eff.hbm == pytest.approx(3.015 / 3.35), "hbm = measured read / datasheet 3.35 TB/s"
    assert eff.gemm_tokens == (1.0, 64.0, 1024.0, 8192.0)
    assert eff.gemm_efficiency == pytest.approx((0.5, 0.5, 0.8, 0.8))
    # fp8 72% of its peak over bf16 80% of its peak, at M >= 256.
    assert eff.low_precision_gemm_factor == pytest.approx(0.9)
    # The S=128 point (occupancy bound) is left out; the fall at 8192 is kept: efficiency that
    # falls with more work makes time rise faster, never fall (a full model's 8k and 16k
    # prefills measure the GEMMs' fall at large M, studies/executor-h100/fidelity.md).
    assert eff.attention_seq == (1024.0, 8192.0)
    assert eff.attention_efficiency == pytest.approx((0.4, 0.3))
    # 2.7135 TB/s over (3.35 TB/s x 0.9) = 0.9.
    assert eff.decode_attention_hbm == pytest.approx(0.9)
    assert (eff.kernel_launch_s, eff.kernel_graph_s) == (6e-6, 1e-6)
    assert eff.source == "measured by tune calibrate"


def test_collective_latency_from_tp_steps(h100):
    layers = 32
    single = [
        {
            "phase": "decode",
            "weights": "bf16",
            "tp": 1,
            "batch": 1,
            "context": 1024,
            "fits": True,
            "time_s": 6e-3,
        }
    ]
    # TP=2 adds 20 us per all-reduce, TP=4 adds 24 us. latency = base + per_rank x (N - 1):
    # base + 1 x per_rank = 20 and base + 3 x per_rank = 24, so per_rank = 2 us, base = 18 us.
    tp_runs = [
        {
            "allreduce": [{"bytes": 2**30, "bus_bytes_per_s": 360e9}],
            "model": [
                {
                    "phase": "decode",
                    "weights": "bf16",
                    "tp": w,
                    "batch": 1,
                    "context": 1024,
                    "fits": True,
                    "time_s": 6e-3 / w + 2 * layers * lat,
                }
            ],
        }
        for w, lat in ((2, 20e-6), (4, 24e-6))
    ]
    eff = fit_efficiency({}, h100, tp_runs=tp_runs, single_gpu_points=single, num_layers=layers)
    assert eff.link == pytest.approx(360 / 450)
    assert eff.collective_latency_s == pytest.approx(18e-6)
    assert eff.collective_latency_per_rank_s == pytest.approx(2e-6)


def test_fidelity_table_median_and_infeasible():
    measured = [
        {
            "phase": "decode",
            "weights": "bf16",
            "tp": 1,
            "batch": b,
            "context": 1024,
            "fits": True,
            "time_s": 1.0,
        }
        for b in (1, 2, 4)
    ] + [
        {
            "phase": "decode",
            "weights": "bf16",
            "tp": 1,
            "batch": 256,
            "context": 16384,
            "fits": False,
            "reason": "out of memory",
        }
    ]
    predicted = {1: 1.05, 2: 0.8, 4: 1.1}
    table = fidelity_table(measured, lambda r: predicted[r["batch"]], hardware="h100-sxm")
    assert [round(row.relative_error, 3) for row in table.rows] == [0.05, -0.2, 0.1]
    assert table.median_abs_error == pytest.approx(0.1)
    assert len(table.infeasible) == 1
    assert "Median absolute relative error: 10.0%" in format_fidelity(table)
    assert math.isfinite(table.as_dict()["median_abs_relative_error"])


def _bench_file(path, device_name, results):
    import json

    path.write_text(json.dumps({"machine": {"device_name": device_name}, "results": results}))


def test_fit_saved_writes_calibration_and_fidelity(tmp_path, h100):
    from simulator.calibration.fit_saved import fit_saved

    _bench_file(
        tmp_path / "micro.json",
        "NVIDIA H100 80GB HBM3",
        _micro(h100.peak("bf16"), h100.peak("fp8")),
    )
    decode = {
        "phase": "decode",
        "weights": "bf16",
        "tp": 1,
        "batch": 1,
        "prompt": None,
        "context": 1024,
        "kv_dtype": "bf16",
        "cuda_graphs": True,
        "fits": True,
        "time_s": 6e-3,
    }
    oom = {**decode, "batch": 256, "context": 16384, "fits": False, "reason": "out of memory"}
    _bench_file(tmp_path / "model.json", "NVIDIA H100 80GB HBM3", [decode, oom])
    out = tmp_path / "h100-sxm.yaml"
    result = fit_saved(
        tmp_path,
        hardware="h100-sxm",
        model="llama-3.1-8b",
        out=str(out),
        accept_difference="hand-made measurements, not a kernel's",
    )
    assert out.is_file() and "gpu: h100-sxm" in out.read_text()
    fidelity = result["fidelity"]
    assert fidelity["points"] == 1 and len(fidelity["infeasible"]) == 1
    assert 0 < fidelity["rows"][0]["predicted_s"] < 1


def test_fit_saved_refuses_another_gpus_measurements(tmp_path, h100):
    from simulator.calibration.fit_saved import fit_saved
    from simulator.errors import GpuError

    _bench_file(tmp_path / "micro.json", "NVIDIA H200", _micro(1e15, 2e15))
    with pytest.raises(GpuError, match="refusing to mix GPUs"):
        fit_saved(
            tmp_path, hardware="h100-sxm", model="llama-3.1-8b", out=str(tmp_path / "x.yaml")
        )


def test_default_engine_by_variant_name_or_by_fields():
    """Records that name their variant are judged by it alone; older ones by their fields."""
    from simulator.calibration.fit import is_default_engine

    assert is_default_engine({"variant": None, "decode_attention": "triton", "kv_dtype": "fp8"})
    assert not is_default_engine({"variant": "no-pdl", "pdl": False})
    assert is_default_engine({"kv_dtype": "bf16", "decode_attention": "sdpa", "pdl": True})
    assert not is_default_engine({"kv_dtype": "bf16", "decode_attention": "triton"})
    assert not is_default_engine({"kv_dtype": "fp8"})


def test_gemm_tail_from_memory_bound_library_gemms(h100):
    """``gemm_tail_s``: what a memory-bound cuBLAS GEMM of more than one row takes beyond its
    bytes at the calibrated HBM rate and one kernel's graph cost. One-token GEMMs, the GEMV and
    compute-bound GEMMs say nothing about it."""
    micro = _micro(h100.peak("bf16"), h100.peak("fp8"))
    rate = 3.015e12  # the measured read bandwidth, so hbm x datasheet
    graph = micro["kernel_overhead"]["graph_per_kernel_s"]

    def gemm(n: int, k: int, m: int, extra: float, kernel: str = "cublas") -> dict:
        operand_bytes = 2.0 * (k * n + m * k) + 2.0 * m * n
        time_s = operand_bytes / rate + graph + extra
        flops = 2.0 * m * k * n
        return {
            "name": "proj",
            "tp": 4,
            "dtype": "bf16",
            "m": m,
            "n": n,
            "k": k,
            "kernel": kernel,
            "time_s": time_s,
            "flops_per_s": flops / time_s,
        }

    micro["gemm"] = [
        gemm(1536, 4096, 16, 3e-6),
        gemm(1024, 4096, 16, 4e-6),
        gemm(7168, 4096, 64, 5e-6),
        gemm(1536, 4096, 1, 9e-6),  # one token: left out
        gemm(1536, 4096, 16, 0.0, kernel="gemv"),  # the GEMV: left out
        gemm(28672, 4096, 8192, 1e-3),  # compute bound: left out
    ]
    assert fit_efficiency(micro, h100).gemm_tail_s == pytest.approx(4e-6, rel=1e-6)
    assert fit_efficiency(_micro(h100.peak("bf16"), h100.peak("fp8")), h100).gemm_tail_s == 0.0


def test_a_fit_far_from_its_architecture_is_refused_without_a_reason():
    """An H200 and an H100 SXM have the same SMs and clocks: a fit that puts the H200's prefill
    attention at half of the H100's calibration (as the first H200 fit did) is refused, and kept
    only with a stated reason, which the calibration then carries."""
    from simulator.calibration.crosscheck import disagreements, require_agreement
    from simulator.errors import ProfileError

    h100, h200 = load_hardware("h100-sxm"), load_hardware("h200-sxm", calibration=False)
    same = h200.efficiency.model_copy(update=dict(
        attention_seq=h100.efficiency.attention_seq,
        attention_efficiency=h100.efficiency.attention_efficiency,
        gemm_tokens=h100.efficiency.gemm_tokens,
        gemm_efficiency=h100.efficiency.gemm_efficiency,
    ))  # fmt: skip
    assert disagreements(same, h200, [h100]) == []
    half = same.model_copy(update=dict(
        attention_efficiency=tuple(e / 2 for e in h100.efficiency.attention_efficiency)
    ))  # fmt: skip
    lines = disagreements(half, h200, [h100])
    assert len(lines) == 3 and all(
        "prefill attention" in line and "-50%" in line for line in lines
    )
    # another architecture is not compared
    assert disagreements(half, h200.model_copy(update={"architecture": "ampere"}), [h100]) == []
    with pytest.raises(ProfileError, match="accept-difference"):
        require_agreement(half, h200, None)
    kept = require_agreement(half, h200, "a different kernel ran")
    assert "a different kernel ran" in kept.sources["cross_check"]


@pytest.mark.parametrize(
    ("text", "needle"),
    [("garbage", "not a bench result"), ("", "not a bench result"),
     ('{"results": {}}', "holds no measurements"),
     ('{"results": {"hbm": {"copy_s": 1}}}', "malformed")],
)  # fmt: skip
def test_calibrate_from_a_garbled_or_empty_micro_json_is_one_line(tmp_path, text, needle):
    """Regression cases of the CLI-edges issue (they raised JSONDecodeError and KeyError)."""
    from simulator.calibration.fit_saved import fit_saved
    from simulator.errors import ProfileError

    (tmp_path / "micro.json").write_text(text)
    with pytest.raises(ProfileError, match=needle):
        fit_saved(tmp_path, hardware="h100-sxm", model="llama-3.1-8b", out=str(tmp_path / "o"))
