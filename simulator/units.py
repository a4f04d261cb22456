"""SI units: the only module that knows what a "ms" or a "GB/s" is.

Everything inside rooftune is SI: bytes, seconds, FLOP, FLOP/s, bytes/s. Names carry the unit
(``weight_bytes``, ``ttft_s``). Conversion happens only when printing, through the helpers below.
Decimal prefixes throughout (1 GB = 1e9 bytes), as GPU datasheets use them; ``GiB`` is spelled out
where binary units are meant.
"""

from __future__ import annotations

import math
import re

__all__ = [
    "KB",
    "MB",
    "GB",
    "TB",
    "GiB",
    "MiB",
    "US",
    "MS",
    "TERA",
    "PETA",
    "format_bytes",
    "format_seconds",
    "format_rate",
    "format_flops",
    "parse_duration",
    "parse_bytes",
]

KB = 1e3
MB = 1e6
GB = 1e9
TB = 1e12
MiB = 2.0**20
GiB = 2.0**30
US = 1e-6
MS = 1e-3
TERA = 1e12
PETA = 1e15


def _scaled(value: float, steps: list[tuple[float, str]], digits: int) -> str:
    if not math.isfinite(value):
        return str(value)
    for scale, unit in steps:
        if abs(value) >= scale:
            return f"{value / scale:.{digits}f} {unit}"
    scale, unit = steps[-1]
    return f"{value / scale:.{digits}f} {unit}"


def format_bytes(num_bytes: float, digits: int = 2) -> str:
    """``format_bytes(1.6e10) == '16.00 GB'`` (decimal units)."""
    return _scaled(num_bytes, [(TB, "TB"), (GB, "GB"), (MB, "MB"), (KB, "kB"), (1, "B")], digits)


def format_seconds(seconds: float, digits: int = 2) -> str:
    """``format_seconds(0.0123) == '12.30 ms'``."""
    return _scaled(seconds, [(1, "s"), (MS, "ms"), (US, "us"), (1e-9, "ns")], digits)


def format_rate(bytes_per_s: float, digits: int = 1) -> str:
    """Bandwidth: ``format_rate(3.35e12) == '3.4 TB/s'``."""
    return format_bytes(bytes_per_s, digits) + "/s"


def format_flops(flops_per_s: float, digits: int = 1) -> str:
    """Compute rate: ``format_flops(9.89e14) == '989.0 TFLOP/s'``."""
    return _scaled(
        flops_per_s,
        [(PETA, "PFLOP/s"), (TERA, "TFLOP/s"), (1e9, "GFLOP/s"), (1, "FLOP/s")],
        digits,
    )


_DURATION = re.compile(r"^\s*([0-9]*\.?[0-9]+(?:e-?[0-9]+)?)\s*(us|ms|s|min)?\s*$")
_DURATION_SCALE = {"us": US, "ms": MS, "s": 1.0, "min": 60.0, None: 1.0}


def parse_duration(text: str) -> float:
    """``'50ms' -> 0.05``, ``'2s' -> 2.0``, ``'0.3' -> 0.3`` (seconds by default)."""
    match = _DURATION.match(str(text))
    if not match:
        raise ValueError(f"not a duration: {text!r} (examples: 2s, 50ms, 300us)")
    return float(match.group(1)) * _DURATION_SCALE[match.group(2)]


_BYTES = re.compile(r"^\s*([0-9]*\.?[0-9]+)\s*(B|KB|MB|GB|TB|KiB|MiB|GiB)?\s*$", re.IGNORECASE)
_BYTES_SCALE = {
    "b": 1,
    "kb": KB,
    "mb": MB,
    "gb": GB,
    "tb": TB,
    "kib": 1024.0,
    "mib": MiB,
    "gib": GiB,
}


def parse_bytes(text: str) -> float:
    """``'80GB' -> 8e10``, ``'1GiB' -> 1073741824``."""
    match = _BYTES.match(str(text))
    if not match:
        raise ValueError(f"not a size: {text!r} (examples: 80GB, 512MiB)")
    unit = (match.group(2) or "B").lower()
    return float(match.group(1)) * _BYTES_SCALE[unit]
