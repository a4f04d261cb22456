"""The `tune` command: one clear line and a non-zero exit for bad input, never a traceback."""

from __future__ import annotations

import json

import pytest

from tuner.cli import main


def run(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_predict_prints_ops_and_memory(capsys):
    code, out, err = run(
        capsys,
        "predict",
        "--model",
        "llama-3.1-8b",
        "--hardware",
        "h100-sxm",
        "--batch",
        "4",
        "--prompt",
        "2048",
        "--context",
        "4096",
    )
    assert code == 0, err
    assert "prefill: batch 4 x prompt 2048" in out and "decode: batch 4 at context 4096" in out
    assert "gate_up_proj" in out and "memory per GPU" in out and "KV cache" in out


def test_predict_json_is_the_prediction_contract(capsys):
    code, out, _ = run(
        capsys,
        "predict",
        "--model",
        "llama-3.1-70b",
        "--hardware",
        "h100-sxm",
        "--tp",
        "8",
        "--batch",
        "64",
        "--prompt",
        "2048",
        "--context",
        "4096",
        "--weights",
        "fp8",
        "--kv-dtype",
        "fp8",
        "--json",
    )
    assert code == 0
    document = json.loads(out)
    assert document["fits"] is True and document["config"]["weight_dtype"] == "fp8"
    assert document["decode"]["bound"] == "memory"
    assert {"name", "phase", "flops", "bytes", "time_s", "bound", "source"} <= set(
        document["ops"][0]
    )


@pytest.mark.parametrize(
    ("argv", "code", "needle"),
    [
        (["--model", "llama-3.1-405b", "--hardware", "h100-sxm"], 1, "does not fit: needs 8"),
        (
            ["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--tp", "3"],
            2,
            "tp=3 does not divide num_attention_heads=32",
        ),
        (["--model", "llama-9b", "--hardware", "h100-sxm"], 2, "unknown model 'llama-9b'"),
        (["--model", "llama-3.1-8b", "--hardware", "h1000"], 2, "did you mean h100-sxm"),
        (
            ["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--batch", "0"],
            2,
            "--batch must be at least 1",
        ),
        (
            ["--model", "llama-3.1-8b", "--hardware", "a100-sxm-80gb", "--weights", "fp8"],
            2,
            "has no fp8 tensor cores",
        ),
        # Regression cases of the CLI-edges issue.
        (
            ["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--spec", "eagle:abc:0.7"],
            2,
            "G, the drafted tokens, is a whole number",  # step level too: never ignored
        ),
        (
            [
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--gpu-memory-utilization",
                "nan",
            ],
            2,
            "not a finite number: 'nan'",
        ),  # fmt: skip
        (
            [
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--workload",
                "chat",
                "--spec",
                "eagle:abc:0.7",
            ],
            2,
            "G, the drafted tokens, is a whole number",
        ),
        (
            [
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--workload",
                "chat",
                "--spec",
                "eagle:3:high",
            ],
            2,
            "ACCEPT, the acceptance rate",
        ),
        (
            [
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--workload",
                "chat",
                "--requests",
                "1000000000",
            ],
            2,
            "more than one run simulates",
        ),
        (
            [
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--workload",
                "chat",
                "--slo",
                "tpot_p99=50",
            ],
            2,
            "needs a unit",
        ),
        (
            [
                "--model",
                "llama-3.1-8b",
                "--hardware",
                "h100-sxm",
                "--workload",
                "chat",
                "--seed",
                "-1",
            ],
            2,
            "the seed must be 0 or more",
        ),
    ],
)
def test_predict_bad_input_is_one_line(capsys, argv, code, needle):
    actual, out, err = run(capsys, "predict", *argv)
    assert actual == code, (actual, err)
    lines = err.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], err
    assert "Traceback" not in err


