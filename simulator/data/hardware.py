"""Hardware profiles: load, validate and list GPUs; write calibrations.

A GPU is two kinds of numbers kept apart. The *datasheet* (``hardware_profiles/<gpu>.yaml``) says
what the silicon can do at best: dense tensor peaks per dtype, HBM capacity and bandwidth, links.
The *efficiency* says what fraction of that a real kernel reaches. It is assembled in three layers,
later ones overriding field by field:

1. ``hardware_profiles/defaults.efficiency.yaml``: literature values with their sources;
2. the profile's own ``efficiency:`` block, where the literature says that GPU differs
   (collectives over PCIe are slower to start than over NVSwitch, for example);
3. ``hardware_profiles/calibration/<gpu>.yaml``, written by ``tune calibrate`` from measurements
   on that GPU, with the provenance of the measurement (driver, torch, date, commit).

The efficiency's curves are read in ``simulator.data.curves``.

Loads are cached (the tuner asks for the same GPU thousands of times); ``write_calibration``
clears the cache so that the next load sees the new file.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path
from typing import Any

import yaml
from pydantic import ValidationError

import hardware_profiles
from simulator.data.specs import Efficiency, HardwareSpec
from simulator.errors import ProfileError, UnknownHardwareError, one_line
from simulator.files import write_atomic
from simulator.units import TERA, format_bytes, format_rate

__all__ = [
    "list_hardware",
    "load_hardware",
    "calibration_path",
    "profile_for_device",
    "write_calibration",
    "describe_hardware",
]

DEFAULTS_FILE_NAME = "defaults.efficiency.yaml"

# The one GPU-name map: what NVML reports for a device (lowercased; first match wins) and the
# short names people type, each mapped to the profile it means.
_DEVICE_NAMES: tuple[tuple[str, str], ...] = (
    (r"h200 nvl", ""),  # the PCIe-card H200 has no profile yet
    (r"h100.*nvl", "h100-nvl"),
    (r"h100.*pcie", "h100-pcie"),
    (r"h100", "h100-sxm"),  # "NVIDIA H100 80GB HBM3" is the SXM5 part
    (r"h200", "h200-sxm"),  # "NVIDIA H200" (SXM); the NVL part reports "H200 NVL"
    (r"a100.*80", "a100-sxm-80gb"),
    (r"b200", "b200"),
    (r"l40s", "l40s"),
    (r"tesla t4|\bt4\b", "t4"),
)
_ALIASES: dict[str, str] = {
    "h100": "h100-sxm",
    "h100-sxm5": "h100-sxm",
    "h100-80gb": "h100-sxm",
    "h200": "h200-sxm",
    "a100": "a100-sxm-80gb",
    "a100-80gb": "a100-sxm-80gb",
    "a100-sxm": "a100-sxm-80gb",
    "b200-hgx": "b200",
    "mi300": "mi300x",
    "tesla-t4": "t4",
    "l40-s": "l40s",
}

# PyYAML follows YAML 1.1, where ``3.35e12`` (exponent without a sign) is a string. Datasheet
# numbers are written that way, so this loader reads them as floats.
_FLOAT = re.compile(
    r"^[-+]?(?:[0-9][0-9_]*\.[0-9_]*(?:[eE][-+]?[0-9]+)?|[0-9][0-9_]*[eE][-+]?[0-9]+)$"
)


_BaseLoader: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml where installed


class _Loader(_BaseLoader):
    pass


_Loader.add_implicit_resolver("tag:yaml.org,2002:float", _FLOAT, list("-+0123456789"))


def profile_for_device(device_name: str) -> str | None:
    """The hardware profile of a device name as NVML or ``torch.cuda`` reports it
    (``"NVIDIA H100 80GB HBM3"`` -> ``"h100-sxm"``); None when no profile matches."""
    lowered = device_name.lower()
    for pattern, profile in _DEVICE_NAMES:
        if re.search(pattern, lowered):
            return profile or None
    return None


def _profile_dir() -> Path:
    return hardware_profiles.PROFILE_DIR


def _calibration_dir() -> Path:
    return hardware_profiles.CALIBRATION_DIR


def list_hardware() -> list[str]:
    """Names of every profile in ``hardware_profiles/``, sorted."""
    return sorted(
        path.stem
        for path in _profile_dir().glob("*.yaml")
        if not path.name.startswith("defaults.")
    )


def _normalize(name: str) -> str:
    """``'H100_SXM '`` -> ``'h100-sxm'``."""
    return re.sub(r"[\s_]+", "-", name.strip().lower())


def _resolve_name(name: str) -> str:
    """The canonical profile name for what a user typed, or an UnknownHardwareError."""
    known = list_hardware()
    wanted = _normalize(name)
    if wanted in known:
        return wanted
    if wanted in _ALIASES and _ALIASES[wanted] in known:
        return _ALIASES[wanted]
    compact = {k.replace("-", ""): k for k in known}
    if wanted.replace("-", "") in compact:
        return compact[wanted.replace("-", "")]
    # Suggest from names and aliases alike, so that 'h1000' finds 'h100' and thus 'h100-sxm'.
    candidates = {k: k for k in known} | {a: p for a, p in _ALIASES.items() if p in known}
    import difflib  # only for a name not found: not at start-up

    close = difflib.get_close_matches(wanted, list(candidates), n=1, cutoff=0.5)
    hint = f" (did you mean {candidates[close[0]]}?)" if close else ""
    raise UnknownHardwareError(f"unknown GPU {name!r}; known: {', '.join(known)}{hint}")


def _looks_like_path(text: str) -> bool:
    return text.endswith((".yaml", ".yml")) or "/" in text or os.sep in text


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


def _read_yaml(path: Path) -> dict[str, Any]:
    """A YAML mapping from ``path``, or a one-line ProfileError naming the file and the problem."""
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ProfileError(f"{path}: cannot read: {exc.strerror or exc}") from exc
    try:
        data = yaml.load(text, Loader=_Loader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark
        where = f":{mark.line + 1}:{mark.column + 1}" if mark is not None else ""
        raise ProfileError(_one_line(f"{path}{where}: {exc.problem or exc}")) from exc
    except yaml.YAMLError as exc:
        raise ProfileError(_one_line(f"{path}: {exc}")) from exc
    if not isinstance(data, dict):
        raise ProfileError(f"{path}: expected a mapping of fields, got {type(data).__name__}")
    return data


def _overlay(base: Efficiency, fields: Any, *, path: Path, source: str | None) -> Efficiency:
    """``base`` with ``fields`` replacing its own; the ``sources`` maps are merged."""
    if fields is None:
        return base
    if not isinstance(fields, dict):
        raise ProfileError(f"{path}: efficiency: expected a mapping of Efficiency fields")
    merged = base.model_dump() | fields
    merged["sources"] = base.sources | dict(fields.get("sources") or {})
    if source is not None and "source" not in fields:
        merged["source"] = source
    try:
        return Efficiency(**merged)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {one_line(exc, 'efficiency')}") from exc
    except TypeError as exc:  # a non-string key in the YAML mapping
        raise ProfileError(_one_line(f"{path}: efficiency: {exc}")) from exc


@functools.lru_cache(maxsize=1)
def _default_efficiency(path: Path) -> Efficiency:
    data = _read_yaml(path)
    try:
        return Efficiency(**data)
    except ValidationError as exc:
        raise ProfileError(f"{path}: {one_line(exc)}") from exc


def _apply_calibration(spec_name: str, efficiency: Efficiency, path: Path) -> Efficiency:
    data = _read_yaml(path)
    gpu = data.get("gpu")
    if gpu is None:
        raise ProfileError(f"{path}: missing 'gpu' (the profile this calibration measured)")
    if _normalize(str(gpu)) != spec_name:
        raise ProfileError(
            f"{path}: calibration is for GPU {gpu!r}, not {spec_name!r}; "
            "measure this GPU with `tune calibrate` or pass calibration=False"
        )
    if "efficiency" not in data:
        raise ProfileError(f"{path}: missing 'efficiency' (the measured fields)")
    provenance = data.get("provenance") or {}
    if not isinstance(provenance, dict):
        raise ProfileError(f"{path}: provenance: expected a mapping")
    fields = dict(data["efficiency"] or {})
    fields["provenance"] = {str(k): str(v) for k, v in provenance.items()}
    if fields.get("source") in (None, "literature defaults"):
        fields["source"] = f"calibrated ({path.name})"
    return _overlay(efficiency, fields, path=path, source=None)


@functools.lru_cache(maxsize=128)
def _load_cached(profile_path: Path, calibration: bool | Path) -> HardwareSpec:
    data = _read_yaml(profile_path)
    if profile_path.parent == _profile_dir() and data.get("name") != profile_path.stem:
        raise ProfileError(
            f"{profile_path}: name {data.get('name')!r} differs from the file name "
            f"{profile_path.stem!r}"
        )
    efficiency = _default_efficiency(_profile_dir() / DEFAULTS_FILE_NAME)
    own = data.pop("efficiency", None)
    name = str(data.get("name", profile_path.stem))
    efficiency = _overlay(
        efficiency, own, path=profile_path, source=f"literature defaults, {name} overrides"
    )
    if calibration is True:
        default_calibration = _calibration_dir() / f"{name}.yaml"
        if default_calibration.is_file():
            efficiency = _apply_calibration(name, efficiency, default_calibration)
    elif isinstance(calibration, Path):
        efficiency = _apply_calibration(name, efficiency, calibration)
    try:
        return HardwareSpec(**data, efficiency=efficiency)
    except ValidationError as exc:
        raise ProfileError(f"{profile_path}: {one_line(exc)}") from exc
    except TypeError as exc:
        raise ProfileError(_one_line(f"{profile_path}: {exc}")) from exc


def load_hardware(
    name_or_path: str | Path, *, calibration: bool | str | Path = True
) -> HardwareSpec:
    """The HardwareSpec of a profile name (``'h100-sxm'``, ``'H100_SXM'``, ``'h100'``) or file.

    ``calibration=True`` applies ``calibration/<gpu>.yaml`` when it exists, ``False`` keeps the
    literature defaults, and a path applies that calibration file (which must be for this GPU).
    """
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or _looks_like_path(text):
        profile_path = Path(text).expanduser().resolve()
        if not profile_path.is_file():
            raise UnknownHardwareError(f"no hardware profile file at {text}")
    else:
        profile_path = (_profile_dir() / f"{_resolve_name(text)}.yaml").resolve()
    calibration_key: bool | Path
    if isinstance(calibration, bool):
        calibration_key = calibration
    else:
        calibration_key = Path(calibration).expanduser().resolve()
        if not calibration_key.is_file():
            raise ProfileError(f"{calibration}: no such calibration file")
    return _load_cached(profile_path, calibration_key)


def calibration_path(name: str) -> Path:
    """Where ``tune calibrate`` keeps the measured efficiency of a GPU profile."""
    return _calibration_dir() / f"{_resolve_name(name)}.yaml"


def write_calibration(
    name: str, *, efficiency: Efficiency, provenance: dict[str, str], path: Path | None = None
) -> Path:
    """Write measured efficiency for a GPU profile; the next ``load_hardware`` applies it (or
    write it to ``path``, applied when asked for by that path).

    The file is ``{gpu, efficiency: {...}, provenance: {...}}``; it is written to a temporary file
    and renamed, so a reader never sees half of it.
    """
    gpu = _resolve_name(name)
    path = Path(path) if path is not None else calibration_path(gpu)
    fields = efficiency.model_dump(mode="json", exclude={"provenance"})
    document = {
        "gpu": gpu,
        "efficiency": fields,
        "provenance": {str(k): str(v) for k, v in provenance.items()},
    }
    write_atomic(path, yaml.safe_dump(document, sort_keys=False, default_flow_style=None))
    _load_cached.cache_clear()
    return path


_DTYPE_ORDER = ("bf16", "fp16", "tf32", "fp8", "int8", "int4", "fp4")


def describe_hardware(spec: HardwareSpec) -> list[tuple[str, str]]:
    """Rows of (label, value) for ``tune hardware show``."""
    rows: list[tuple[str, str]] = [
        ("GPU", f"{spec.display_name} ({spec.name})"),
        ("vendor", spec.vendor),
    ]
    for dtype in sorted(spec.peak_flops_per_s, key=_DTYPE_ORDER.index):
        unit = "TOP/s" if dtype.startswith("int") else "TFLOP/s"
        rows.append(
            (f"peak {dtype} (dense)", f"{spec.peak_flops_per_s[dtype] / TERA:,.1f} {unit}")
        )
    rows += [
        ("vector fp32", f"{spec.vector_flops_per_s / TERA:,.1f} TFLOP/s"),
        ("memory", format_bytes(spec.hbm_bytes, 0)),
        (
            "memory the driver reports",
            f"{spec.device_memory_mib:,} MiB" if spec.device_memory_mib else "not known",
        ),
        ("memory bandwidth", format_rate(spec.hbm_bytes_per_s, 2)),
        ("L2 cache", format_bytes(spec.l2_bytes, 0)),
        ("SMs", str(spec.sm_count)),
        ("ridge bf16", f"{spec.ridge_bf16:.0f} FLOP/byte"),
    ]
    if "fp8" in spec.peak_flops_per_s:
        rows.append(("ridge fp8", f"{spec.peak('fp8') / spec.hbm_bytes_per_s:.0f} FLOP/byte"))
    else:
        rows.append(("ridge fp8", "n/a (no fp8 tensor cores)"))
    rows += [
        (
            "scale-up",
            f"{spec.scale_up_kind} {format_rate(spec.scale_up_bytes_per_s)} per direction, "
            f"{spec.gpus_per_node} GPUs per node",
        ),
        ("scale-out", f"{format_rate(spec.scale_out_bytes_per_s)} per GPU per direction"),
        ("PCIe", f"{format_rate(spec.pcie_bytes_per_s)} per direction"),
        ("TDP", f"{spec.tdp_watts:.0f} W"),
        (
            "price",
            "n/a" if spec.price_per_hour is None else f"${spec.price_per_hour:.2f} per GPU-hour",
        ),
        ("efficiency", spec.efficiency.source),
    ]
    return rows
