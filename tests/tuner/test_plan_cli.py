"""`tune plan` end to end on a small space: the study directory, resume, and bad input."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from tuner_helpers import SMALL_PLAN, run_cli

from tuner.engines import EngineInputs, kv_cache_bytes_given, total_bytes_used
from tuner.plan import load_plan

EXPECTED = [
    "plan.json",
    "vllm.yaml",
    "vllm.sh",
    "sglang.sh",
    "trtllm.yaml",
    "trtllm.sh",
    "report.html",
    "report.md",
    "study.journal",
    "plots/pareto.png",
    "plots/roofline.png",
    "plots/memory.png",
    "plots/latency_cdfs.png",
    "plots/history.png",
]


def journal_trials(directory: Path, name: str):
    """The study's trials; none while the journal exists but the study is not written yet."""
    from tuner.search.study import open_storage

    try:
        study = optuna.load_study(
            study_name=name, storage=open_storage(str(directory / "study.journal"))
        )
    except KeyError:
        return []
    return study.get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "study"
    from tuner.cli import main

    code = main([*SMALL_PLAN, "--out", str(out)])
    assert code == 0
    return out


def test_plan_writes_the_study_directory(small_study):
    for name in EXPECTED:
        assert (small_study / name).is_file(), name
    assert not [p for p in small_study.iterdir() if p.name.startswith(".")]
    plan = load_plan(small_study / "plan.json")
    assert plan.schema_version == "2" and plan.num_gpus <= plan.gpu_budget == 2
    assert all(check.met for check in plan.slos)
    assert plan.pareto and plan.provenance.study_name == "study"
    assert plan.quantization.risk in ("none", "low")
    assert plan.engines["vllm"].memory_fraction > 0


def test_plan_is_memory_feasible_under_each_engine_rule(small_study):
    plan = load_plan(small_study / "plan.json")
    m = plan.memory
    inputs = EngineInputs(
        config=plan.config,
        model_id=plan.model_id,
        hbm_bytes=m.device_memory_bytes,
        weights_bytes=m.weights_bytes + m.drafter_weights_bytes,
        activation_bytes=m.activation_bytes,
        reserved_bytes=m.reserved_bytes,
        kv_cache_bytes=m.kv_cache_bytes,
    )
    need = m.kv_tokens_needed * m.kv_bytes_per_token
    for engine, fraction in m.engine_fractions.items():
        assert kv_cache_bytes_given(engine, inputs, fraction) >= need, engine
        assert total_bytes_used(engine, inputs, fraction) <= m.device_memory_bytes, engine


def test_a_shared_gpu_plans_within_its_memory_share(small_study, tmp_path, capsys):
    """`--gpu-memory-utilization 0.5` (a GPU shared with another process): the plan's
    deployment takes half of each GPU, its KV cache is smaller than the default plan's, and
    vLLM is launched with that share. Resuming the study with another share, engine or TP is
    refused: those change the search."""
    out = tmp_path / "shared"
    code, _, err = run_cli(capsys, *SMALL_PLAN, "--gpu-memory-utilization", "0.5", "--out",
                           str(out), "--no-report")  # fmt: skip
    assert code == 0, err
    shared, default = load_plan(out / "plan.json"), load_plan(small_study / "plan.json")
    assert shared.config.gpu_memory_utilization == 0.5
    assert shared.memory.gpu_memory_utilization == 0.5
    assert shared.memory.budget_bytes == pytest.approx(0.5 * shared.memory.device_memory_bytes)
    assert shared.memory.kv_cache_bytes < 0.5 * default.memory.kv_cache_bytes
    assert shared.engines["vllm"].memory_fraction == pytest.approx(0.5, abs=0.002)
    for changed in (["--gpu-memory-utilization", "0.6"], ["--engine", "sglang"], ["--tp", "1"]):
        code, _, err = run_cli(capsys, *SMALL_PLAN, "--gpu-memory-utilization", "0.5",
                               "--out", str(out), "--no-report", *changed[-2:])  # fmt: skip
        assert code != 0 and "already holds a different search" in err, changed
        assert changed[0].lstrip("-").replace("-", "_") in err, err


