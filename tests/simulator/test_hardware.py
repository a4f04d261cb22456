"""Hardware profiles: every profile loads and obeys the datasheet contract; goldens for the GPUs
the cost model is anchored on; errors are one clear line; calibration overlays; curves behave."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from simulator.data.curves import ScalarCurves, attention_efficiency, gemm_efficiency
from simulator.data.hardware import (
    describe_hardware,
    list_hardware,
    load_hardware,
    write_calibration,
)
from simulator.data.specs import Efficiency
from simulator.errors import ProfileError, UnknownHardwareError

PROFILES = list_hardware()
HOPPER = {"h100-sxm", "h100-pcie", "h100-nvl", "h200-sxm"}


def test_all_nine_profiles_are_listed():
    assert PROFILES == sorted(
        [
            "a100-sxm-80gb",
            "b200",
            "h100-nvl",
            "h100-pcie",
            "h100-sxm",
            "h200-sxm",
            "l40s",
            "mi300x",
            "t4",
        ]
    )


@pytest.mark.parametrize("name", PROFILES)
def test_profile_contract(name):
    spec = load_hardware(name, calibration=False)
    assert spec.name == name
    for value in (
        spec.hbm_bytes,
        spec.hbm_bytes_per_s,
        spec.l2_bytes,
        spec.scale_up_bytes_per_s,
        spec.scale_out_bytes_per_s,
        spec.pcie_bytes_per_s,
        spec.vector_flops_per_s,
    ):
        assert value > 0
    assert {"compute", "memory"} <= set(spec.sources), f"{name}: sources {sorted(spec.sources)}"
    assert spec.scale_up_kind in {"nvlink", "pcie", "infinity-fabric"}
    # Tensor peaks dwarf the vector rate; a sparse figure slipped in would still pass this, the
    # per-architecture checks below catch that.
    assert spec.peak("bf16") > spec.vector_flops_per_s
    if spec.price_per_hour is not None:
        assert "price" in spec.sources
    assert describe_hardware(spec)[0][1].startswith(spec.display_name)


@pytest.mark.parametrize("name", sorted(HOPPER))
def test_hopper_dense_peaks(name):
    spec = load_hardware(name, calibration=False)
    peaks = spec.peak_flops_per_s
    assert peaks["fp8"] == pytest.approx(2 * peaks["bf16"], rel=1e-3), (
        f"{name}: fp8 {peaks['fp8']:.4g} should be 2 x bf16 {peaks['bf16']:.4g} (dense)"
    )
    assert peaks["int8"] == pytest.approx(peaks["fp8"], rel=1e-3)
    assert "int4" not in peaks, "Hopper has no int4 tensor cores"
    assert peaks["bf16"] <= 989.4e12, "above the SXM dense peak: a sparsity figure?"


def test_h100_sxm_golden():
    spec = load_hardware("h100-sxm", calibration=False)
    assert spec.peak("bf16") == 989.4e12
    assert spec.peak("fp8") == 1978.9e12
    assert spec.hbm_bytes_per_s == 3.35e12
    assert spec.hbm_bytes == 80e9
    assert spec.scale_up_bytes_per_s == 450e9
    # ridge = 989.4e12 FLOP/s / 3.35e12 B/s = 295.3 FLOP/byte
    assert spec.ridge_bf16 == pytest.approx(295.3, abs=0.5), spec.ridge_bf16


def test_h200_golden():
    spec = load_hardware("h200-sxm", calibration=False)
    assert spec.hbm_bytes_per_s == 4.8e12
    assert spec.hbm_bytes == 141e9
    assert spec.peak("bf16") == load_hardware("h100-sxm", calibration=False).peak("bf16")


@pytest.mark.parametrize(("name", "mib"), [("h100-sxm", 81_559), ("h200-sxm", 143_771)])
def test_usable_memory_is_what_the_driver_reports(name, mib):
    """Every engine's memory fraction multiplies the driver's total (81,559 MiB on an H100 SXM
    80GB, 85.5e9 bytes), so the simulator's KV budget must too, not the datasheet's 80 GB."""
    from simulator.cost.configs import ConfigArrays
    from simulator.cost.memory import memory_per_gpu
    from simulator.data.models import get_model
    from simulator.data.specs import DeploymentConfig

    spec = load_hardware(name, calibration=False)
    assert spec.memory_reported_bytes == mib * 2**20
    config = DeploymentConfig(gpu_memory_utilization=0.9)
    memory = memory_per_gpu(get_model("llama-3.1-8b"), spec, ConfigArrays.from_configs([config]))
    assert memory.capacity_bytes[0] == pytest.approx(0.9 * mib * 2**20)


def test_special_dtypes():
    assert "fp4" in load_hardware("b200").peak_flops_per_s
    assert "fp8" not in load_hardware("a100-sxm-80gb").peak_flops_per_s
    assert "int4" in load_hardware("a100-sxm-80gb").peak_flops_per_s
    t4 = load_hardware("t4")
    assert "bf16" not in t4.peak_flops_per_s and t4.peak("bf16") == t4.peak("fp16")


@pytest.mark.parametrize("spelling", ["H100-SXM", "h100_sxm", "h100", " H100 SXM "])
def test_name_spellings(spelling):
    assert load_hardware(spelling).name == "h100-sxm"


def test_load_is_cached():
    assert load_hardware("h100-sxm") is load_hardware("H100_SXM")


def test_unknown_name_suggests():
    with pytest.raises(UnknownHardwareError) as info:
        load_hardware("h1000")
    message = str(info.value)
    assert "did you mean h100-sxm?" in message
    assert "known: a100-sxm-80gb" in message


def test_malformed_yaml_is_one_line(tmp_path):
    bad = tmp_path / "broken.yaml"
    bad.write_text("name: broken\npeak_flops_per_s: {bf16: 1.0e12\nsm_count: 4\n")
    with pytest.raises(ProfileError) as info:
        load_hardware(bad)
    message = str(info.value)
    assert "broken.yaml" in message and "\n" not in message, message


PROFILE_DIR = Path(__file__).parents[2] / "hardware_profiles"


def test_failing_field_names_the_field(tmp_path):
    bad = tmp_path / "negative.yaml"
    bad.write_text(
        (PROFILE_DIR / "h100-sxm.yaml")
        .read_text()
        .replace("hbm_bytes_per_s: 3.35e12", "hbm_bytes_per_s: -1.0")
    )
    with pytest.raises(ProfileError) as info:
        load_hardware(bad)
    message = str(info.value)
    assert "negative.yaml" in message and "hbm_bytes_per_s" in message and "\n" not in message


def _write_calibration_file(path: Path, gpu: str, hbm: float) -> Path:
    path.write_text(
        yaml.safe_dump(
            {
                "gpu": gpu,
                "efficiency": {"hbm": hbm, "kernel_graph_s": 2.0e-6},
                "provenance": {
                    "gpu_name": "NVIDIA H100 80GB HBM3",
                    "driver": "550.54",
                    "date": "2025-01-01",
                },
            }
        )
    )
    return path


def test_calibration_overlay(tmp_path):
    path = _write_calibration_file(tmp_path / "cal.yaml", "h100-sxm", hbm=0.91)
    spec = load_hardware("h100-sxm", calibration=path)
    assert spec.efficiency.hbm == 0.91
    assert spec.efficiency.kernel_graph_s == 2.0e-6
    assert spec.efficiency.provenance["driver"] == "550.54"
    assert spec.efficiency.source.startswith("calibrated")
    # Untouched fields keep the literature defaults.
    defaults = load_hardware("h100-sxm", calibration=False).efficiency
    assert spec.efficiency.gemm_efficiency == defaults.gemm_efficiency
    assert defaults.hbm == 0.85


def test_calibration_for_another_gpu_is_refused(tmp_path):
    path = _write_calibration_file(tmp_path / "cal.yaml", "a100-sxm-80gb", hbm=0.9)
    with pytest.raises(ProfileError, match="not 'h100-sxm'"):
        load_hardware("h100-sxm", calibration=path)


def test_profile_efficiency_block_overrides_defaults():
    pcie = load_hardware("h100-pcie", calibration=False).efficiency
    sxm = load_hardware("h100-sxm", calibration=False).efficiency
    assert pcie.collective_latency_s > sxm.collective_latency_s
    assert pcie.hbm == sxm.hbm


@pytest.fixture
def calibration_dir(tmp_path, monkeypatch):
    """A private calibration directory; the load cache is cleared after so no test sees it."""
    import hardware_profiles
    from simulator.data import hardware

    monkeypatch.setattr(hardware_profiles, "CALIBRATION_DIR", tmp_path / "calibration")
    yield tmp_path / "calibration"
    hardware._load_cached.cache_clear()


def test_write_calibration_round_trip(calibration_dir):
    measured = Efficiency(
        hbm=0.88, gemm_efficiency=(0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.78, 0.8, 0.82)
    )
    path = write_calibration("H100", efficiency=measured, provenance={"torch": "2.5.1"})
    assert path == calibration_dir / "h100-sxm.yaml"
    spec = load_hardware("h100-sxm")
    assert spec.efficiency.hbm == 0.88
    assert spec.efficiency.gemm_efficiency[-1] == 0.82
    assert spec.efficiency.provenance == {"torch": "2.5.1"}


# -- efficiency curves ------------------------------------------------------------------------

DEFAULTS = Efficiency()


def test_gemm_curve_is_monotone():
    tokens = np.logspace(0, 16, 200, base=2)
    eff = gemm_efficiency(DEFAULTS, tokens)
    assert np.all(np.diff(eff) >= 0)


def test_gemm_curve_clamps_and_hits_knots():
    assert gemm_efficiency(DEFAULTS, 0.0) == DEFAULTS.gemm_efficiency[0]
    assert gemm_efficiency(DEFAULTS, 1e9) == DEFAULTS.gemm_efficiency[-1]
    assert gemm_efficiency(DEFAULTS, 256) == pytest.approx(0.65)
    # halfway between 128 and 256 in log2, the geometric mean (the curves are log-log)
    assert gemm_efficiency(DEFAULTS, 128 * 2**0.5) == pytest.approx((0.55 * 0.65) ** 0.5)


def test_attention_time_rises_between_fast_rising_knots():
    """Flash attention on an H100 nearly quadruples its efficiency from 512 to 1024 tokens
    (studies/executor-h100/micro.json) while its time barely grows. The log-log curve takes
    that as measured, and time (~ seq^2 / efficiency) still never falls between the knots."""
    eff = Efficiency(attention_seq=(512, 1024, 2048), attention_efficiency=(0.038, 0.143, 0.41))
    seq = np.logspace(9, 11, 400, base=2)
    time = seq**2 / attention_efficiency(eff, seq)
    assert np.all(np.diff(time) >= -1e-9 * time[1:])
    assert attention_efficiency(eff, 1024) == pytest.approx(0.143)


def test_a_knot_that_would_make_more_work_faster_is_refused():
    with pytest.raises(ValueError, match="rises too steeply"):
        Efficiency(attention_seq=(512, 1024), attention_efficiency=(0.03, 0.13))  # > 4x
    with pytest.raises(ValueError, match="rises too steeply"):
        Efficiency(gemm_tokens=(64, 128), gemm_efficiency=(0.2, 0.41))  # > 2x


def test_gemm_curve_is_vectorized():
    tokens = np.array([[1, 64, 4096], [8, 512, 1e6]])
    low = np.array([False, True, False])
    eff = gemm_efficiency(DEFAULTS, tokens, low_precision=low)
    assert eff.shape == tokens.shape
    for index in np.ndindex(tokens.shape):
        scalar = gemm_efficiency(DEFAULTS, tokens[index], low_precision=bool(low[index[1]]))
        assert eff[index] == pytest.approx(float(scalar))
    assert eff[0, 1] == pytest.approx(0.45 * DEFAULTS.low_precision_gemm_factor)


def test_attention_curve():
    seq = np.array([1, 128, 16384, 1e7])
    eff = attention_efficiency(DEFAULTS, seq)
    assert eff.shape == seq.shape
    assert eff[0] == eff[1] == DEFAULTS.attention_efficiency[0]
    assert eff[2] == eff[3] == DEFAULTS.attention_efficiency[-1]


@pytest.mark.parametrize("name", ["defaults", "h100-sxm", "h200-sxm"])
def test_scalar_curves_equal_the_array_curves(name):
    """The simulator's one-value-at-a-time curves are the array curves: below, on, between and
    past every knot."""
    eff = DEFAULTS if name == "defaults" else load_hardware(name).efficiency
    curves = ScalarCurves(eff)
    knots = np.array(sorted({*eff.gemm_tokens, *eff.attention_seq}))
    xs = np.concatenate([[0.5, 1.0, 3.0], knots, knots * 1.37, knots * 0.71, [1e7, 1e9]])
    for x in xs:
        for low in (False, True):
            want = float(gemm_efficiency(eff, x, low_precision=low))
            assert curves.gemm(float(x), low) == pytest.approx(want, rel=1e-12, abs=0)
        want = float(attention_efficiency(eff, x))
        assert curves.attention(float(x)) == pytest.approx(want, rel=1e-12, abs=0)


@pytest.mark.parametrize("name", ["l40s", "h100-pcie", "t4"])
def test_pcie_all_reduce_is_priced_at_measured_bus_bandwidth(name):
    """GPUs that all-reduce over PCIe reach under half of a link's rate (the host's root
    complexes bind: nccl#1639 measures 28 of 64 GB/s on 8 GPUs), so a TP-8 prefill's
    all-reduce moves its bytes at no more than half the link's rate."""
    from simulator.cost.step import StepModel
    from simulator.data.models import get_model
    from simulator.data.specs import DeploymentConfig

    spec = load_hardware(name)
    assert spec.scale_up_kind == "pcie"
    model = StepModel.build(get_model("llama-3.1-8b"), spec, DeploymentConfig(tp=8))
    ops = model.prefill(1, 4096).ops
    i = model.table.names.index("tp_allreduce")
    assert ops.communication_s[0, i] >= ops.bytes[0, i] / (0.5 * spec.scale_up_bytes_per_s)
