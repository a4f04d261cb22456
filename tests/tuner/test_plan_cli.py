"""`tune plan` end to end on a small space: the study directory, resume, and bad input."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
from tuner_helpers import SMALL_PLAN, run_cli

from simulator.specs import DeploymentConfig
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
    from tuner.study import open_storage

    study = optuna.load_study(
        study_name=name, storage=open_storage(str(directory / "study.journal"))
    )
    return study.get_trials(deepcopy=False)


@pytest.fixture(scope="module")
def small_study(tmp_path_factory):
    out = tmp_path_factory.mktemp("plan") / "study"
    from tuner.cli import main

    code = main([*SMALL_PLAN, "--trials", "12", "--out", str(out)])
    assert code == 0
    return out


def test_plan_writes_the_study_directory(small_study):
    for name in EXPECTED:
        assert (small_study / name).is_file(), name
    assert not [p for p in small_study.iterdir() if p.name.startswith(".")]
    plan = load_plan(small_study / "plan.json")
    assert plan.schema_version == "1" and plan.num_gpus <= plan.gpu_budget == 2
    assert all(check.met for check in plan.slos)
    assert plan.pareto and plan.provenance.study_name == "study"
    assert plan.quantization.risk in ("none", "low")
    assert plan.engines["vllm"]["memory_fraction"] > 0


def test_plan_is_memory_feasible_under_each_engine_rule(small_study):
    plan = load_plan(small_study / "plan.json")
    m = plan.memory
    inputs = EngineInputs(
        config=DeploymentConfig(**plan.config),
        model_id=plan.model_id,
        hbm_bytes=m.hbm_bytes,
        weights_bytes=m.weights_bytes,
        activation_bytes=m.activation_bytes,
        reserved_bytes=m.reserved_bytes,
        kv_cache_bytes=m.kv_cache_bytes,
    )
    need = m.kv_tokens_needed * m.kv_bytes_per_token
    for engine, fraction in m.engine_fractions.items():
        assert kv_cache_bytes_given(engine, inputs, fraction) >= need, engine
        assert total_bytes_used(engine, inputs, fraction) <= m.hbm_bytes, engine


def test_rerun_resumes_and_keeps_every_finished_trial(small_study, capsys):
    before = {
        t.number: (t.params, t.values)
        for t in journal_trials(small_study, "study")
        if t.state.name == "COMPLETE"
    }
    code, out, err = run_cli(capsys, *SMALL_PLAN, "--trials", "15", "--out", str(small_study))
    assert code == 0, err
    after = {
        t.number: (t.params, t.values)
        for t in journal_trials(small_study, "study")
        if t.state.name == "COMPLETE"
    }
    assert len(before) == 12 and len(after) == 15
    assert all(after[n] == before[n] for n in before)
    assert "best plan:" in out and "files in" in out


def test_report_regenerates(small_study, capsys):
    (small_study / "report.html").unlink()
    code, out, err = run_cli(capsys, "report", str(small_study))
    assert code == 0, err
    assert (small_study / "report.html").stat().st_size > 10_000


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
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(capsys, tmp_path, extra, code, needle):
    out_dir = tmp_path / "never"
    args = [*SMALL_PLAN, "--trials", "3", "--out", str(out_dir)]
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
def test_crash_mid_study_loses_no_finished_trial(tmp_path):
    """SIGKILL while a trial runs; the re-run fails and re-queues it, keeps the rest."""
    out = tmp_path / "crash"
    argv = [
        sys.executable,
        "-m",
        "tuner.cli",
        *SMALL_PLAN,
        "--trials",
        "8",
        "--out",
        str(out),
        "--no-report",
    ]
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
    assert len(complete) == 8 and all(complete[n] == v for n, v in before.items())
    assert not [t for t in trials if t.state.name == "RUNNING"]
    assert json.loads((out / "plan.json").read_text())["schema_version"] == "1"


def test_exhaustive_mode_tries_every_point_and_finds_the_best(tmp_path, capsys):
    out = tmp_path / "all"
    code, _, err = run_cli(
        capsys,
        *SMALL_PLAN,
        "--gpus",
        "1",
        "--no-speculative",
        "--exhaustive",
        "--no-report",
        "--out",
        str(out),
    )
    assert code == 0, err
    trials = journal_trials(out, "all")
    labels = {t.user_attrs["label"] for t in trials if "label" in t.user_attrs}
    assert len(labels) == 48  # 2 weights x 2 KV x 4 max_num_seqs x 3 batching, 1 GPU
    plan = load_plan(out / "plan.json")
    feasible = [
        t
        for t in trials
        if t.state.name == "COMPLETE" and all(v <= 0 for v in t.constraints.values())
    ]
    best = max(t.values[0] for t in feasible)
    assert plan.predicted["goodput_tokens_per_s_per_gpu"] == pytest.approx(best)


def test_same_seed_same_plan(tmp_path, capsys):
    plans = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = [*SMALL_PLAN, "--no-speculative", "--trials", "10", "--no-report", "--study", "s"]
        code, _, err = run_cli(capsys, *argv, "--out", str(out))
        assert code == 0, err
        plans.append(load_plan(out / "plan.json"))
    a, b = plans
    assert a.config == b.config and a.provenance.trial == b.provenance.trial
    assert a.predicted["tpot_s"] == b.predicted["tpot_s"]
    assert [c.trial for c in a.pareto] == [c.trial for c in b.pareto]


@pytest.mark.slow
def test_ctrl_c_stops_cleanly_and_the_rerun_resumes(tmp_path):
    out = tmp_path / "intr"
    argv = [sys.executable, "-m", "tuner.cli", *SMALL_PLAN, "--no-speculative", "--trials", "6",
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
    kept = [t.number for t in journal_trials(out, "intr") if t.state.name == "COMPLETE"]
    assert len(kept) >= 2 and not (out / "plan.json").exists()
    rerun = subprocess.run(argv, capture_output=True, text=True, timeout=120)
    assert rerun.returncode == 0, rerun.stderr
    after = [t.number for t in journal_trials(out, "intr") if t.state.name == "COMPLETE"]
    assert set(kept) <= set(after) and len(after) == 6


def test_worker_for_a_missing_study_is_one_line(capsys, tmp_path):
    journal = tmp_path / "x.journal"
    code, _, err = run_cli(capsys, "worker", "--study", "nope", "--storage", str(journal),
                           "--wait", "0")  # fmt: skip
    assert code == 1 and err.count("\n") == 1 and "no study named 'nope'" in err