def test_plan_states_its_capacity_and_search(small_study):
    plan = load_plan(small_study / "plan.json")
    capacity, stats = plan.capacity, plan.search["bound"]
    assert capacity is not None and capacity.offered_rate_per_s == 8.0
    # The deployment serves the offered rate, within the replica's bound.
    assert capacity.deployment_rate_per_s >= 8.0 and capacity.headroom >= 0
    assert capacity.replica_rate_per_s <= capacity.bound_rate_per_s
    assert capacity.next_replica_at_rate_per_s == capacity.deployment_rate_per_s
    assert stats["proven"] and stats["simulations"] == plan.provenance.evaluations > 0
    assert stats["simulated_candidates"] + stats["ruled_out_by_bound"] == stats["candidates"]
    # The front: what the next costs up buy. Every point meets the SLOs, none dominates another.
    assert stats["front_simulations"] > 0 and len(plan.pareto) >= 2
    points = [(c.objectives["cost_per_hour"], c.objectives["tpot_p99_s"]) for c in plan.pareto]
    price = plan.provenance.hardware_profile["h100-sxm"]["price_per_hour"]
    assert min(cost for cost, _ in points) == plan.num_gpus * price
    for a in points:
        assert not any(b != a and b[0] <= a[0] and b[1] <= a[1] for b in points)


def test_rerun_resumes_from_the_study_without_simulating_again(small_study, capsys):
    before = {
        t.number: (t.params, t.values)
        for t in journal_trials(small_study, "study")
        if t.state.name == "COMPLETE"
    }
    first = load_plan(small_study / "plan.json")
    code, out, err = run_cli(capsys, *SMALL_PLAN, "--out", str(small_study))
    assert code == 0, err
    after = {
        t.number: (t.params, t.values)
        for t in journal_trials(small_study, "study")
        if t.state.name == "COMPLETE"
    }
    again = load_plan(small_study / "plan.json")
    assert before and after == before  # every simulation read back, none run again
    assert again.provenance.evaluations == 0 and again.provenance.resumed == len(before)
    assert again.config == first.config and again.capacity == first.capacity
    assert "best plan:" in out and "files in" in out


def test_report_regenerates(small_study, capsys):
    (small_study / "report.html").unlink()
    code, out, err = run_cli(capsys, "report", str(small_study))
    assert code == 0, err
    assert (small_study / "report.html").stat().st_size > 10_000
    # the report states the traffic it assumed (rate, lengths, requests)
    plan = load_plan(small_study / "plan.json")
    traffic = next(line for line in (small_study / "report.md").read_text().splitlines()
                   if line.startswith("| traffic |"))  # fmt: skip
    assert f"{plan.workload.rate_requests_per_s:g} req/s" in traffic and "on average" in traffic


def test_report_shows_the_gpu_validation(small_study, capsys, monkeypatch, tmp_path):
    """Before `tune validate` the report says how to measure; after it, the measured steps
    beside the predicted ones (here a stand-in 10% slower than the model)."""
    import shutil

    from tuner_helpers import slower_stand_in

    import executor.validate

    study = tmp_path / "study"
    shutil.copytree(small_study, study)
    assert "Not measured yet" in (study / "report.md").read_text()
    monkeypatch.setattr(executor.validate, "measure", slower_stand_in(1.1))
    assert run_cli(capsys, "validate", str(study / "plan.json"))[0] == 0
    code, out, err = run_cli(capsys, "report", str(study))
    assert code == 0, err
    report = (study / "report.md").read_text()
    section = report[report.index("## Validation on a GPU") :]
    assert section.count("-9.1%") == 2 and "agrees" in section and "stand-in" in section
    assert "Validation on a GPU" in (study / "report.html").read_text()


def test_export_renders_from_the_plan(small_study, capsys, tmp_path):
    code, out, err = run_cli(
        capsys,
        "export",
        str(small_study / "plan.json"),
        "--engine",
        "sglang",
        "--out",
        str(tmp_path),
    )
    assert code == 0, err
    assert "sglang.launch_server" in out and (tmp_path / "sglang.sh").is_file()


