"""What `tune validate --traffic` keeps of each measured iteration, through a stand-in clock
(the executor's serving loop needs a GPU): the means by execution path and the issue times,
the executor's notes, the kernels compiled inside a timed run, every iteration as a CSV row
and read back, the CLI's lines, and the decode steps by batch."""

from __future__ import annotations

import pytest

from simulator.data.hardware import load_hardware
from tuner.plan import load_plan


def test_iteration_means_split_by_execution_path():
    """Decode graphs, piecewise graphs and eager iterations cost differently: each path's
    iterations are averaged apart, beside the mean of all, with the host's time to issue them
    where it was measured."""
    pytest.importorskip("torch")
    from executor.serving_loop import IterationRecord
    from tuner.traffic import _iteration_means

    def record(path, step_s, device_s=None, issued_s=None):
        return IterationRecord(tokens=1, decodes=1, chunks=0, predicted_s=0.01, step_s=step_s,
                               host_s=0.0, path=path, device_s=device_s,
                               issued_s=issued_s)  # fmt: skip

    records = [record("graph", 0.01, 0.008, 0.001), record("graph", 0.03, 0.02, 0.002),
               record("graph", 0.011, 0.01, 0.003), record("eager", 0.1)]  # fmt: skip
    means = _iteration_means(records)
    assert means["count"] == 4 and means["graph"]["count"] == 3
    assert means["graph"]["mean_step_s"] == pytest.approx(0.017)
    assert means["graph"]["median_step_s"] == pytest.approx(0.011)
    assert means["graph"]["max_step_s"] == pytest.approx(0.03)
    assert means["graph"]["mean_device_s"] == pytest.approx(0.038 / 3)
    assert means["eager"]["mean_step_s"] == pytest.approx(0.1)
    assert "mean_device_s" not in means["eager"], "no GPU time where the run had none"
    assert means["graph"]["mean_issued_s"] == pytest.approx(0.002)
    assert "mean_issued_s" not in means["eager"] and "mean_issued_s" not in means
    assert "piecewise" not in means


def _traffic_with(plan_file, clock_type, iterations_csv=None) -> dict:
    """The plan's traffic section, 30 requests a load, each load timed by a new ``clock_type``."""
    from tuner.search.run import build_search
    from tuner.traffic import run_traffic

    plan = load_plan(plan_file)
    search = build_search(plan.search["spec"])
    return run_traffic(plan, model=search.space.model, hardware=load_hardware(plan.hardware),
                       workload=search.workload, slos=search.slos, seed=search.seed,
                       clock_for=lambda predicted: clock_type(), requests=30,
                       iterations_csv=iterations_csv)  # fmt: skip


def test_what_the_executor_could_not_do_reaches_each_load(plan_file):
    """An executor note (graphs that could not be captured, say) is carried into every load of
    the traffic section, where the report and the CLI show it."""
    note = "piecewise graphs could not be captured (out of memory): iterations ran eagerly"

    class Clock:
        records: list = []
        notes = [note]

        def __call__(self, iteration):
            return iteration.predicted_s

    section = _traffic_with(plan_file, Clock)
    assert [row["executor_notes"] for row in section["loads"]] == [[note]] * 3


