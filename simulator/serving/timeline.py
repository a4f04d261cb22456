"""Per-request timeline of a simulated run: a CSV for analysis, a Chrome trace for a look.

The CSV has one row per request: arrival, admission, first token and finish times (seconds from
the first arrival), lengths, prefix-cache hits, preemptions, the replica that served it, and the
derived TTFT / TPOT / E2E / queueing delay.

The Chrome trace (``chrome://tracing`` or https://ui.perfetto.dev) draws each replica as a
process and each request as a row with three slices: ``queued`` (arrival to admission),
``prefill`` (admission to first token) and ``decode`` (first token to finish).
"""

from __future__ import annotations

import csv
import io
import json
import os
from pathlib import Path

import numpy as np

from ..files import write_atomic
from .results import time_per_output_token

__all__ = ["timeline_rows", "write_timeline_csv", "write_chrome_trace"]

COLUMNS = (
    "request",
    "replica",
    "arrival_s",
    "admitted_s",
    "first_token_s",
    "finish_s",
    "prompt_tokens",
    "output_tokens",
    "cached_tokens",
    "preemptions",
    "queue_s",
    "ttft_s",
    "tpot_s",
    "e2e_s",
)


def timeline_rows(result) -> list[dict]:
    """One dict per request (times relative to the first arrival)."""
    arrival = result.arrival_s
    if arrival.size == 0:
        return []
    origin = float(np.nanmin(arrival))
    tpot = time_per_output_token(result.first_token_s, result.finish_s, result.output_tokens)
    rows = []
    for i in range(arrival.size):
        a, admit = float(arrival[i]), float(result.admit_s[i])
        first, finish = float(result.first_token_s[i]), float(result.finish_s[i])
        output = int(result.output_tokens[i])
        rows.append(
            {
                "request": i,
                "replica": int(result.replica[i]),
                "arrival_s": a - origin,
                "admitted_s": admit - origin,
                "first_token_s": first - origin,
                "finish_s": finish - origin,
                "prompt_tokens": int(result.prompt_tokens[i]),
                "output_tokens": output,
                "cached_tokens": int(result.cached_tokens[i]),
                "preemptions": int(result.request_preemptions[i]),
                "queue_s": admit - a,
                "ttft_s": first - a,
                "tpot_s": float(tpot[i]),
                "e2e_s": finish - a,
            }
        )
    return rows


def write_timeline_csv(result, path: str | os.PathLike[str]) -> Path:
    handle = io.StringIO(newline="")
    writer = csv.DictWriter(handle, fieldnames=COLUMNS)
    writer.writeheader()
    for row in timeline_rows(result):
        writer.writerow({k: (f"{v:.9g}" if isinstance(v, float) else v) for k, v in row.items()})
    return write_atomic(path, handle.getvalue())


def write_chrome_trace(result, path: str | os.PathLike[str]) -> Path:
    """Chrome trace-event JSON (microseconds), one process per replica, one row per request."""
    events: list[dict] = []
    replicas = sorted(set(result.replica.tolist())) if result.replica.size else []
    for replica in replicas:
        events.append(
            {
                "name": "process_name",
                "ph": "M",
                "pid": replica,
                "args": {"name": f"replica {replica}"},
            }
        )
    for row in timeline_rows(result):
        pid, tid = row["replica"], row["request"]
        args = {
            "prompt_tokens": row["prompt_tokens"],
            "output_tokens": row["output_tokens"],
            "cached_tokens": row["cached_tokens"],
            "preemptions": row["preemptions"],
        }
        for name, start, end in (
            ("queued", row["arrival_s"], row["admitted_s"]),
            ("prefill", row["admitted_s"], row["first_token_s"]),
            ("decode", row["first_token_s"], row["finish_s"]),
        ):
            if end > start:
                events.append(
                    {
                        "name": name,
                        "cat": "request",
                        "ph": "X",
                        "pid": pid,
                        "tid": tid,
                        "ts": start * 1e6,
                        "dur": (end - start) * 1e6,
                        "args": args,
                    }
                )
    return write_atomic(path, json.dumps({"traceEvents": events, "displayTimeUnit": "ms"}))
