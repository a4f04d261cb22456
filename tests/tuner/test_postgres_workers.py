"""Several `tune worker` processes on one PostgreSQL study: they share the simulations the
search queues, each probe runs once, and a worker killed mid-trial has its trial failed by
heartbeat and retried; the plan equals the one a single process finds.

Runs against the real server (127.0.0.1:5432). Skipped when it is down, unless
ROOFTUNE_REQUIRE_POSTGRES=1 (CI), which turns the skip into a failure.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid

import optuna
import pytest
from tuner_helpers import SMALL_PLAN

from tuner.plan import load_plan
from tuner.search.study import driver_url

pytestmark = [pytest.mark.postgres, pytest.mark.slow]

# Exhaustive on twelve candidates (bf16, 4 max_num_seqs x 3 batching, 1 GPU): enough work
# queued at once for every process to take a share.
SPACE = ["--gpus", "1", "--no-speculative", "--allow-quant", "bf16", "--exhaustive"]


def _spawn(argv, env):
    return subprocess.Popen(
        [sys.executable, "-m", "tuner.cli", *argv],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_workers_share_one_study_and_retry_a_killed_trial(pg_url, tmp_path):
    name = f"test-workers-{uuid.uuid4().hex[:10]}"
    env = dict(os.environ, ROOFTUNE_TRIAL_SLEEP_S="0.3")
    plan = _spawn(
        [
            *SMALL_PLAN,
            *SPACE,
            "--storage",
            pg_url,
            "--study",
            name,
            "--heartbeat",
            "1",
            "--out",
            str(tmp_path / "s"),
            "--no-report",
        ],
        env,
    )
    workers = [
        _spawn(
            [
                "worker",
                "--study",
                name,
                "--storage",
                pg_url,
                "--heartbeat",
                "1",
                "--grace",
                "3",
                "--wait",
                "60",
            ],
            env,
        )
        for _ in range(3)
    ]
    storage = optuna.storages.RDBStorage(driver_url(pg_url))
    victim, killed_trial = workers[0], None
    try:
        deadline = time.time() + 90
        while time.time() < deadline and killed_trial is None:
            time.sleep(0.2)
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError:
                continue
            for trial in study.get_trials(deepcopy=False):
                owner = str(trial.user_attrs.get("worker", ""))
                if (
                    trial.state.name == "RUNNING"
                    and owner.endswith(f":{victim.pid}")
                    and "rate" in trial.params
                ):  # mid-simulation, parameters set
                    victim.send_signal(signal.SIGKILL)
                    killed_trial = trial.number
                    break
        assert killed_trial is not None, "the victim never started a trial"
        outputs = [p.communicate(timeout=150) for p in [plan, *workers[1:]]]
        for proc, (_, err) in zip([plan, *workers[1:]], outputs, strict=True):
            assert proc.returncode == 0, err
        victim.wait(timeout=5)

        trials = optuna.load_study(study_name=name, storage=storage).get_trials(deepcopy=False)
        numbers = [t.number for t in trials]
        assert len(numbers) == len(set(numbers))
        complete = [t for t in trials if t.state.name == "COMPLETE"]
        probes = [tuple(sorted(t.params.items())) for t in complete]
        twice = [
            (t.number, t.user_attrs.get("worker"), t.system_attrs.get("failed_trial"))
            for t in complete
            if probes.count(tuple(sorted(t.params.items()))) > 1
        ]
        assert not twice, f"a probe ran twice: {twice} (killed {killed_trial})"
        killed = next(t for t in trials if t.number == killed_trial)
        assert killed.state.name == "FAIL"
        retries = [t for t in trials if t.system_attrs.get("failed_trial") == killed_trial]
        assert retries and retries[0].state.name == "COMPLETE"
        assert retries[0].params == killed.params
        # Every process ran something: the work was shared.
        owners = {str(t.user_attrs.get("worker", "")).rsplit(":", 1)[-1] for t in complete}
        assert len(owners) >= 3
        shared = load_plan(tmp_path / "s" / "plan.json")
        alone = tmp_path / "alone"
        single = subprocess.run(
            [sys.executable, "-m", "tuner.cli", *SMALL_PLAN, *SPACE, "--out", str(alone),
             "--no-report"],
            capture_output=True, text=True, timeout=120,
        )  # fmt: skip
        assert single.returncode == 0, single.stderr
        assert load_plan(alone / "plan.json").config == shared.config
    finally:
        for proc in [plan, *workers]:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        try:
            optuna.delete_study(study_name=name, storage=storage)
        except KeyError:
            pass
