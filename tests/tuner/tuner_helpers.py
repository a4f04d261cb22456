"""Helpers the tuner tests share (imported by name; pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
from pathlib import Path

PG_URL = os.environ.get("ROOFTUNE_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/test")
CHROMIUM = os.environ.get("ROOFTUNE_CHROMIUM", "/usr/bin/chromium")
# A committed plan (70B on 8 H100, chat): the validation and traffic tests work on copies of it.
EXAMPLE_PLAN = Path(__file__).resolve().parents[2] / "studies/llama-3.1-70b-8xh100-chat/plan.json"

# A plan small enough to search in a few seconds: 8B on two H100s, enumerable space.
SMALL_PLAN = [
    "plan",
    "--model",
    "llama-3.1-8b",
    "--hardware",
    "h100-sxm",
    "--gpus",
    "2",
    "--workload",
    "chat",
    "--requests",
    "150",
    "--slo",
    "ttft_p99=2s",
    "--slo",
    "tpot_p99=50ms",
    "--small-space",
    "--quiet",
]


def small_spec(**overrides):
    spec = {
        "model": "llama-3.1-8b",
        "hardware": ["h100-sxm"],
        "gpus": 2,
        "workload": "chat",
        "rate": None,
        "requests": 150,
        "seed": 0,
        "slos": ["ttft_p99=2s", "tpot_p99=50ms"],
        "allow_quant": "bf16,fp8",
        "speculative": True,
        "small": True,
        "objective": "cost",
        "max_model_len": None,
        "calibration": True,
        "trials": 12,
        "sampler": "tpe",
        "engine": "vllm",
        "model_id": None,
        "exhaustive": False,
    }
    spec.update(overrides)
    return spec


def run_cli(capsys, *argv):
    from tuner.cli import main

    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def slower_stand_in(factor: float, calls: list | None = None):
    """``executor.validate.measure`` replaced by the prediction slowed by ``factor``."""

    def measure(spec, config, *, batch, prompt, context, prefill_batch=None, hardware=None):
        from simulator.cost.predict import predict
        from simulator.data.hardware import load_hardware
        from simulator.results import Measurement

        if calls is not None:
            calls.append(dict(batch=batch, prompt=prompt, context=context, prefill=prefill_batch))
        hw = load_hardware(hardware)
        steps = predict(spec, hw, config, batch=batch, prompt=prompt, context=context)
        prefill_steps = predict(
            spec, hw, config, batch=prefill_batch or batch, prompt=prompt, context=context
        )
        fields = steps.model_copy(update={"prefill": prefill_steps.prefill}).model_dump()
        for phase in ("prefill", "decode"):
            fields[phase]["time_s"] *= factor
            if fields[phase]["step_time_s"]:
                fields[phase]["step_time_s"] *= factor
        return Measurement(**fields, machine={"device_name": "stand-in"})

    return measure
