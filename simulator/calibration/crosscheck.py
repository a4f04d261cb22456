"""A fit must agree with the other calibrations of its architecture, or say why not.

Two GPUs of one architecture (an H100 SXM and an H200: the same SMs, clocks and tensor cores,
different memory) run the same kernel at the same shape at the same fraction of their compute
peak. A fit that puts them far apart more likely measured something else (another kernel, host
time in the timing) than a real difference: the first H200 calibration had prefill attention at
half of the H100's for that reason. So a new fit is compared, at a few shapes of each
compute-bound kernel, with every calibrated profile of the same architecture; past
``TOLERANCE`` it is refused unless the caller states the reason, which is then kept in the
calibration's sources.
"""

from __future__ import annotations

from ..data.curves import attention_efficiency, gemm_efficiency
from ..data.specs import Efficiency, HardwareSpec

__all__ = ["TOLERANCE", "disagreements", "require_agreement"]

TOLERANCE = 0.25  # the largest relative difference accepted without a stated reason
# The compute-bound kernels and shapes compared: prefill attention at query lengths, and the
# large-M GEMM (M = tokens) where tensor cores, not HBM, set the rate.
_SHAPES = {"prefill attention": (2048, 8192, 16384), "bf16 GEMM": (1024, 4096, 8192)}


def _rate(efficiency: Efficiency, kernel: str, shape: int) -> float:
    if kernel == "prefill attention":
        return float(attention_efficiency(efficiency, float(shape)))
    return float(gemm_efficiency(efficiency, float(shape), low_precision=False))


def disagreements(
    fitted: Efficiency,
    profile: HardwareSpec,
    siblings: list[HardwareSpec],
    kernels: set[str] | None = None,
) -> list[str]:
    """One line per kernel and shape where ``fitted`` (for ``profile``) and a calibrated profile
    of the same architecture differ by more than ``TOLERANCE``; only the ``kernels`` this fit
    measured (default: all), since an unmeasured one is the literature default."""
    lines = []
    for other in siblings:
        if other.name == profile.name or other.architecture != profile.architecture:
            continue
        for kernel, shapes in _SHAPES.items():
            if kernels is not None and kernel not in kernels:
                continue
            for shape in shapes:
                mine, theirs = _rate(fitted, kernel, shape), _rate(other.efficiency, kernel, shape)
                if abs(mine / theirs - 1.0) > TOLERANCE:
                    lines.append(
                        f"{kernel} at {shape}: {mine:.2f} of peak on {profile.name}, "
                        f"{theirs:.2f} on {other.name} ({mine / theirs - 1.0:+.0%})"
                    )
    return lines


def require_agreement(
    fitted: Efficiency,
    profile: HardwareSpec,
    reason: str | None,
    *,
    kernels: set[str] | None = None,
) -> Efficiency:
    """``fitted``, with the stated ``reason`` in its sources when it disagrees with another
    calibration of its architecture; without a reason, a disagreement is a ProfileError."""
    from ..data.hardware import list_hardware, load_hardware
    from ..errors import ProfileError

    siblings = [
        spec
        for spec in (load_hardware(name) for name in list_hardware())
        if spec.efficiency.provenance  # measured, not the literature defaults
    ]
    lines = disagreements(fitted, profile, siblings, kernels)
    if not lines:
        return fitted
    if not reason:
        raise ProfileError(
            f"this fit is more than {TOLERANCE:.0%} from another {profile.architecture} "
            f"calibration: {'; '.join(lines[:3])}{' ...' if len(lines) > 3 else ''}; check what "
            "was measured, or pass --accept-difference REASON if the difference is real"
        )
    sources = {**fitted.sources, "cross_check": f"{'; '.join(lines)}. Accepted: {reason}"}
    return fitted.model_copy(update={"sources": sources})
