"""The paged decode kernel's launch, as the studies vary it: its tile (keys a loop step, warps,
pipeline stages: ``executor.decode_attention``) and its chunking (``executor.decode_splits``:
programs aimed at, chunks a pair in the grid). A launch is a dict of those knobs; ``apply``
sets the modules' constants, so everything after it (a sweep's call, a serving run's warm-up,
graphs and timed iterations) launches that way.

``VARIANTS`` are what ``decode_gap.py``'s kernel sweep times, each a change from the modules'
defaults; ``choose`` picks the fastest over a sweep's points; ``with_kernel.py`` runs ``tune``
with a chosen launch."""

from __future__ import annotations

import math
from collections import defaultdict

from executor import decode_attention, decode_splits

KNOBS = {  # knob: (module, constant)
    "block_s": (decode_attention, "BLOCK_S"),
    "warps": (decode_attention, "NUM_WARPS"),
    "stages": (decode_attention, "NUM_STAGES"),
    "fp8_as_f16": (decode_attention, "FP8_AS_F16"),
    "by_work": (decode_splits, "BY_WORK"),
    "round_down": (decode_splits, "ROUND_DOWN"),
    "target_programs": (decode_splits, "TARGET_PROGRAMS"),
    "min_grid_splits": (decode_splits, "MIN_GRID_SPLITS"),
}
DEFAULT = {knob: getattr(module, name) for knob, (module, name) in KNOBS.items()}

# The sweeps behind the kernel as it is (NOTES.md): the block table read a step ahead
# (h100-kernel-2026-12-07/1-sweep-and-plans/: 6-11 % faster than in the step, whose stages
# changed nothing), the new K/V stored first with 128 keys a step (2-stored-first/: 0.77 of
# the time of the launch before it, geometric mean), then two pipeline stages with the chunks
# rounded down (h100-occupancy-2026-12-07/: 0.87 of three stages rounded up). Eight warps,
# four stages and 512 programs were slower at every point and are no longer timed.
VARIANTS: list[dict] = [
    {},
    {"block_s": 64},
    {"min_grid_splits": 8},
    # Shared memory per program (compiled for sm_90, bf16 cache): 72 KiB at two stages (three
    # programs an SM), 136 KiB at three (one). And the programs a launch aims at.
    {"stages": 3},
    {"round_down": False},
    {"target_programs": 128},
    {"target_programs": 384},
    # An FP8 cache's dots in bfloat16 (three conversions an element pair, not one); the same
    # kernel as the defaults with a bf16 cache.
    {"fp8_as_f16": False},
]


def launch_of(change: dict) -> dict:
    """The whole launch: the defaults with ``change`` over them."""
    unknown = set(change) - set(KNOBS)
    if unknown:
        raise ValueError(f"unknown launch knobs: {sorted(unknown)}")
    return {**DEFAULT, **change}


def apply(change: dict) -> dict:
    """Set the modules' constants to the defaults with ``change`` over them; the launch."""
    launch = launch_of(change)
    for knob, value in launch.items():
        module, name = KNOBS[knob]
        setattr(module, name, value)
    return launch


def choose(rows: list[dict], margin: float = 0.02) -> dict:
    """The launch whose times, over every point (and cache) that all launches were timed at,
    have the smallest geometric mean against the defaults'; the defaults unless one is faster
    by more than ``margin`` (a replay's noise). ``rows`` are the sweep's, each with its
    ``launch`` dict, ``point``, ``kv`` and ``us``."""
    times: dict[str, dict[tuple, float]] = defaultdict(dict)
    launches = {}
    for row in rows:
        if "us" not in row:
            continue
        key = repr(sorted(row["launch"].items()))
        launches[key] = row["launch"]
        times[key][(row["point"], row.get("kv", "bf16"))] = row["us"]
    base = repr(sorted(DEFAULT.items()))
    if base not in times:
        raise ValueError("the sweep has no row at the default launch to compare against")
    shared = set.intersection(*(set(t) for t in times.values()))
    if not shared:
        raise ValueError("no point was timed at every launch")

    def ratio(key: str) -> float:
        return math.exp(
            sum(math.log(times[key][p] / times[base][p]) for p in shared) / len(shared)
        )

    best = min(times, key=ratio)
    chosen = best if ratio(best) < 1 - margin else base
    return {"launch": launches.get(chosen, DEFAULT), "ratio": ratio(chosen),
            "points": sorted(map(list, shared))}  # fmt: skip
