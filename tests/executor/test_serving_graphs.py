"""The serving loop's CUDA graphs on the CPU, their captures replaced by stand-ins: decode
graphs keep alive every tensor they read, their buckets are vLLM's capture sizes captured
largest first into one pool, and a capture that fails leaves the run eager and says so.
``tests/executor/test_gpu.py`` replays the real ones against eager iterations."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from executor.serving_loop import ServingExecutor, Step  # noqa: E402
from tests.executor.test_serving_loop import tiny_model  # noqa: E402


def test_decode_graphs_keep_alive_every_tensor_they_read(monkeypatch):
    """A CUDA graph reads its inputs at the addresses they had when it was captured. Every
    tensor of a captured step (the sampled rows' index among them) must live as long as the
    graph: freed, its memory goes to other tensors and the replay reads garbage indices. The
    buckets are vLLM's capture sizes, captured largest first into one memory pool."""
    import gc
    import weakref

    from executor import serving_graphs
    from executor.ragged import setup_paged_caches

    held: list = []
    captures: list = []  # (batch rows, the pool it was given)

    def fake_capture(step, pool=None):  # runs the step once; remembers what the step reads
        step()
        batch = next(cell.cell_contents for cell in step.__closure__
                     if isinstance(cell.cell_contents, serving_graphs.RaggedBatch))  # fmt: skip
        held.extend(weakref.ref(t) for t in vars(batch).values() if isinstance(t, torch.Tensor))
        captures.append((batch.decodes, pool))
        return object(), "the pool"

    monkeypatch.setattr(serving_graphs, "capture_graph", fake_capture)
    model = tiny_model()
    setup_paged_caches(model, num_blocks=9, block_size=4, max_seq_length=32)
    graphs = serving_graphs.PagedDecodeGraphs(model, max_batch=12, table_width=8,
                                              max_seq_length=32, scratch_block=8)  # fmt: skip
    graphs.capture()
    gc.collect()
    assert held and all(ref() is not None for ref in held)
    assert captures == [(12, None), (8, "the pool"), (4, "the pool"), (2, "the pool"),
                        (1, "the pool")]  # fmt: skip
    assert [graphs.bucket(n) for n in (1, 3, 5, 9, 12, 13)] == [1, 4, 8, 12, 12, None]


def test_decode_buckets_are_vllms_capture_sizes():
    """1, 2, 4, then every 8 below 256 and every 16 from there, the largest batch last: a batch
    pads by at most 7 rows (15 past 256), as in vLLM's default capture."""
    from executor.serving_graphs import capture_sizes

    assert capture_sizes(1) == [1] and capture_sizes(3) == [1, 2, 3]
    assert capture_sizes(20) == [1, 2, 4, 8, 16, 20]
    sizes = capture_sizes(300)
    assert sizes[:6] == [1, 2, 4, 8, 16, 24] and sizes[-4:] == [256, 272, 288, 300]
    steps = [b - a for a, b in zip(sizes[3:], sizes[4:], strict=False)]
    assert set(steps[:30]) == {8} and len(sizes) == 38


def test_graphs_that_fail_to_capture_leave_the_run_eager_and_say_so(monkeypatch):
    """A capture that fails on the GPU (out of memory, a capture error) must not cost the
    validation: the warm-up drops those graphs, decode graphs or piecewise ones, the run
    measures their iterations eagerly, and the executor's notes (which the validation section
    carries) say so."""
    from executor import serving_graphs
    from executor.piecewise_graphs import PiecewiseGraphs

    def failing_capture(step, pool=None):
        raise RuntimeError("CUDA error: out of memory\nCUDA kernel errors might be reported")

    monkeypatch.setattr(serving_graphs, "capture_graph", failing_capture)
    model = tiny_model()
    executor = ServingExecutor(model, num_blocks=96, block_size=4, max_seq_length=128)
    executor.graphs = serving_graphs.PagedDecodeGraphs(
        model, max_batch=4, table_width=32, max_seq_length=128, scratch_block=96
    )
    executor.piecewise = PiecewiseGraphs(model, max_tokens=32, scratch_block=96,
                                         capture=failing_capture)  # fmt: skip
    executor.warm_up()
    assert executor.graphs is None and executor.piecewise is None and not executor.records
    assert executor.notes == [
        "decode graphs could not be captured (CUDA error: out of memory): decode-only "
        "iterations and rounds ran eagerly",
        "piecewise graphs could not be captured (CUDA error: out of memory): iterations with "
        "prompt chunks ran eagerly",
    ]
    executor(Step(decode=[], prefill=[(0, 0, 5)]))
    executor(Step(decode=[0], prefill=[]))
    assert [r.path for r in executor.records] == ["eager", "eager"]
