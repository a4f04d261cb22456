"""How the decode-attention kernel (``executor.decode_attention``) chunks the keys of a launch.

Each (sequence, K/V head) pair's keys are split into chunks, one program each, so that a small
batch still fills the GPU; the last program of a pair merges the chunks' partial outputs, over a
power-of-two width that is a compile-time constant (each width is one Triton compile, so a
serving run compiles them all before it is timed: ``split_lengths``).
"""

from __future__ import annotations

__all__ = ["split_count", "split_lengths", "split_width", "splits_of"]

MIN_KEYS_PER_SPLIT = 64
TARGET_PROGRAMS = 256  # about two per SM on an H100 (132) or H200 (132)


def split_count(batch: int, kv_heads: int, kv_length: int) -> int:
    """Chunks per sequence and K/V head: enough programs to fill the GPU, each with at least
    ``MIN_KEYS_PER_SPLIT`` keys."""
    wanted = -(-TARGET_PROGRAMS // (batch * kv_heads))
    return max(1, min(wanted, -(-kv_length // MIN_KEYS_PER_SPLIT)))


def splits_of(batch: int, kv_heads: int, kv_length: int) -> tuple[int, int]:
    """(keys per chunk, chunks) of a launch: ``split_count`` chunks, none left empty."""
    keys_per_split = -(-kv_length // split_count(batch, kv_heads, kv_length))
    return keys_per_split, -(-kv_length // keys_per_split)


def split_width(batch: int, kv_heads: int, kv_length: int) -> int:
    """The kernel's split-merge width (``BLOCK_SPLITS``): the chunks, to the next power of two.
    A compile-time constant, so each width is a compile."""
    splits = splits_of(batch, kv_heads, kv_length)[1]
    return 1 << (splits - 1).bit_length()


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
