"""What the serving loop does before it is timed: every kernel variant compiled, every graph
captured, so that no compile or capture lands inside a measured iteration (a Triton compile
takes seconds: one in a timed run is a latency percentile).

Triton compiles a kernel once per combination of its compile-time constants and of how its
integer arguments specialize (1, a multiple of 16, or neither). ``warm_up`` runs iterations of
token counts that meet each of those, a prompt chunk of each size class up to the token budget
(the library kernels each size picks; the peak activations; the attention plan of each padded
chunk length), then the paged decode kernel at every split-merge width it can use
(``decode_splits.split_lengths``), the plans of every shape a later chunk's attention can take
(``executor.prefix_attention.build_plans``: 144 for a 16k-token model length), then captures
the decode graphs (a speculative round's, and its drafts alone) and the piecewise graphs.
It leaves no trace: its requests are released and its log cleared.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from executor.kv_cache import PagedKVCache
from executor.prefix_attention import build_plans, pays_on
from executor.ragged import ATTENTION_BUCKET

__all__ = ["Step", "paged_attentions", "token_counts", "warm_up"]


@dataclass
class Step:
    """An iteration given by hand (the warm-up's, a benchmark's, a test's): the fields of
    ``simulator.serving.simulate.Iteration`` that ``ServingExecutor`` reads."""

    decode: list[int]
    prefill: list[tuple[int, int, int]]
    released: list[int] = field(default_factory=list)
    predicted_s: float = 0.0
    accepted: list[int] | None = None


def warm_up(executor) -> None:
    """Compile and capture before ``executor``'s (a ``ServingExecutor``) timed run: prompt
    chunks (a first and a later one), decodes beside them and alone, a chunk of each size
    class up to the whole token budget, the decode kernel's split widths, then every decode
    graph and every piecewise graph."""
    # Token counts of 81, 42, 16, 3, 1 and 32: Triton specializes a kernel on whether an
    # integer argument is 1 or a multiple of 16, so each variant compiles here.
    steps = [Step([], [(-1, 0, 64), (-2, 0, 17)]), Step([-1, -2], [(-3, 0, 40)]),
             Step([-1, -2], [(-3, 40, 14)]), Step([-1, -2, -3], []),
             Step([], [(-4, 0, 1)]), Step([-1, -2, -3, -4], [(-5, 0, 28)])]  # fmt: skip
    for step in steps:
        executor(step)
    # Then one chunk of every size class up to the whole token budget, the largest last. The
    # largest is what an engine's profiling run does: the allocator holds the peak activations
    # from here on, instead of growing its pool inside the first timed iterations. The others
    # meet the GEMM kernels each token count picks before a timed iteration does (the driver
    # loads a kernel on its first launch).
    peak = min(executor.token_budget, executor.max_seq_length,
               len(executor.free) * executor.block_size)  # fmt: skip
    for i, count in enumerate(token_counts(peak, ATTENTION_BUCKET)):
        executor(Step([], [(-10 - i, 0, count)], released=[-9 - i] if i else []))
    compile_split_widths(executor)
    if executor.device.type == "cuda" and pays_on(executor.device):  # cuDNN's plans, per shape
        dtype = executor.model.embed_tokens.weight.dtype
        for heads, dim in {(a.num_heads, a.head_dim)
                           for a in paged_attentions(executor.model, executor.drafter)}:  # fmt: skip
            build_plans(heads, dim, dtype, executor.device, max_chunk=peak,
                        max_length=executor.max_seq_length, bucket=ATTENTION_BUCKET)  # fmt: skip
    # A capture that fails must not cost the whole validation: the run still measures, with
    # those iterations eager, and says so.
    failure = None if executor.graphs is None else _capture(executor.graphs)
    if failure is not None:
        executor.graphs = None
        executor.notes.append(f"decode graphs could not be captured ({failure}): decode-only "
                              "iterations and rounds ran eagerly")  # fmt: skip
    failure = None if executor.proposals is None else _capture(executor.proposals)
    if failure is not None:
        executor.proposals = None
        executor.notes.append(f"draft graphs could not be captured ({failure}): rounds with "
                              "prompt chunks drafted eagerly")  # fmt: skip
    failure = None if executor.piecewise is None else _capture(executor.piecewise)
    if failure is not None:
        executor.piecewise = None
        executor.notes.append(f"piecewise graphs could not be captured ({failure}): "
                              "iterations with prompt chunks ran eagerly")  # fmt: skip
    _note_partial(executor, executor.piecewise, "piecewise graphs")
    draft_pieces = getattr(executor.drafter, "pieces", None)
    failure = None if draft_pieces is None else _capture(draft_pieces)
    if failure is not None:
        executor.drafter.pieces = None
        executor.notes.append(f"the draft model's piecewise graphs could not be captured "
                              f"({failure}): its prefill of prompt chunks ran eagerly")  # fmt: skip
    _note_partial(executor, getattr(executor.drafter, "pieces", None),
                  "the draft model's piecewise graphs")  # fmt: skip
    executor.synchronize()
    executor.reset()


def token_counts(limit: int, bucket: int = 0) -> list[int]:
    """Token counts from 1 to ``limit`` at steps of about 1.5x (1, 2, 3, 4, 6, 8, 12, ...),
    and every multiple of ``bucket`` below it, ``limit`` last: one of each size class a library
    kernel choice follows, and one of each length a first chunk's attention is padded to
    (``executor.ragged.ATTENTION_BUCKET``)."""
    counts, power = set(range(bucket, limit, bucket) if bucket else ()), 1
    while power <= limit:
        counts |= {c for c in (power, power + power // 2) if c < limit}
        power *= 2
    return sorted(counts) + ([limit] if limit > 0 else [])


def _note_partial(executor, pieces, what: str) -> None:
    """Say so where ``pieces`` (piecewise graphs) hold only their smaller buckets."""
    if pieces is not None and pieces.failure is not None:
        executor.notes.append(f"{what} could not be captured for {pieces.failure}: those "
                              "iterations ran eagerly")  # fmt: skip


def _capture(graphs) -> str | None:
    """Capture ``graphs``: None, or, where it fails, the error's first line (what it held
    freed)."""
    try:
        graphs.capture()
        return None
    except (torch.OutOfMemoryError, RuntimeError) as error:
        graphs.graphs = {}
        if torch.cuda.is_available():
            torch.cuda.empty_cache()
        text = str(error).strip()
        return (text.splitlines()[0] if text else type(error).__name__)[:160]


def compile_split_widths(executor) -> None:
    """Every split-merge width of the paged decode kernel (``decode_splits.split_lengths``)
    for each attention shape and query count that runs it in ``executor``, one sequence in the
    scratch block no request holds. Each count is a launch of its own, as is one token that
    came rotated and stored (a decode beside the piecewise graphs' pieces, which do both)."""
    from executor.decode_splits import split_lengths

    model, device = executor.model, executor.device
    kernels, dtype = model.kernels, model.embed_tokens.weight.dtype
    # (query tokens, rotated and stored before the kernel)
    target = {(1, False), (executor.query, executor.query > 1)}
    if executor.piecewise is not None:
        target.add((1, True))
    owners = [(model, target)]
    if executor.drafter is not None:  # a draft step feeds one token, its first one two
        owners.append((executor.drafter, {(1, False), (2, True)}))
    longest = executor.max_seq_length + executor.query - 1
    for owner, queries in owners:
        attention = next(paged_attentions(owner), None)
        paged = None if attention is None else kernels.paged_decode(attention.kv_cache)
        if paged is None:
            continue
        heads, d = attention.num_heads, attention.head_dim
        width = heads + 2 * attention.num_kv_heads
        position = torch.zeros(1, dtype=torch.long, device=device)
        rope = torch.zeros(1, d, dtype=model.rope_cos.dtype, device=device)
        for query, rotated in sorted(queries):
            qkv = torch.zeros(1, query, width, d, dtype=dtype, device=device)
            columns = -(-query // executor.block_size)
            tables = torch.full((1, columns), executor.blocks.scratch, device=device)
            for length in split_lengths(attention.num_kv_heads, longest):
                with torch.inference_mode():
                    rope_rows = None if rotated else rope
                    paged(qkv, rope_rows, rope_rows, position, tables, max(length, query), heads,
                          rotated=rotated)(attention.kv_cache)  # fmt: skip


def paged_attentions(*owners):
    """Every attention module with a ``PagedKVCache`` in a model and in a drafter (its model,
    or its own layers)."""
    for owner in owners:
        module = owner if isinstance(owner, torch.nn.Module) else getattr(owner, "model", None)
        for part in module.modules() if module is not None else ():
            if isinstance(getattr(part, "kv_cache", None), PagedKVCache):
                yield part