@pytest.mark.parametrize(
    "extra, code, needle",
    [
        (["--hardware", "h1000"], 2, "unknown GPU"),
        (["--slo", "tpot_p90=0.01ms"], 3, "can meet the SLOs"),
        (["--model", "llama-3.1-405b", "--allow-quant", "bf16"], 3, "nothing fits"),
        (["--gpus", "0"], 2, "--gpus must be at least 1"),
        (["--storage", "postgresql://postgres@127.0.0.1:1/none"], 1, "cannot open storage"),
        (["--slo", "latency=2"], 2, "not an SLO"),
        (["--allow-quant", "fp4"], 2, "unknown scheme"),
        # Regression cases of the CLI-edges issue: each once accepted, run or misreported.
        (["--slo", "tpot_p99=50"], 2, "needs a unit"),
        (["--max-model-len", "0"], 2, "--max-model-len must be at least 16"),
        (["--seed", "-1"], 2, "--seed must be 0 or more"),
        (["--timeout", "0"], 2, "--timeout must be a positive"),
        (["--timeout", "-1"], 2, "--timeout must be a positive"),
        (["--heartbeat", "0"], 2, "--heartbeat must be at least 1"),
        (["--hardware", ""], 2, "--hardware names no GPU profile"),
        (["--gpus", "100000"], 2, "past the 4,096 one plan searches"),
        (["--gpu-memory-utilization", "1.5"], 2, "must be in (0, 1]"),
        (["--gpu-memory-utilization", "nan"], 2, "--gpu-memory-utilization"),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, extra, code, needle):
    out_dir = tmp_path / "never"
    args = [*SMALL_PLAN, "--out", str(out_dir)]
    for flag, value in zip(extra[::2], extra[1::2], strict=True):
        if flag in args and flag != "--slo":
            args[args.index(flag) + 1] = value
        else:
            args += [flag, value]
    got, out, err = run_cli(capsys, *args)
    assert got == code, err
    assert err.count("\n") == 1 and needle in err, err
    assert not out_dir.exists()


@pytest.mark.slow
def test_crash_mid_study_loses_no_finished_simulation(tmp_path):
    """SIGKILL while a simulation runs; the re-run reads back every finished one and reaches
    the plan an uninterrupted run reaches."""
    out = tmp_path / "crash"
    argv = [sys.executable, "-m", "tuner.cli", *SMALL_PLAN, "--out", str(out), "--no-report"]
    env = dict(os.environ, ROOFTUNE_TRIAL_SLEEP_S="0.4")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    done = 0
    while time.time() < deadline and done < 3:
        time.sleep(0.3)
        if (out / "study.journal").exists():
            done = sum(t.state.name == "COMPLETE" for t in journal_trials(out, "crash"))
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    before = {
        t.number: t.values for t in journal_trials(out, "crash") if t.state.name == "COMPLETE"
    }
    assert len(before) >= 3 and not (out / "plan.json").exists()
    finished = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert finished.returncode == 0, finished.stderr
    trials = journal_trials(out, "crash")
    complete = {t.number: t.values for t in trials if t.state.name == "COMPLETE"}
    assert all(complete[n] == v for n, v in before.items())
    assert not [t for t in trials if t.state.name == "RUNNING"]
    resumed = load_plan(out / "plan.json")
    assert resumed.provenance.resumed == len(before)
    fresh = tmp_path / "fresh"
    assert subprocess.run([*argv[:-3], "--out", str(fresh), "--no-report"],
                          capture_output=True, timeout=120).returncode == 0  # fmt: skip
    assert load_plan(fresh / "plan.json").config == resumed.config


def test_exhaustive_mode_simulates_every_candidate_and_agrees(tmp_path, capsys):
    plans = {}
    for mode in ("default", "exhaustive"):
        out = tmp_path / mode
        extra = ["--exhaustive"] if mode == "exhaustive" else []
        code, _, err = run_cli(capsys, *SMALL_PLAN, "--gpus", "1", "--no-speculative",
                               "--no-report", "--out", str(out), *extra)  # fmt: skip
        assert code == 0, err
        plans[mode] = load_plan(out / "plan.json")
    full, bounded = plans["exhaustive"], plans["default"]
    stats = full.search["bound"]
    assert stats["simulated_candidates"] == stats["candidates"] == 48  # 2 x 2 x 4 x 3, 1 GPU
    assert stats["ruled_out_by_bound"] == 0
    assert bounded.num_gpus == full.num_gpus
    assert bounded.search["bound"]["simulations"] < stats["simulations"] / 4
    # Same cost; among equal costs the exhaustive reference has at most the same headroom.
    assert full.capacity.deployment_rate_per_s <= bounded.capacity.deployment_rate_per_s * 1.021


def test_refining_the_knobs_never_loses_capacity(small_study, tmp_path, capsys):
    import shutil

    study = tmp_path / "refined"
    shutil.copytree(small_study, study)
    code, _, err = run_cli(capsys, *SMALL_PLAN, "--out", str(study), "--refine", "4",
                           "--no-report")  # fmt: skip
    assert code == 0, err
    plan, first = load_plan(study / "plan.json"), load_plan(small_study / "plan.json")
    refine = plan.search["refine"]
    assert (
        refine["trials"] == 4
        and refine["from_capacity_per_s"] == first.capacity.replica_rate_per_s
    )
    assert plan.capacity.replica_rate_per_s >= first.capacity.replica_rate_per_s
    assert plan.num_gpus == first.num_gpus  # the cost never moves
    assert refine["improved"] == (plan.capacity.replica_rate_per_s > refine["from_capacity_per_s"])


def test_same_seed_same_plan(tmp_path, capsys):
    plans = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = [*SMALL_PLAN, "--no-speculative", "--no-report", "--study", "s"]
        code, _, err = run_cli(capsys, *argv, "--out", str(out))
        assert code == 0, err
        plans.append(load_plan(out / "plan.json"))
    a, b = plans
    assert a.config == b.config and a.provenance.trial == b.provenance.trial
    assert a.predicted.tpot_s == b.predicted.tpot_s
    assert [c.trial for c in a.pareto] == [c.trial for c in b.pareto]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "intr"
    argv = [sys.executable, "-m", "tuner.cli", *SMALL_PLAN, "--no-speculative",
            "--out", str(out), "--no-report"]  # fmt: skip
    env = dict(os.environ, ROOFTUNE_TRIAL_SLEEP_S="0.5")
    proc = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True)  # fmt: skip
    deadline = time.time() + 60
    while time.time() < deadline:
        time.sleep(0.2)
        if (out / "study.journal").exists() and sum(
            t.state.name == "COMPLETE" for t in journal_trials(out, "intr")
        ) >= 2:
            break
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "run the same command to resume" in err
    # Optuna's "Trial N failed ... KeyboardInterrupt" warning and its traceback are not shown
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    kept = [t.number for t in journal_trials(out, "intr") if t.state.name == "COMPLETE"]
    assert len(kept) >= 2 and not (out / "plan.json").exists()
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    after = [t.number for t in journal_trials(out, "intr") if t.state.name == "COMPLETE"]
    assert set(kept) <= set(after)
    plan = load_plan(out / "plan.json")
    assert plan.provenance.resumed == len(kept)
    # a valid plan, and its report says it was resumed: what was read back, what ran again
    interrupted = [t for t in journal_trials(out, "intr") if t.state.name in ("RUNNING", "FAIL")]
    assert plan.provenance.retried == len(interrupted)
    from tuner.cli import main

    assert main(["report", str(out)]) == 0
    assert f"resumed: {len(kept)} simulation(s) read back" in (out / "report.md").read_text()


