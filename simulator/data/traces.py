"""Request traces: JSONL or CSV files of arrival time, prompt tokens and output tokens.

One request per line (JSONL: one object per line; CSV: a header row, then one row per request).
Accepted column names: ``arrival_s`` / ``arrival_time`` / ``timestamp`` (seconds), or
``timestamp_ms`` (milliseconds); ``prompt_tokens`` / ``input_tokens`` / ``input_length``;
``output_tokens`` / ``output_length``. Without an arrival column every request arrives at 0.
A trace is validated when it is read: an empty file, a line that does not parse, a missing
column or a non-positive length is one ``WorkloadError`` naming the file and line.
"""

from __future__ import annotations

import csv
import functools
import json
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import WorkloadError

__all__ = ["Trace", "load_trace"]

_ARRIVAL = {"arrival_s": 1.0, "arrival_time": 1.0, "timestamp": 1.0, "timestamp_ms": 1e-3}
_PROMPT = ("prompt_tokens", "input_tokens", "input_length", "prompt_len")
_OUTPUT = ("output_tokens", "output_length", "output_len")


@dataclass(frozen=True)
class Trace:
    arrival_s: np.ndarray
    prompt: np.ndarray
    output: np.ndarray

    @property
    def timed(self) -> bool:
        """Whether the trace says when its requests arrive (not all at one instant)."""
        return bool(len(self.arrival_s) > 1 and np.ptp(self.arrival_s) > 0)


def load_trace(path: str | os.PathLike[str]) -> Trace:
    """Read and validate a trace (cached per file version)."""
    file = Path(path)
    try:
        stat = file.stat()
    except OSError:
        raise WorkloadError(f"trace file {str(path)!r} not found") from None
    return _load(str(file.resolve()), stat.st_mtime_ns, stat.st_size)


@functools.lru_cache(maxsize=8)
def _load(path: str, mtime_ns: int, size: int) -> Trace:
    del mtime_ns, size  # cache key only
    name = Path(path).name
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise WorkloadError(f"trace {name}: cannot read it ({error})") from None
    if path.endswith(".csv"):
        rows = _csv_rows(name, text)
    else:
        rows = _json_rows(name, text)
    if not rows:
        raise WorkloadError(f"trace {name} holds no requests")
    arrival, prompt, output = [], [], []
    for line, row in rows:
        arrival.append(_arrival(name, line, row))
        prompt.append(_tokens(name, line, row, _PROMPT))
        output.append(_tokens(name, line, row, _OUTPUT))
    order = np.argsort(np.asarray(arrival), kind="stable")
    return Trace(
        arrival_s=np.asarray(arrival)[order],
        prompt=np.asarray(prompt)[order],
        output=np.asarray(output)[order],
    )


def _json_rows(name: str, text: str) -> list[tuple[int, dict]]:
    stripped = text.strip()
    if stripped.startswith("["):  # a JSON array of objects is accepted too
        try:
            items = json.loads(stripped)
        except json.JSONDecodeError as error:
            raise WorkloadError(f"trace {name}: not valid JSON ({error.msg})") from None
        pairs = list(enumerate(items, start=1))
    else:
        pairs = []
        for number, line in enumerate(text.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                pairs.append((number, json.loads(line)))
            except json.JSONDecodeError as error:
                raise WorkloadError(
                    f"trace {name} line {number}: not valid JSON ({error.msg})"
                ) from None
    for number, item in pairs:
        if not isinstance(item, dict):
            raise WorkloadError(f"trace {name} line {number}: expected an object")
    return pairs


def _csv_rows(name: str, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(text.splitlines())
    if not reader.fieldnames:
        return []
    rows = []
    for number, row in enumerate(reader, start=2):
        if None in row or any(v is None for v in row.values()):
            raise WorkloadError(f"trace {name} line {number}: wrong number of columns")
        rows.append((number, {k.strip(): v for k, v in row.items()}))
    return rows


def _number(name: str, line: int, key: str, value) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise WorkloadError(f"trace {name} line {line}: {key}={value!r} is not a number") from None
    if not math.isfinite(number):
        raise WorkloadError(f"trace {name} line {line}: {key} is not finite")
    return number


def _arrival(name: str, line: int, row: dict) -> float:
    for key, scale in _ARRIVAL.items():
        if key in row:
            value = _number(name, line, key, row[key]) * scale
            if value < 0:
                raise WorkloadError(f"trace {name} line {line}: negative arrival time")
            return value
    return 0.0


def _tokens(name: str, line: int, row: dict, keys: tuple[str, ...]) -> int:
    for key in keys:
        if key in row:
            value = _number(name, line, key, row[key])
            if value < 1 or value != int(value):
                raise WorkloadError(
                    f"trace {name} line {line}: {key} must be a positive integer, got {row[key]!r}"
                )
            return int(value)
    raise WorkloadError(
        f"trace {name} line {line}: no {keys[0]} column (accepted: {', '.join(keys)})"
    )