def test_kernels_compiled_inside_a_timed_run_are_named(plan_file, tmp_path):
    """A load whose timed iterations compiled a Triton kernel says how many and which, and
    how often the allocator had to free its cache and retry; every iteration of every load
    can be written out, a CSV row each."""
    import csv

    from executor.serving_loop import IterationRecord

    class Clock:
        def __init__(self) -> None:
            self.records: list = []

        def allocator_retries(self) -> int:
            return 2

        def __call__(self, iteration):
            compiled = ("_decode_kernel",) if not self.records else ()
            self.records.append(IterationRecord(
                tokens=1, decodes=1, chunks=0, predicted_s=iteration.predicted_s,
                step_s=iteration.predicted_s, host_s=0.0, compiles=len(compiled),
                compiled=compiled,
            ))  # fmt: skip
            return iteration.predicted_s

    section = _traffic_with(plan_file, Clock, iterations_csv=tmp_path / "iterations.csv")
    rows = list(csv.DictReader((tmp_path / "iterations.csv").open()))
    counts = [row["iterations"]["count"] for row in section["loads"]]
    assert [
        sum(r["load"] == load for r in rows) for load in ("light", "plan", "overload")
    ] == counts
    first = rows[0]
    assert (first["load"], first["index"], first["path"], first["compiles"]) == (
        "light",
        "0",
        "eager",
        "1",
    )
    assert first["device_s"] == "" and float(first["step_s"]) == pytest.approx(
        float(first["predicted_s"]), rel=1e-5
    )
    assert [(row["compiles"], row["compiled_kernels"]) for row in section["loads"]] == [
        (1, ["_decode_kernel"])
    ] * 3
    assert [row["allocator_retries"] for row in section["loads"]] == [2] * 3
    # Read back, the rows give each load's summaries again (the study scripts' input).
    import statistics

    from tuner.iteration_log import read_iterations

    again = read_iterations(tmp_path / "iterations.csv")
    assert list(again) == ["light", "plan", "overload"]
    assert [len(records) for records in again.values()] == counts
    assert again["light"][0].device_s is None and again["light"][0].compiles == 1
    assert again["light"][0].issued_s is None  # the fake clock's records do not say
    for row, records in zip(section["loads"], again.values(), strict=True):
        means = row["iterations"]
        assert statistics.fmean(r.predicted_s for r in records) == pytest.approx(
            means["mean_predicted_s"], rel=1e-5)  # fmt: skip
        assert max(r.step_s for r in records) == pytest.approx(means["max_step_s"], rel=1e-5)


def test_each_paths_iterations_are_printed_with_median_and_gpu_share(capsys):
    """The CLI's traffic table names each execution path's count, mean (and the GPU's share of
    it, and the host's time to issue it), median and prediction, and the kernels compiled
    inside the timed run."""
    from tuner.commands.validate import _print_traffic

    group = {"count": 7, "mean_step_s": 0.0472, "median_step_s": 0.0129, "max_step_s": 1.2,
             "mean_host_s": 0.0002, "mean_predicted_s": 0.0094, "mean_device_s": 0.0468,
             "mean_issued_s": 0.0451}  # fmt: skip
    section = {"notes": [], "loads": [{
        "load": "light", "rate_per_s": 6.0, "requests": 100, "predicted": {}, "compiles": 1,
        "compiled_kernels": ["_decode_kernel"],
        "iterations": {"piecewise": group, "graph": {**group, "mean_issued_s": 0.0012}},
        "allocator_retries": 4,
    }]}  # fmt: skip
    _print_traffic(section)
    out = capsys.readouterr().out
    assert "1 Triton kernel compiles inside timed iterations" in out and "_decode_kernel" in out
    assert "4 allocator retries" in out
    assert ("piecewise iterations: 7, mean 47.20 ms measured (46.80 on the GPU), issued in "
            "45.10 (the host's pace), median 12.90, 9.40 ms predicted") in out  # fmt: skip
    assert "(46.80 on the GPU), issued in 1.20, median" in out  # issued early: the GPU's pace


def test_decode_steps_are_the_medians_of_each_batch_of_graph_iterations():
    """Only decode-graph iterations, grouped by how many sequences decode; a batch met fewer
    than ``least`` times is left out (no median of one)."""
    from types import SimpleNamespace

    from tuner.traffic import decode_steps

    def record(path, decodes, step_s, predicted_s=1e-3):
        return SimpleNamespace(path=path, decodes=decodes, step_s=step_s, predicted_s=predicted_s)

    records = [record("graph", 4, s) for s in (5e-3, 6e-3, 9e-3)]
    records += [record("graph", 1, 2e-3), record("eager", 4, 1.0), record("piecewise", 4, 1.0)]
    assert decode_steps(records, least=3) == [
        {"batch": 4, "iterations": 3, "measured_s": 6e-3, "predicted_s": 1e-3}
    ]
    assert [row["batch"] for row in decode_steps(records, least=1)] == [1, 4]


def test_decode_step_ratios_sum_each_doubling_span_of_batches():
    """Spans 1, 2, 3-4, 5-8, ...: each span's measured over predicted seconds, every
    iteration counted once."""
    from tuner.traffic import decode_step_ratios

    def step(batch, iterations, measured_s):
        return {"batch": batch, "iterations": iterations, "measured_s": measured_s,
                "predicted_s": 1.0}  # fmt: skip

    steps = [step(1, 4, 1.0), step(3, 1, 2.0), step(4, 3, 1.0), step(9, 2, 1.5)]
    assert decode_step_ratios(steps) == [("1", 1.0), ("3-4", 1.25), ("9-16", 1.5)]
    assert decode_step_ratios([]) == []