def test_worker_for_a_missing_study_is_one_line(capsys, tmp_path):
    journal = tmp_path / "x.journal"
    code, _, err = run_cli(capsys, "worker", "--study", "nope", "--storage", str(journal),
                           "--wait", "0")  # fmt: skip
    assert code == 1 and err.count("\n") == 1 and "no study named 'nope'" in err


def test_a_trial_stopped_by_ctrl_c_is_not_logged_by_optuna(caplog):
    """Optuna logs "Trial N failed ... KeyboardInterrupt" with a traceback before Ctrl-C
    reaches the command; after quiet_optuna() only the command's one line remains."""
    import logging
    import sys

    from tuner.search.study import quiet_optuna

    quiet_optuna()
    quiet_optuna()  # idempotent: one filter
    logger = logging.getLogger("optuna.study._optimize")
    assert sum(type(f).__name__ == "_DropInterrupts" for f in logger.filters) == 1
    try:
        raise KeyboardInterrupt
    except KeyboardInterrupt:
        interrupted = sys.exc_info()
    with caplog.at_level(logging.WARNING, logger="optuna"):
        logger.warning("Trial 3 failed with parameters: {} because of ...", exc_info=interrupted)
        logger.warning("Trial 4 failed with value None.")
    messages = [record.getMessage() for record in caplog.records]
    assert not any("Trial 3" in m for m in messages)
    assert any("Trial 4 failed" in m for m in messages)
