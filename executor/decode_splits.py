"""How the decode-attention kernel (``executor.decode_attention``) chunks the keys of a launch.

Each (sequence, K/V head) pair's keys are split into chunks, one program each, so that a small
batch still fills the GPU; the last program of a pair merges the chunks' partial outputs, over a
power-of-two width that is a compile-time constant (each width is one Triton compile, so a
serving run compiles them all before it is timed: ``split_lengths``).

The launch's grid holds ``split_count`` chunks per pair, fixed when a decode graph is captured
(for the longest sequence the cache may hold). How a sequence uses them is the rule:

- evenly (``BY_WORK = False``): every sequence's own keys over all of the grid's chunks. Sized
  for the launch's longest sequence instead, a short one would fall in the first chunk alone.
  At a graph bucket of 32 or more the grid has one chunk per pair, so one program streams
  each sequence and the batch's longest sequence sets the kernel's time. In an H100 serving
  run, decode steps rose 1.7 ms from 16 sequences (bucket 16, two chunks a pair) to 17
  (bucket 32, one), and at 17-32 sequences of mixed lengths took 1.2-2 ms more than 32 of
  equal length (``studies/serving-validation/NOTES.md``).
- by work (``BY_WORK = True``): the grid keeps at least ``MIN_GRID_SPLITS`` chunks per pair,
  and each program sums the batch's lengths and takes chunks of about 1/``TARGET_PROGRAMS``
  of all the launch's keys: a long sequence gets several chunks, a short one one, and the
  chunks it leaves unused exit at once. Equal lengths split as evenly.

Rounded down (``ROUND_DOWN``), a sequence takes ``length // chunk`` chunks instead of
``ceil(length / chunk)``: chunks of at least the chunk size, so the launch's working programs
stay at about ``TARGET_PROGRAMS`` instead of up to one more per pair. It matters where they
must fit in one wave: the kernel's 128-key tile with three pipeline stages takes 136 KiB of
shared memory, one program per SM (compiled for sm_90), and one sequence of 1,025 keys took
17 chunks of 64 keys per K/V head, 136 programs for the H100's 132 SMs: 14.8 us a layer,
against 9.6 rounded down (the kernel alone on an H100, ``studies/serving-validation/
h100-occupancy-2026-12-07/kernel-sweep-bf16.json``). Rounded down is the default.

By work is the default: on an H100, a decode graph step of 16 sequences of mixed lengths
(mean 1,132 keys, longest 4,472) took 9.19 ms against 10.98 split evenly, and of 32 (mean 943)
9.39 against 10.55; in the 8B plan's serving run, decode steps of 17-32 sequences went from
1.40x to 1.23-1.27x the prediction (``studies/serving-validation/h100-by-work-2026-12-07/``).
"""

from __future__ import annotations

__all__ = ["split_count", "split_lengths", "split_width", "splits_of"]

MIN_KEYS_PER_SPLIT = 64
TARGET_PROGRAMS = 256  # about two per SM on an H100 or H200 (132 SMs each)
MIN_GRID_SPLITS = 4  # by work: a sequence up to 4x the batch's mean still spreads
BY_WORK = True
ROUND_DOWN = True  # by work: a sequence's chunks rounded down (see above)


def split_count(batch: int, kv_heads: int, kv_length: int) -> int:
    """The grid's chunks per sequence and K/V head: enough programs to fill the GPU (and, by
    work, at least ``MIN_GRID_SPLITS``), each with at least ``MIN_KEYS_PER_SPLIT`` keys."""
    wanted = -(-TARGET_PROGRAMS // (batch * kv_heads))
    if BY_WORK:
        wanted = max(wanted, MIN_GRID_SPLITS)
    return max(1, min(wanted, -(-kv_length // MIN_KEYS_PER_SPLIT)))


def splits_of(batch: int, kv_heads: int, kv_length: int) -> int:
    """The grid's chunks of a launch: ``split_count``, none left empty at ``kv_length``."""
    keys_per_split = -(-kv_length // split_count(batch, kv_heads, kv_length))
    return -(-kv_length // keys_per_split)


def split_width(batch: int, kv_heads: int, kv_length: int) -> int:
    """The kernel's split-merge width (``BLOCK_SPLITS``): the chunks, to the next power of two.
    A compile-time constant, so each width is a compile."""
    return 1 << (splits_of(batch, kv_heads, kv_length) - 1).bit_length()


def split_lengths(kv_heads: int, max_length: int) -> list[int]:
    """Key counts (``kv_length``) at which one sequence's call meets every ``split_width`` that
    any batch with sequences of up to ``max_length`` keys can: a serving run compiles all of
    them before it is timed (``executor.serving_warmup``). One sequence has the most splits,
    so its widths include every batch's."""
    lengths, widths, length = [], set(), 1
    while length <= max_length:
        width = split_width(1, kv_heads, length)
        if width not in widths:
            widths.add(width)
            lengths.append(length)
        length *= 2
    if split_width(1, kv_heads, max_length) not in widths:
        lengths.append(max_length)
    return lengths
