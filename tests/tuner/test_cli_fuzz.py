"""The CLI contract under generated input: every verb's flags with odd values, and corrupted
input files. Whatever comes in, ``tune`` answers with an exit code of the documented set
(0, 1, 2, 3) and, on failure, one line naming a known error: never a traceback, never an
"internal error" (the top-level handler's last resort, which would mean an unchecked input).

The values are drawn to be bounded (at most a few thousand requests, small GPU budgets), so
most cases take well under a second, and each is held to 30 s and 2 GiB of new peak memory; the suite runs 2,215 cases (1,000 + 750 + 250 + 150 + 40
+ 25: the corrupted plans go through export, validate, validate --traffic and report, and the
last 25 through `tune plan` itself).
"""

from __future__ import annotations

import json

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tuner.cli import main

CODES = {0, 1, 2, 3}
SETTINGS = dict(
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=True,
)

# Values a flag might be given: good ones, and the kinds of bad ones users type.
WORDS = st.sampled_from(
    ["", " ", "0", "-1", "1", "2", "3", "8", "16", "1e3", "nan", "inf", "-inf", "abc", "4,8",
     "h100-sxm", "h200-sxm", "llama-3.1-8b", "llama-3.1-70b", "fp8", "bf16", "int4", "chat",
     "isl128-osl128", "2s", "50ms", "ttft_p99=2s", "tpot_p99=50", "x=y", "\n", "../x", "%s"]
)  # fmt: skip
NUMBERS = st.one_of(
    st.integers(-3, 300).map(str),
    st.floats(allow_nan=True, allow_infinity=True, width=32).map(repr),
)


CASE_SECONDS, CASE_BYTES = 30.0, 2 << 30  # no case may run longer or grow the process more


def _run(capsys, argv: list[str]) -> tuple[int, str]:
    import resource
    import time

    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # Linux: KiB
    start = time.perf_counter()
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's own usage errors
        code = exit_.code if isinstance(exit_.code, int) else 2
    seconds = time.perf_counter() - start
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak
    err = capsys.readouterr().err
    assert seconds < CASE_SECONDS, (argv, f"{seconds:.1f} s")
    assert grown < CASE_BYTES, (argv, f"the peak memory grew by {grown / 2**30:.2f} GiB")
    return code, err


def _check(code: int, err: str, argv: list[str]) -> None:
    assert code in CODES, (code, argv, err)
    assert "Traceback" not in err, (argv, err)
    assert "internal error" not in err, (argv, err)
    if code != 0:
        assert err.strip(), (argv, "a failure with no message")


STEP_FLAGS = ["--tp", "--pp", "--dp", "--ep", "--cp", "--batch", "--prompt", "--context",
              "--max-num-seqs", "--max-num-batched-tokens", "--max-model-len",
              "--gpu-memory-utilization", "--weights", "--activations", "--kv-dtype",
              "--attention", "--fp8-scaling", "--model", "--hardware"]  # fmt: skip


@settings(max_examples=1000, **SETTINGS)
@given(pairs=st.lists(st.tuples(st.sampled_from(STEP_FLAGS), st.one_of(WORDS, NUMBERS)),
                      max_size=4))  # fmt: skip
def test_predict_and_roofline_flags(capsys, tmp_path_factory, pairs):
    argv = ["predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm"]
    for flag, value in pairs:
        argv += [flag, value]
    code, err = _run(capsys, argv)
    _check(code, err, argv)


SERVING_FLAGS = ["--rate", "--requests", "--seed", "--slo", "--workload", "--spec", "--engine",
                 "--admission", "--router", "--tp", "--max-num-seqs"]  # fmt: skip
SERVING_WORDS = st.one_of(
    WORDS,
    st.sampled_from(["eagle:3:0.7", "draft:llama-3.2-1b:2:0.6", "ngram:abc", "eagle:3:2",
                     "chat:concurrency=8", "chat:cv=3", "code:prefix=0.5", "chat:isl=100,osl=20",
                     "chat:requests=0", "chat:bogus=1", "trtllm", "sglang", "vllm",
                     "trtllm-no-evict", "round_robin"]),
)  # fmt: skip


@settings(max_examples=750, **SETTINGS)
@given(pairs=st.lists(st.tuples(st.sampled_from(SERVING_FLAGS), SERVING_WORDS), max_size=4),
       capacity=st.booleans())  # fmt: skip
def test_serving_flags(capsys, pairs, capacity):
    verb = "capacity" if capacity else "predict"
    argv = [verb, "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--workload", "chat",
            "--requests", "60"]  # fmt: skip
    for flag, value in pairs:
        if flag == "--requests" and value.lstrip("-").isdigit() and int(value) > 2000:
            value = "2000"  # bounded: the request cap itself is tested on its own
        argv += [flag, value]
    if capacity:
        argv += ["--slo", "ttft_p99=5s"]
    code, err = _run(capsys, argv)
    _check(code, err, argv)


def _corrupt(text: str, data) -> str:
    """A file's text with a cut, a deletion or a replaced slice."""
    kind = data.draw(st.sampled_from(["cut", "delete", "replace", "empty", "binary"]))
    if kind == "empty" or not text:
        return ""
    if kind == "binary":
        return "\x00\xff" + text[:50]
    start = data.draw(st.integers(0, len(text) - 1))
    if kind == "cut":
        return text[:start]
    stop = data.draw(st.integers(start, min(len(text), start + 40)))
    if kind == "delete":
        return text[:start] + text[stop:]
    return (
        text[:start]
        + data.draw(st.sampled_from(["null", "-1", '"x"', "[]", "{", "1e999"]))
        + text[stop:]
    )


