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
    from tuner.search.run import build_search
    from tuner.study_files import write_json_atomic
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
    from tuner.study_files import write_json_atomic

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
