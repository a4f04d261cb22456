"""Which GPU is this? NVML (nvidia-ml-py, imported as ``pynvml``) answers, mapped to a profile.

``detect_gpus()`` reads each device's name, memory, clocks and the NVLink / P2P topology between
devices. ``profile_for_name`` maps the marketing name NVML reports to a hardware profile
(``"NVIDIA H100 80GB HBM3" -> "h100-sxm"``, ``"NVIDIA H200" -> "h200-sxm"``).
``require_profile`` is the guard in front of ``tune calibrate``: a calibration measured on one
GPU must never be written into another GPU's profile, so a mismatch (or an unknown GPU) is a
``GpuError`` with a message that says what was found and what to do.

``provenance()`` is what a calibration file records about the measurement: GPU, driver, CUDA,
torch, date and the git commit of the code that measured.
"""

from __future__ import annotations

import datetime
import os
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

from simulator.errors import GpuError

__all__ = [
    "GpuInfo",
    "detect_gpus",
    "profile_for_name",
    "require_profile",
    "provenance",
]


@dataclass
class GpuInfo:
    index: int
    name: str
    memory_bytes: int
    sm_clock_max_hz: float | None = None
    memory_clock_max_hz: float | None = None
    driver: str = ""
    cuda_driver_version: str = ""
    nvlink_active_links: int = 0
    p2p: dict[int, str] = field(default_factory=dict)  # other index -> "nvlink" / "pcie" / "none"

    def as_dict(self) -> dict:
        return asdict(self)


def profile_for_name(gpu_name: str) -> str | None:
    """Hardware profile for an NVML device name (``simulator.data.hardware``'s one name map)."""
    from simulator.data.hardware import profile_for_device

    return profile_for_device(gpu_name)


def _nvml():
    try:
        import pynvml
    except ImportError as error:
        raise GpuError(
            "GPU detection needs nvidia-ml-py (pip install 'rooftune[executor]')"
        ) from error
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as error:
        raise GpuError(f"no NVIDIA driver answered NVML: {error}") from error
    return pynvml


def _text(value) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def detect_gpus() -> list[GpuInfo]:
    """Every NVIDIA GPU NVML sees, with the link kind between each pair."""
    nvml = _nvml()
    try:
        count = nvml.nvmlDeviceGetCount()
        handles = [nvml.nvmlDeviceGetHandleByIndex(i) for i in range(count)]
        driver = _text(nvml.nvmlSystemGetDriverVersion())
        try:
            cuda_version = str(nvml.nvmlSystemGetCudaDriverVersion_v2())
        except nvml.NVMLError:
            cuda_version = ""
        gpus = []
        for index, handle in enumerate(handles):
            info = GpuInfo(
                index=index,
                name=_text(nvml.nvmlDeviceGetName(handle)),
                memory_bytes=int(nvml.nvmlDeviceGetMemoryInfo(handle).total),
                driver=driver,
                cuda_driver_version=cuda_version,
            )
            try:
                info.sm_clock_max_hz = (
                    nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_SM) * 1e6
                )
                info.memory_clock_max_hz = (
                    nvml.nvmlDeviceGetMaxClockInfo(handle, nvml.NVML_CLOCK_MEM) * 1e6
                )
            except nvml.NVMLError:
                pass
            info.nvlink_active_links = _active_nvlinks(nvml, handle)
            for other_index, other in enumerate(handles):
                if other_index != index:
                    info.p2p[other_index] = _link_kind(nvml, handle, other, info)
            gpus.append(info)
        return gpus
    finally:
        nvml.nvmlShutdown()


def _active_nvlinks(nvml, handle) -> int:
    active = 0
    for link in range(getattr(nvml, "NVML_NVLINK_MAX_LINKS", 18)):
        try:
            if nvml.nvmlDeviceGetNvLinkState(handle, link) == nvml.NVML_FEATURE_ENABLED:
                active += 1
        except nvml.NVMLError:
            break
    return active


def _link_kind(nvml, handle, other, info: GpuInfo) -> str:
    try:
        status = nvml.nvmlDeviceGetP2PStatus(handle, other, nvml.NVML_P2P_CAPS_INDEX_NVLINK)
        if status == nvml.NVML_P2P_STATUS_OK:
            return "nvlink"
        status = nvml.nvmlDeviceGetP2PStatus(handle, other, nvml.NVML_P2P_CAPS_INDEX_READ)
        return "pcie" if status == nvml.NVML_P2P_STATUS_OK else "none"
    except (nvml.NVMLError, AttributeError):
        return "nvlink" if info.nvlink_active_links else "unknown"


def require_profile(profile: str | None = None, *, gpu_name: str | None = None) -> str:
    """The profile of the GPU at hand; a GpuError when it is unknown or is not ``profile``."""
    if gpu_name is None:
        gpus = detect_gpus()
        if not gpus:
            raise GpuError("NVML sees no GPU; calibration must run on the GPU it describes")
        gpu_name = gpus[0].name
    detected = profile_for_name(gpu_name)
    if detected is None:
        raise GpuError(
            f"GPU {gpu_name!r} matches no hardware profile; add hardware_profiles/<name>.yaml "
            "(tune hardware list shows the known ones) and pass it with --hardware"
        )
    if profile is not None:
        from simulator.data.hardware import load_hardware

        wanted = load_hardware(profile, calibration=False).name
        if wanted != detected:
            raise GpuError(
                f"this GPU is {gpu_name!r} ({detected}); refusing to write a calibration for "
                f"{wanted}: measure that GPU on a machine that has it"
            )
    return detected


def _git_commit() -> str:
    root = Path(__file__).resolve().parent.parent
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        )
        commit = out.stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=False,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return os.environ.get("ROOFTUNE_COMMIT", "unknown")
    if not commit:
        return os.environ.get("ROOFTUNE_COMMIT", "unknown")
    return commit + ("+dirty" if dirty else "")


def provenance(gpu_name: str | None = None) -> dict[str, str]:
    """GPU, driver, CUDA, torch, date and commit of a measurement made in this process."""
    import torch

    record = {
        "gpu": gpu_name or (torch.cuda.get_device_name(0) if torch.cuda.is_available() else ""),
        "torch": torch.__version__,
        "cuda": str(torch.version.cuda),
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": _git_commit(),
    }
    try:
        gpus = detect_gpus()
        record["driver"] = gpus[0].driver if gpus else ""
        record["gpu_count"] = str(len(gpus))
    except GpuError:
        record["driver"] = "unknown"
    return record
