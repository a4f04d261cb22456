"""`tune validate --traffic`: the plan's traffic at three loads through a stand-in clock (the
executor's serving loop needs a GPU), what each load reports, the section written into the
plan, and the report's figures of it."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from tuner_helpers import EXAMPLE_PLAN, slower_stand_in

from simulator.data.hardware import load_hardware
from tuner.cli import main
from tuner.plan import load_plan


def test_traffic_loads_follow_the_plans_capacity(plan_file):
    from tuner.traffic import traffic_rates

    plan = load_plan(plan_file)
    rates = dict(traffic_rates(plan))
    capacity = plan.capacity.replica_rate_per_s
    assert rates["light"] == pytest.approx(0.2 * capacity)
    assert rates["plan"] == pytest.approx(plan.workload.rate_requests_per_s / plan.replicas)
    assert rates["overload"] == pytest.approx(1.5 * capacity)


def test_traffic_validation_compares_predicted_and_measured_percentiles(plan_file):
    """A stand-in clock 10 % slower than the step model: the section holds each load's
    percentiles both ways, errors near -9 % where queues are short, and says it differs; the
    section so far is handed over as each load but the last ends."""
    from tuner.search.run import build_search
    from tuner.traffic import run_traffic

    plan = load_plan(plan_file)
    search = build_search(plan.search["spec"])
    runs = []

    def clock_for(predicted):
        runs.append(predicted)
        return lambda iteration: iteration.predicted_s * 1.1

    kept = []  # what the CLI writes into the plan as each load ends
    section = run_traffic(plan, model=search.space.model, hardware=load_hardware(plan.hardware),
                          workload=search.workload, slos=search.slos, seed=search.seed,
                          clock_for=clock_for, requests=120, on_load=kept.append)  # fmt: skip
    assert [row["load"] for row in section["loads"]] == ["light", "plan", "overload"]
    assert [s["status"] for s in kept] == ["incomplete", "incomplete"]  # the last: the result
    assert [len(s["loads"]) for s in kept] == [1, 2] and kept[1]["loads"][1]["measured"]
    assert len(runs) == 3 and all(r.prediction.fits for r in runs)
    light = section["loads"][0]
    assert light["errors"]["tpot_p50"] == pytest.approx(1 / 1.1 - 1, abs=0.02)
    for row in section["loads"]:
        assert set(row["predicted"]) == set(row["measured"]) and row["requests"] == 120
        assert len(row["cdf"]["measured"]["ttft"]) == len(row["cdf"]["predicted"]["tpot"]) == 41
    assert section["status"] == "differs" and section["max_abs_relative_error"] > 0.05
    assert any("acceptance rate" in note for note in section["notes"])  # the plan speculates


def test_traffic_dry_run_predicts_without_a_gpu(plan_file, capsys):
    before = plan_file.read_text()
    assert main(["validate", str(plan_file), "--traffic", "--dry-run", "--requests", "60"]) == 0
    out = capsys.readouterr().out
    assert "light:" in out and "overload:" in out and "tpot_p99" in out
    assert plan_file.read_text() == before  # nothing measured, nothing written
    assert main(["validate", str(plan_file), "--traffic", "--requests", "5"]) == 2
    assert "at least 20" in capsys.readouterr().err


def test_the_report_shows_a_validation_under_traffic(tmp_path, capsys):
    """A measured traffic section in the plan (its loads run under progress bars): the report
    draws the CDFs and lists each load's metrics."""
    from tuner.plan import write_json_atomic
    from tuner.search.run import build_search
    from tuner.traffic import run_traffic

    study = tmp_path / "study"
    shutil.copytree(EXAMPLE_PLAN.parent, study)
    plan = load_plan(study / "plan.json")
    search = build_search(plan.search["spec"])
    section = run_traffic(plan, model=search.space.model, hardware=load_hardware(plan.hardware),
                          workload=search.workload, slos=search.slos, seed=search.seed,
                          clock_for=lambda predicted: (lambda it: it.predicted_s * 1.05),
                          requests=60, bar=True)  # fmt: skip
    bars = capsys.readouterr().err  # each measured load's bar of finished requests
    assert all(f"{load} load, GPU" in bars for load in ("light", "plan", "overload"))
    assert "/60" in bars
    section.update(machine={"device_name": "stand-in", "host_dispatch_us": 7.5},
                   command="tune validate --traffic")  # fmt: skip
    section["loads"][1]["decode_steps"] = [  # what an executor's decode graphs report
        {"batch": b, "iterations": 9, "measured_s": 7e-3 + 1e-4 * b, "predicted_s": 6e-3}
        for b in (1, 2, 4, 8)
    ]  # fmt: skip
    plan = plan.model_copy(update={"validation": {"traffic": section}})
    write_json_atomic(study / "plan.json", plan.model_dump(mode="json"))
    assert main(["report", str(study)]) == 0
    html = (study / "report.html").read_text()
    markdown = (study / "report.md").read_text()
    assert "Under traffic" in html and "alt='traffic_cdfs'" in html
    assert "### Under traffic" in markdown and "overload (" in markdown and "tpot_p99" in markdown
    assert "stand-in (host: 7.5 us to issue an eager op)" in markdown
    assert (study / "plots" / "traffic_cdfs.png").is_file()
    assert (study / "plots" / "traffic_steps.png").is_file() and "traffic_steps" in html


