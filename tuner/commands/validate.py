"""``tune validate PLAN.json``: measure a plan's configuration on this GPU and record the error
in the plan (``--dry-run`` prints the shapes and predictions without a GPU). TP > 1 runs under
``torchrun --nproc-per-node TP -m tuner.cli validate PLAN.json``."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "validate",
        help="measure a plan on the GPU and write the error into it",
        description=__doc__,
    )
    parser.add_argument("plan", help="plan.json written by tune plan")
    parser.add_argument(
        "--dry-run", action="store_true", help="show the shapes and predictions; measure nothing"
    )
    parser.add_argument("--no-calibration", action="store_true")
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os
    import shlex
    import sys
    from pathlib import Path

    from simulator.cost.predict import predict
    from simulator.data.hardware import load_hardware
    from simulator.data.models import get_model
    from tuner.plan import load_plan, write_json_atomic
    from tuner.validation import validation_section, validation_shape

    plan = load_plan(args.plan)
    model = get_model(plan.model)
    hardware = load_hardware(plan.hardware, calibration=not args.no_calibration)
    config = plan.config
    shape = validation_shape(plan)
    # The decode step at the traffic's mean batch, and one mean-length prompt's prefill.
    decode_prediction = predict(
        model, hardware, config, batch=shape.batch, prompt=1, context=shape.context
    )
    prefill_prediction = predict(model, hardware, config, batch=1, prompt=shape.prompt, context=1)
    predicted = decode_prediction.model_copy(update={"prefill": prefill_prediction.prefill})
    if args.dry_run:
        rows = [
            (
                "decode",
                f"batch {shape.batch} at context {shape.context}",
                predicted.decode.time_s if predicted.decode else float("nan"),
            ),
            (
                "prefill",
                f"one prompt of {shape.prompt} tokens",
                predicted.prefill.time_s if predicted.prefill else float("nan"),
            ),
        ]
        if args.json:
            common.print_json({"shape": shape.__dict__, "prediction": predicted})
        else:
            from simulator.units import format_seconds

            for phase, what, seconds in rows:
                print(f"{phase:8s} {what:32s} predicted {format_seconds(seconds)}")
        return 0

    from executor.validate import measure

    # One build of the model serves both phases: the decode step at the mean batch and one
    # mean-length prompt's prefill.
    measured = measure(
        model,
        config,
        batch=shape.batch,
        prompt=shape.prompt,
        context=shape.context,
        prefill_batch=1,
        hardware=hardware.name,
    )
    command = "tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    section = validation_section(plan, shape, predicted, measured, command=command)
    if int(os.environ.get("RANK", "0")) == 0:
        updated = plan.model_copy(update={"validation": section})
        write_json_atomic(Path(args.plan), updated.model_dump(mode="json"))
        if args.json:
            common.print_json(section)
        else:
            for point in section["points"]:
                print(
                    f"{point['phase']:8s} predicted {point['predicted_s'] * 1e3:9.3f} ms  "
                    f"measured {point['measured_s'] * 1e3:9.3f} ms  "
                    f"error {100 * point['relative_error']:+.1f}%"
                )
            print(f"validation: {section['status']} (written to {args.plan})")
    return 0
