"""`tune validate`: the shapes a plan stands for, the validation section it gets, and a clear
refusal without a GPU (the measurement itself runs on GPU machines only)."""

from __future__ import annotations

import json

import pytest
from tuner_helpers import slower_stand_in

from simulator.cost.predict import predict
from simulator.data.hardware import load_hardware
from simulator.data.models import get_model
from simulator.results import Measurement
from tuner.cli import main
from tuner.plan import load_plan
from tuner.validation import validation_section, validation_shape


def test_shape_follows_the_plans_traffic(plan_file):
    plan = load_plan(plan_file)
    shape = validation_shape(plan)
    assert shape.batch == round(plan.predicted.mean_batch)
    assert shape.prompt == round(plan.workload.mean_prompt_tokens)
    expected = plan.workload.mean_prompt_tokens + plan.workload.mean_output_tokens / 2
    assert shape.context == round(expected), "mean context of a running request"


def test_validation_section_compares_each_phase(plan_file):
    plan = load_plan(plan_file)
    shape = validation_shape(plan)
    config = plan.config
    model, hardware = get_model(plan.model), load_hardware(plan.hardware)
    predicted = predict(
        model, hardware, config, batch=shape.batch, prompt=shape.prompt, context=shape.context
    )
    # A measurement 5 % slower in decode and 20 % slower in prefill than predicted.
    measured = Measurement(
        **predicted.model_dump(exclude={"source"}),
        machine={"device_name": "test"},
    ).model_copy(
        update={
            "decode": predicted.decode.model_copy(
                update={"time_s": predicted.decode.time_s * 1.05}
            ),
            "prefill": predicted.prefill.model_copy(
                update={"time_s": predicted.prefill.time_s * 1.25}
            ),
        }
    )
    section = validation_section(plan, shape, predicted, measured, command="tune validate x")
    errors = {p["phase"]: p["relative_error"] for p in section["points"]}
    assert errors["decode"] == pytest.approx(1 / 1.05 - 1)
    assert errors["prefill"] == pytest.approx(1 / 1.25 - 1)
    assert section["median_abs_relative_error"] == pytest.approx((0.05 / 1.05 + 0.25 / 1.25) / 2)
    assert section["status"] == "differs"  # median 12.4 % > 10 %
    assert any("speculative" in note for note in section["notes"])


def test_dry_run_needs_no_gpu(plan_file, capsys):
    assert main(["validate", str(plan_file), "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "decode" in out and "prefill" in out and "predicted" in out


def test_without_a_gpu_one_line_and_the_plan_untouched(plan_file, capsys):
    torch = pytest.importorskip("torch", reason="the executor extra (torch) is not installed")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present: this checks the refusal without one")
    before = plan_file.read_bytes()
    code = main(["validate", str(plan_file)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 1 and len(err) == 1 and "CUDA GPU" in err[0]
    assert plan_file.read_bytes() == before
    assert json.loads(before)["validation"] is None


def test_validate_writes_the_measured_steps_into_the_plan(plan_file, capsys, monkeypatch):
    """With the executor's measurement replaced by the prediction slowed by 10 %, the plan gets
    a validation section of both phases at -9.1 %, from one build of the model."""
    import executor.validate

    calls: list = []
    monkeypatch.setattr(executor.validate, "measure", slower_stand_in(1.1, calls))
    shape = validation_shape(load_plan(plan_file))
    assert main(["validate", str(plan_file)]) == 0
    out = capsys.readouterr().out
    assert calls == [
        dict(batch=shape.batch, prompt=shape.prompt, context=shape.context, prefill=1)
    ]
    section = json.loads(plan_file.read_text())["validation"]
    assert {p["phase"] for p in section["points"]} == {"prefill", "decode"}
    for point in section["points"]:
        assert point["relative_error"] == pytest.approx(1 / 1.1 - 1, abs=0.002), point
    assert section["status"] == "agrees" and "written to" in out