def test_host_overhead_is_fitted_and_calibrated_from_a_validated_plan(plan_file, tmp_path, capsys):
    import numpy as np
    import yaml

    from simulator.calibration.host_overhead import fit_host_overhead

    rng = np.random.default_rng(0)
    emitting = rng.integers(1, 256, size=400)
    overhead = 4e-4 + 2e-6 * emitting + rng.normal(0, 2e-5, size=400)
    fit = fit_host_overhead(emitting, overhead)
    assert fit["per_iteration_s"] == pytest.approx(4e-4, rel=0.05)
    assert fit["per_token_s"] == pytest.approx(2e-6, rel=0.05)
    assert fit_host_overhead([3, 3, 3], [1e-4, 2e-4, 3e-4])["per_token_s"] == 0.0

    plan = load_plan(plan_file)
    # No traffic validation yet: one line, nothing written.
    out = tmp_path / "h100.yaml"
    code = main(["calibrate", "--from", str(plan_file), "--out", str(out)])
    assert code == 2 and "tune validate PLAN.json --traffic" in capsys.readouterr().err
    loads = [{"load": "light", "host_overhead": fit}, {"load": "plan", "host_overhead": fit}]
    traffic = {"loads": loads, "machine": {"device_name": "NVIDIA H100 80GB HBM3"}}
    from tuner.plan import write_json_atomic

    write_json_atomic(plan_file, plan.model_copy(update={"validation": {"traffic": traffic}})
                      .model_dump(mode="json"))  # fmt: skip
    assert main(["calibrate", "--from", str(plan_file), "--out", str(out)]) == 0
    written = yaml.safe_load(out.read_text())["efficiency"]
    assert written["step_overhead_s"] == pytest.approx(fit["per_iteration_s"])
    assert written["token_overhead_s"] == pytest.approx(fit["per_token_s"])
    assert "tune validate --traffic" in written["sources"]["host_overhead"]
    # The rest of the calibration is the GPU's own.
    assert written["hbm"] == pytest.approx(load_hardware("h100-sxm").efficiency.hbm)
    code = main(["calibrate", "--from", str(plan_file), "--hardware", "h200-sxm", "--out",
                 str(out)])  # fmt: skip
    assert code == 2 and "never written for another GPU" in capsys.readouterr().err


def test_validate_traffic_writes_its_section_and_keeps_the_steps(plan_file, capsys, monkeypatch):
    """The GPU's clock replaced by the step model's slowed by 5 %: `tune validate --traffic`
    writes the traffic section beside an earlier step-level one, and a step-level run after it
    keeps the traffic section."""
    import executor.points
    import executor.validate

    monkeypatch.setattr(executor.validate, "measure", slower_stand_in(1.05))
    monkeypatch.setattr(executor.validate, "serving_clocks",
                        lambda spec, config, max_seq_length: lambda predicted:
                        (lambda iteration: iteration.predicted_s * 1.05))  # fmt: skip
    monkeypatch.setattr(executor.points, "machine_info", lambda: {"device_name": "stand-in"})
    assert main(["validate", str(plan_file)]) == 0
    assert main(["validate", str(plan_file), "--traffic", "--requests", "40"]) == 0
    out = capsys.readouterr().out
    assert "overload:" in out and "validation under traffic:" in out
    assert re.search(r"preemptions +predicted +\d+  measured \d+\n", out), out  # both counts
    section = json.loads(plan_file.read_text())["validation"]
    assert section["status"] == "agrees" and section["traffic"]["machine"]["device_name"]
    # How fast this host issues an op (here the CPU's), printed and kept with the machine.
    dispatch = section["traffic"]["machine"]["host_dispatch_us"]
    assert 0 < dispatch < 1e4 and f"host: {dispatch:.1f} us to issue an eager op" in out
    assert [row["load"] for row in section["traffic"]["loads"]] == ["light", "plan", "overload"]
    assert main(["validate", str(plan_file)]) == 0  # the steps again: the traffic part stays
    assert "traffic" in json.loads(plan_file.read_text())["validation"]


