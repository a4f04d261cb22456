"""Every measured iteration of ``tune validate --traffic``, one CSV row each (``--iterations
PATH.csv``): which load, which execution path, its tokens, decodes and chunks, and its
predicted, measured, host, GPU and issue seconds (``executor.serving_loop.IterationRecord``).
The study scripts read them back to draw decode steps by batch and to summarize a call."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace
from typing import Any

__all__ = ["ITERATION_COLUMNS", "read_iterations", "write_iterations"]

ITERATION_COLUMNS = ("load", "index", "path", "tokens", "decodes", "chunks", "predicted_s",
                     "step_s", "host_s", "device_s", "compiles", "issued_s")  # fmt: skip


def write_iterations(path: Path, load: str, records: list[Any], *, append: bool) -> None:
    """One CSV row per measured iteration of ``load`` (``IterationRecord``), after a header
    unless ``append``."""
    import csv

    with path.open("a" if append else "w", newline="") as out:
        writer = csv.writer(out)
        if not append:
            writer.writerow(ITERATION_COLUMNS)
        for index, r in enumerate(records):
            device, issued = getattr(r, "device_s", None), getattr(r, "issued_s", None)
            writer.writerow([load, index, r.path, r.tokens, r.decodes, r.chunks,
                             f"{r.predicted_s:.6g}", f"{r.step_s:.6g}", f"{r.host_s:.6g}",
                             "" if device is None else f"{device:.6g}",
                             getattr(r, "compiles", 0),
                             "" if issued is None else f"{issued:.6g}"])  # fmt: skip


def read_iterations(path: Path) -> dict[str, list[SimpleNamespace]]:
    """``write_iterations``' rows back, by load in the run's order: records with the fields of
    ``IterationRecord`` that ``decode_steps`` and ``_iteration_means`` read (``issued_s`` None
    in files written before it was measured)."""
    import csv

    by_load: dict[str, list[SimpleNamespace]] = {}
    with path.open(newline="") as source:
        for row in csv.DictReader(source):
            by_load.setdefault(row["load"], []).append(SimpleNamespace(
                path=row["path"], tokens=int(row["tokens"]), decodes=int(row["decodes"]),
                chunks=int(row["chunks"]), predicted_s=float(row["predicted_s"]),
                step_s=float(row["step_s"]), host_s=float(row["host_s"]),
                device_s=float(row["device_s"]) if row["device_s"] else None,
                compiles=int(row["compiles"]),
                issued_s=float(row["issued_s"]) if row.get("issued_s") else None))  # fmt: skip
    return by_load
