"""The executor's timings are typed records: ``measure_point`` returns ``StepMeasurement``s and
``executor.validate.measure`` turns a prefill and a decode record into a ``Measurement``.

The GPU parts (building the model, timing it) are replaced by stand-ins that hand back the
records a GPU run would, so what is checked here is the contract, on any machine.
"""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from simulator.data.models import get_model
from simulator.data.specs import DeploymentConfig
from simulator.results import Measurement, StepMeasurement

pytest.importorskip("torch")


def timed(**fields) -> StepMeasurement:
    """A record as ``measure_point`` returns it for a step that ran."""
    base = dict(weights="bf16", fits=True, flops=2e12, bytes=4e9, tokens_per_s=1000.0)
    record = StepMeasurement(**(base | fields))
    seconds = record.time_s or 0.0
    return record.model_copy(
        update={"achieved_bytes_per_s": 4e9 / seconds, "achieved_flops_per_s": 2e12 / seconds}
    )


@pytest.fixture
def stand_ins(monkeypatch):
    import torch

    import executor.parallel
    import executor.points
    import executor.validate

    records = {
        "prefill": timed(phase="prefill", batch=1, prompt=2048, time_s=0.1),
        "decode": timed(phase="decode", batch=8, context=1024, time_s=0.01),
    }
    monkeypatch.setattr(executor.validate, "_require_cuda", lambda: torch)
    monkeypatch.setattr(executor.parallel, "init_distributed", lambda: (0, 1))
    monkeypatch.setattr(executor.parallel, "finish_distributed", lambda: None)
    monkeypatch.setattr(executor.points, "machine_info", lambda: {"device_name": "NVIDIA H100"})
    monkeypatch.setattr(executor.points, "prepare_model", lambda spec, **kw: object())

    def measure_point(model, spec, *, prompt=0, context=0, **kw):
        return records["prefill" if prompt else "decode"]

    monkeypatch.setattr(executor.points, "measure_point", measure_point)
    return records


def test_measurement_carries_each_phase(stand_ins):
    from executor.validate import measure

    result = measure(
        get_model("llama-3.1-8b"), DeploymentConfig(), batch=8, prompt=2048, context=1024
    )
    assert isinstance(result, Measurement) and result.fits and result.reason is None
    assert result.prefill is not None and result.decode is not None
    assert result.prefill.time_s == pytest.approx(0.1)
    assert result.decode.step_time_s == pytest.approx(0.01)
    assert result.decode.achieved_bytes_per_s == pytest.approx(4e11)
    assert result.machine["device_name"] == "NVIDIA H100"


def test_a_point_out_of_memory_makes_the_measurement_unfit(stand_ins):
    from executor.validate import measure

    stand_ins["decode"] = StepMeasurement(
        phase="decode", weights="bf16", batch=8, context=1024, reason="out of memory: x"
    )
    result = measure(
        get_model("llama-3.1-8b"), DeploymentConfig(), batch=8, prompt=2048, context=1024
    )
    assert not result.fits and result.reason == "out of memory: x"
    assert result.decode is None and result.prefill is not None


def test_records_refuse_undeclared_fields():
    with pytest.raises(ValidationError):
        StepMeasurement(phase="decode", weights="bf16", batch=1, context=1, speed=3.0)