def test_validate_traffic_reruns_some_loads_and_keeps_the_rest(plan_file, capsys, monkeypatch):
    """After a run through the step model's own clock (no error), `--loads overload` runs that
    load alone (here through a clock 30 % slower) and keeps the
    light and plan loads measured before, marked with when; status and errors span all three.
    An unknown load name is one line and exit 2."""
    import executor.points
    import executor.validate

    slowdown = {"factor": 1.0}
    monkeypatch.setattr(executor.validate, "serving_clocks",
                        lambda spec, config, max_seq_length: lambda predicted:
                        (lambda iteration: iteration.predicted_s * slowdown["factor"]))  # fmt: skip
    monkeypatch.setattr(executor.points, "machine_info", lambda: {"device_name": "stand-in"})
    assert main(["validate", str(plan_file), "--traffic", "--requests", "40"]) == 0
    before = json.loads(plan_file.read_text())["validation"]["traffic"]
    assert before["status"] == "agrees"
    slowdown["factor"] = 1.3
    args = ["validate", str(plan_file), "--traffic", "--requests", "40", "--loads", "overload"]
    assert main(args) == 0
    assert "kept from" in capsys.readouterr().out
    after = json.loads(plan_file.read_text())["validation"]["traffic"]
    assert [row["load"] for row in after["loads"]] == ["light", "plan", "overload"]
    assert after["loads"][0]["measured"] == before["loads"][0]["measured"]
    assert after["loads"][0]["measured_utc"] == before["measured_utc"]
    assert "measured_utc" not in after["loads"][2]  # run now
    assert after["loads"][2]["errors"]["tpot_p50"] < -0.15  # the slower clock's
    assert after["status"] == "differs" and after["max_abs_relative_error"] > 0.15
    assert main(["validate", str(plan_file), "--traffic", "--loads", "heavy"]) == 2
    err = capsys.readouterr().err
    assert "--loads 'heavy'" in err and "light, plan, overload" in err and "Traceback" not in err


def test_a_load_run_again_keeps_the_rest_and_an_unfinished_run_says_so(plan_file):
    """``merge_traffic``: the loads not run again come from the earlier section, marked with
    its time; a section still being measured stays ``incomplete`` whatever the kept loads
    say; a load that was only predicted before is not kept."""
    from tuner.traffic import merge_traffic, traffic_rows

    plan = load_plan(plan_file)

    def row(load, error, measured=True):
        extra = {"measured": {"tpot_p50": 1.0}, "errors": {"tpot_p50": error}} if measured else {}
        return {"load": load, "rate_per_s": 1.0, "predicted": {"tpot_p50": 1.0}, **extra}

    earlier = {"loads": [row("light", 0.01), row("plan", 0.02), row("overload", 0.4, False)],
               "measured_utc": "2026-12-01T00:00:00Z"}  # fmt: skip
    now = {"loads": [row("overload", 0.05)], "status": "incomplete", "measured_utc": "now"}
    merged = merge_traffic(plan, earlier, now)
    assert [r["load"] for r in merged["loads"]] == ["light", "plan", "overload"]
    assert merged["status"] == "incomplete" and merged["measured_utc"] == "now"
    assert merged["loads"][0]["measured_utc"] == "2026-12-01T00:00:00Z"
    labels = [r[0] for r in traffic_rows(merged)]  # the report's and the summary's rows
    assert labels == ["light (1.00 req/s, measured 2026-12-01T00:00:00Z)",
                      "plan (1.00 req/s, measured 2026-12-01T00:00:00Z)",
                      "overload (1.00 req/s)"]  # fmt: skip
    assert merged["max_abs_relative_error"] == 0.05
    done = merge_traffic(plan, earlier, {**now, "status": "agrees"})
    assert done["status"] == "agrees" and done["median_abs_relative_error"] == 0.02
    nothing_kept = merge_traffic(plan, {"loads": [row("plan", 0.3, False)]}, now)
    assert nothing_kept is now  # nothing measured to keep


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