@pytest.fixture(scope="module")
def plan_text():
    from pathlib import Path

    return (Path(__file__).resolve().parents[2] / "studies" / "llama-3.1-70b-8xh100-chat"
            / "plan.json").read_text()  # fmt: skip


@settings(max_examples=250, **SETTINGS)
@given(data=st.data())
def test_corrupted_input_files(capsys, tmp_path_factory, plan_text, data):
    """Plans, model configs, hardware profiles, traces and bench files with a piece cut,
    replaced or deleted: one line, a documented code."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    directory = tmp_path_factory.mktemp("bad")
    kind = data.draw(st.sampled_from(["plan", "config", "profile", "trace", "micro"]))
    if kind == "plan":
        path = directory / "plan.json"
        path.write_text(_corrupt(plan_text, data), errors="ignore")
        verb = data.draw(st.sampled_from(["export", "validate", "traffic", "report"]))
        argv = {
            "export": ["export", str(path), "--engine", "vllm", "--out", str(directory / "o")],
            "validate": ["validate", str(path), "--dry-run"],
            "traffic": ["validate", str(path), "--traffic", "--dry-run", "--requests", "20"],
            "report": ["report", str(directory)],
        }[verb]
    elif kind == "config":
        config = json.loads((root / "tests/data/configs/llama-tiny.json").read_text())
        path = directory / "config.json"
        path.write_text(_corrupt(json.dumps(config), data), errors="ignore")
        argv = ["predict", "--model", str(path), "--hardware", "h100-sxm"]
    elif kind == "profile":
        path = directory / "gpu.yaml"
        path.write_text(_corrupt((root / "hardware_profiles/h100-sxm.yaml").read_text(), data),
                        errors="ignore")  # fmt: skip
        argv = ["predict", "--model", "llama-3.1-8b", "--hardware", str(path)]
    elif kind == "trace":
        path = directory / "trace.jsonl"
        rows = "".join(f'{{"arrival_s": {i * 0.1}, "prompt_tokens": 100, "output_tokens": 10}}\n'
                       for i in range(20))  # fmt: skip
        path.write_text(_corrupt(rows, data), errors="ignore")
        argv = ["predict", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--workload",
                str(path)]  # fmt: skip
    else:
        micro = {"model": "llama-3.1-8b", "machine": {"device_name": "NVIDIA H100 80GB HBM3"},
                 "results": {"hbm": {"read_bytes_per_s": 3e12}}}  # fmt: skip
        (directory / "micro.json").write_text(_corrupt(json.dumps(micro), data), errors="ignore")
        argv = ["calibrate", "--from", str(directory), "--hardware", "h100-sxm", "--out",
                str(directory / "cal.yaml")]  # fmt: skip
    code, err = _run(capsys, argv)
    _check(code, err, argv)


@settings(max_examples=150, **SETTINGS)
@given(verb=st.sampled_from([["hardware", "show"], ["models", "show"], ["hardware", "list"],
                             ["models", "list"], ["schema"]]),
       words=st.lists(st.one_of(WORDS, NUMBERS), max_size=2))  # fmt: skip
def test_listing_verbs(capsys, verb, words):
    argv = [*verb, *words]
    code, err = _run(capsys, argv)
    _check(code, err, argv)


@settings(max_examples=40, **SETTINGS)
@given(pairs=st.lists(st.tuples(st.sampled_from(["--batch", "--prompt", "--context", "--tp",
                                                 "--weights", "--out"]), st.one_of(WORDS, NUMBERS)),
                      max_size=3))  # fmt: skip
def test_roofline_flags(capsys, tmp_path_factory, pairs):
    out = tmp_path_factory.mktemp("roofline") / "r.png"
    argv = ["roofline", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--out", str(out)]
    for flag, value in pairs:
        if flag == "--out":
            value = str(out.parent / value.strip("/").replace("..", "up"))
        argv += [flag, value]
    code, err = _run(capsys, argv)
    _check(code, err, argv)


PLAN_FLAGS = ["--gpus", "--rate", "--requests", "--seed", "--slo", "--allow-quant", "--tp",
              "--pp", "--trials", "--timeout", "--objective", "--max-model-len", "--engine",
              "--speculative", "--workload"]  # fmt: skip


@settings(max_examples=25, **SETTINGS)
@given(pairs=st.lists(st.tuples(st.sampled_from(PLAN_FLAGS), st.one_of(WORDS, NUMBERS)),
                      max_size=3))  # fmt: skip
def test_plan_flags(capsys, tmp_path_factory, pairs):
    """``tune plan`` with odd values on a small space (bounded: at most 4 GPUs, 80 requests)."""
    out = tmp_path_factory.mktemp("plan")
    argv = ["plan", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--gpus", "2",
            "--workload", "chat", "--requests", "60", "--small-space", "--quiet", "--out",
            str(out)]  # fmt: skip
    for flag, value in pairs:
        if flag == "--gpus" and value.lstrip("-").isdigit() and int(value) > 4:
            value = "4"
        if flag == "--requests" and value.lstrip("-").isdigit() and int(value) > 80:
            value = "80"
        argv += [flag, value]
    code, err = _run(capsys, argv)
    _check(code, err, argv)
