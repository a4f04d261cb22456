"""`tune predict --workload` and `tune capacity`: summaries, JSON, and one line for bad input."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tuner.cli import main

TRACES = Path(__file__).resolve().parent.parent / "data" / "traces"
BASE = ("--model", "llama-3.1-8b", "--hardware", "h100-sxm")


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_workload_summary(capsys):
    code, out, err = run(
        capsys,
        "predict",
        *BASE,
        "--workload",
        "chat",
        "--requests",
        "300",
        "--slo",
        "ttft_p99=2s",
        "--slo",
        "tpot_p99=1ms",
    )
    assert code == 0, err
    for text in (
        "TTFT",
        "TPOT",
        "ITL",
        "E2E",
        "queueing",
        "goodput",
        "KV cache",
        "preemptions",
        "ttft_p99",
        "NO",
    ):
        assert text in out
    assert "overloaded" not in out


def test_predict_workload_json_and_overload(capsys):
    code, out, err = run(
        capsys,
        "predict",
        *BASE,
        "--workload",
        "chat",
        "--requests",
        "1500",
        "--rate",
        "80",
        "--json",
    )
    assert code == 0, err
    prediction = json.loads(out)
    assert prediction["overloaded"] is True and prediction["fits"] is True
    assert set(prediction["ttft_s"]) >= {"mean", "p50", "p90", "p99"}
    code, out, _ = run(
        capsys, "predict", *BASE, "--workload", "chat", "--requests", "1500", "--rate", "80"
    )
    assert "WARNING: overloaded" in out


def test_trace_replay_from_the_command_line(capsys):
    code, out, err = run(capsys, "predict", *BASE, "--workload", str(TRACES / "small.csv"))
    assert code == 0, err
    assert "small.csv: 4 requests" in out


def test_capacity_command(capsys):
    code, out, err = run(
        capsys,
        "capacity",
        *BASE,
        "--workload",
        "chat",
        "--requests",
        "300",
        "--slo",
        "ttft_p99=1s",
        "--slo",
        "tpot_p99=20ms",
        "--json",
    )
    assert code == 0, err
    answer = json.loads(out)
    # The bisection runs below the step model's bound, in a handful of simulations.
    assert 0 < answer["rate_per_s"] <= answer["bound_rate_per_s"]
    assert answer["bound_limit"] and 0 < answer["simulations"] <= 12


def test_capacity_exports(capsys, tmp_path):
    code, out, err = run(
        capsys,
        "capacity",
        *BASE,
        "--workload",
        "chat",
        "--requests",
        "200",
        "--slo",
        "tpot_p99=30ms",
        "--timeline",
        str(tmp_path / "t.csv"),
        "--trace",
        str(tmp_path / "t.json"),
        "--spec",
        "ngram:3:0.6",
    )
    assert code == 0, err
    assert out.startswith("capacity: ") and "speculative (ngram, g=3" in out
    assert len((tmp_path / "t.csv").read_text().splitlines()) == 201
    assert json.loads((tmp_path / "t.json").read_text())["traceEvents"]


@pytest.mark.parametrize(
    "argv, code, message",
    [
        (("predict", "--workload", "chat", "--rate", "-2"), 2, "rate must be positive"),
        (("predict", "--workload", "chat", "--rate", "0"), 2, "rate must be positive"),
        (("predict", "--workload", str(TRACES / "empty.jsonl")), 2, "holds no requests"),
        (("predict", "--workload", str(TRACES / "garbled.jsonl")), 2, "not valid JSON"),
        (
            ("predict", "--workload", "isl2048-osl128", "--max-model-len", "1024"),
            2,
            "past --max-model-len 1024",
        ),
        (("predict", "--workload", "chat", "--slo", "ttft_p99=fast"), 2, "not a duration"),
        (
            ("capacity", "--workload", "chat", "--requests", "100", "--slo", "ttft_p99=1us"),
            3,
            "no arrival rate meets the SLOs",
        ),
        (("capacity", "--workload", "chat", "--spec", "draft"), 2, "needs a draft model"),
        (("capacity", "--workload", "chat", "--spec", "draft:nope:3:0.5"), 2, "nope"),
        (("capacity", "--workload", "chat", "--spec", "ngram:3:1.5"), 2, "acceptance_rate"),
    ],
)
def test_bad_input_is_one_line(capsys, argv, code, message):
    got, out, err = run(capsys, argv[0], *BASE, *argv[1:])
    assert got == code, err
    assert message in err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
