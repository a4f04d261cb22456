"""`tune measure` around the executor: on a machine without a GPU one clear line; with a GPU
(here the executor's measurement replaced by a stand-in 10% slower than the model) the measured
step beside the predicted one, with the error. The measurement itself runs on GPU machines
(`studies/`)."""

from __future__ import annotations

import json

import pytest
from tuner_helpers import slower_stand_in

from tuner.cli import main

ARGS = ("measure", "--model", "llama-3.1-8b", "--hardware", "h100-sxm", "--batch", "1")
ARGS += ("--prompt", "512", "--context", "1024")


def test_without_a_gpu_one_line(capsys, monkeypatch):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    code = main(list(ARGS))
    err = capsys.readouterr().err
    assert code != 0
    assert "CUDA GPU" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_measured_beside_predicted_with_the_error(capsys, monkeypatch):
    import executor.validate

    monkeypatch.setattr(executor.validate, "measure", slower_stand_in(1.1))
    code = main([*ARGS, "--json"])
    out = capsys.readouterr().out
    assert code == 0
    rows = {row["phase"]: row for row in json.loads(out)["error"]}
    for phase in ("prefill", "decode"):
        row = rows[phase]
        assert row["measured_s"] == pytest.approx(1.1 * row["predicted_s"])
        assert row["relative_error"] == pytest.approx(1 / 1.1 - 1), "(predicted - measured) / m"

    code = main(list(ARGS))
    out = capsys.readouterr().out
    assert code == 0
    assert "stand-in (h100-sxm), tp=1" in out
    assert out.count("-9.1%") == 2, out