def test_malformed_profile_yaml_is_one_line(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\n  peak: [1, 2\n")
    code, _, err = run(capsys, "predict", "--model", "llama-3.1-8b", "--hardware", str(bad))
    assert code == 2 and len(err.strip().splitlines()) == 1 and "bad.yaml" in err


def test_hardware_and_models_listings(capsys):
    code, out, _ = run(capsys, "hardware", "list")
    assert code == 0 and "h100-sxm" in out and "h200-sxm" in out and "295" in out
    code, out, _ = run(capsys, "hardware", "show", "h200-sxm")
    assert code == 0 and "4.80 TB/s" in out and "141 GB" in out
    code, out, _ = run(capsys, "models", "list")
    assert code == 0 and "llama-4-maverick-17b-128e" in out and "405.85B" in out
    code, out, _ = run(capsys, "models", "show", "llama-3.1-8b", "--json")
    assert code == 0 and json.loads(out)["num_key_value_heads"] == 8


def test_roofline_plot(capsys, tmp_path):
    path = tmp_path / "roofline.png"
    code, out, err = run(
        capsys,
        "roofline",
        "--model",
        "llama-3.1-8b",
        "--hardware",
        "h100-sxm",
        "--batch",
        "8",
        "--prompt",
        "2048",
        "--context",
        "2048",
        "--out",
        str(path),
    )
    assert code == 0, err
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and path.stat().st_size > 20_000


def test_no_command_prints_help(capsys):
    code, out, _ = run(capsys)
    assert code == 2 and "predict" in out


def test_engine_selects_its_admission_rule_in_predict_and_capacity(capsys):
    """--engine changes the answer where the engine does: TensorRT-LLM's no-evict admission
    runs fewer requests at once on a tight cache and never preempts."""
    argv = ["--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--workload",
            "isl1000-osl1000", "--requests", "200", "--gpu-memory-utilization", "0.3", "--json"]  # fmt: skip
    results = {}
    for engine in ("vllm", "trtllm"):
        code, out, err = run(capsys, "predict", *argv, "--engine", engine)
        assert code == 0, err
        results[engine] = json.loads(out)
    assert results["trtllm"]["config"]["admission"] == "trtllm-no-evict"
    assert results["vllm"]["config"]["admission"] == "vllm"
    assert results["trtllm"]["preemptions"] == 0 < results["vllm"]["preemptions"]
    code, out, err = run(capsys, "predict", *argv, "--engine", "trtllm", "--admission",
                         "trtllm-max-utilization")  # fmt: skip
    assert code == 0 and json.loads(out)["config"]["admission"] == "trtllm-max-utilization"
    code, out, err = run(capsys, "capacity", *argv[:-1], "--requests", "100", "--engine",
                         "sglang", "--slo", "ttft_p99=60s", "--json")  # fmt: skip
    assert code == 0, err
    assert '"admission": "sglang"' in out


def test_fp8_scaling_and_fixed_lengths_reach_the_prediction(capsys):
    code, out, err = run(capsys, "predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                         "--weights", "fp8", "--fp8-scaling", "static", "--json")  # fmt: skip
    assert code == 0, err
    assert json.loads(out)["config"]["fp8_scaling"] == "static"
    code, out, err = run(capsys, "predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm",
                         "--workload", "chat:isl=500,osl=50", "--rate", "2", "--requests", "50",
                         "--json")  # fmt: skip
    assert code == 0, err
    workload = json.loads(out)["workload"]
    assert workload["mean_prompt_tokens"] == 500 and workload["mean_output_tokens"] == 50


def test_roofline_output_edges_are_one_line(capsys, tmp_path):
    """Regression cases of the CLI-edges issue: ``--out x.txt`` (matplotlib's format error),
    ``--out DIR`` (wrote DIR.png), a folder that does not exist, an --out under a file, and a
    configuration that does not fit (exit 0 with no word of it)."""
    base = ["roofline", "--model", "llama-3.1-8b", "--hardware", "h100-sxm"]
    code, _, err = run(capsys, *base, "--out", str(tmp_path / "x.txt"))
    assert code == 2 and "write a .png" in err and err.count("\n") == 1
    code, out, _ = run(capsys, *base, "--out", str(tmp_path))
    assert code == 0 and (tmp_path / "roofline.png").is_file() and "roofline.png" in out
    code, _, _ = run(capsys, *base, "--out", str(tmp_path / "new" / "r.png"))
    assert code == 0 and (tmp_path / "new" / "r.png").is_file()
    blocker = tmp_path / "file"
    blocker.write_text("")
    code, _, err = run(capsys, *base, "--out", str(blocker / "r.png"))
    assert code == 1 and err.count("\n") == 1 and str(blocker) in err
    big = ["roofline", "--model", "llama-3.1-405b", "--hardware", "h100-sxm"]
    code, _, err = run(capsys, *big, "--out", str(tmp_path / "big.png"))
    assert code == 0 and "warning: does not fit" in err


def test_an_unexpected_error_is_one_line_with_a_hint(capsys, monkeypatch):
    import tuner.commands.hardware as hardware_command

    def broken(args):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(hardware_command, "run", broken)
    code, _, err = run(capsys, "hardware", "list")
    assert code == 1 and err.count("\n") == 1
    assert "internal error: ZeroDivisionError: a bug" in err and "--debug" in err


def test_models_show_of_nothing_and_report_on_a_dead_storage(capsys, tmp_path):
    """Regression cases of the CLI-edges issue: ``tune models show ''`` answered "no config.json
    at 'config.json'"; ``tune report --storage <unreachable>`` warned, rewrote the study and
    exited 0."""
    import shutil
    from pathlib import Path

    code, _, err = run(capsys, "models", "show", "")
    assert code == 2 and "no model named" in err
    example = Path(__file__).resolve().parents[2] / "studies" / "llama-3.1-70b-8xh100-chat"
    study = tmp_path / "study"
    shutil.copytree(example, study)
    before = {p.name: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()}
    code, _, err = run(capsys, "report", str(study), "--storage",
                       "postgresql://nobody@127.0.0.1:1/none")  # fmt: skip
    assert code != 0 and err.count("\n") == 1
    assert {p.name: p.stat().st_mtime_ns for p in study.rglob("*") if p.is_file()} == before


def test_bench_limits_are_trtllm_benchs_own(capsys):
    argv = ["predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--workload",
            "isl1000-osl1000", "--requests", "100", "--bench-limits"]  # fmt: skip
    code, _, err = run(capsys, *argv)
    assert code == 2 and "use it with --engine trtllm" in err
    code, out, err = run(capsys, *argv, "--engine", "trtllm", "--json")
    assert code == 0, err
    config = json.loads(out)["config"]
    assert (config["max_num_seqs"], config["max_num_batched_tokens"]) == (256, 2048)


def test_files_are_written_whole_or_not_at_all(tmp_path, monkeypatch):
    """Every write goes through ``simulator.files.write_atomic``: a failure part-way leaves the
    old file as it was and no temporary file behind."""
    import os

    from simulator.files import write_atomic

    target = tmp_path / "deep" / "out.txt"
    write_atomic(target, "first")
    assert target.read_text() == "first"

    def broken_replace(src, dst):
        raise OSError(28, "No space left on device", str(dst))

    monkeypatch.setattr(os, "replace", broken_replace)
    with pytest.raises(OSError):
        write_atomic(target, "second")
    assert target.read_text() == "first"
    assert [p.name for p in target.parent.iterdir()] == ["out.txt"]


def test_a_short_verb_as_the_whole_process_runs_without_the_collector():
    """``tune predict`` as its own process skips the cyclic garbage collector's passes, the
    exit's included (``cli.SHORT_VERBS``); any other verb, and a command line given to ``main``
    in-process (tests, scripts), leave the collector as it was."""
    import gc
    import subprocess
    import sys
    from pathlib import Path

    script = "\n".join([
        "import gc, sys",
        "from tuner.cli import main",
        "sys.argv = ['tune', 'report', '--help']",
        "print(main(), gc.isenabled(), gc.get_freeze_count())",
        "sys.argv = ['tune', 'predict', '--model', 'llama-3.1-8b', '--hardware', 'h100-sxm']",
        "print(main(), gc.isenabled(), gc.get_freeze_count() > 0)",
    ])  # fmt: skip
    root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         cwd=root, check=True).stdout.splitlines()  # fmt: skip
    assert "gate_up_proj" in "\n".join(out)
    assert out[-1] == "0 False True" and "0 True 0" in out
    enabled, frozen = gc.isenabled(), gc.get_freeze_count()
    assert main(["models", "list"]) == 0
    assert (gc.isenabled(), gc.get_freeze_count()) == (enabled, frozen)
