"""``tune measure``: run one configuration on this GPU and print the Measurement beside the
Prediction, with the relative error of each phase. TP > 1 runs under
``torchrun --nproc-per-node TP -m tuner.cli measure ...``."""

from __future__ import annotations

import argparse
from typing import Any

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "measure",
        help="run one configuration on the GPU; measured vs predicted",
        description=__doc__,
    )
    common.add_model_hardware_args(parser, hardware_required=False)
    common.add_deployment_args(parser)
    common.add_step_shape_args(parser)
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import os

    from executor.gpu import require_profile
    from executor.validate import measure
    from simulator.cost.predict import predict
    from simulator.data.hardware import load_hardware
    from simulator.data.models import get_model
    from simulator.results import relative_error

    spec = get_model(args.model)
    hardware = args.hardware or require_profile()
    if args.max_model_len is None:
        args.max_model_len = max(args.prompt, args.context) + 16
    config = common.config_from_args(args)
    predicted = predict(
        spec,
        load_hardware(hardware, calibration=not args.no_calibration),
        config,
        batch=args.batch,
        prompt=args.prompt,
        context=args.context,
    )
    measured = measure(
        spec, config, batch=args.batch, prompt=args.prompt, context=args.context, hardware=hardware
    )
    if int(os.environ.get("RANK", "0")) != 0:
        return 0
    rows: list[dict[str, Any]] = []
    for name, field in (("prefill", "time_s"), ("decode", "step_time_s")):
        p, m = getattr(predicted, name), getattr(measured, name)
        p_value: float | None = getattr(p, field) if p else None
        m_value: float | None = getattr(m, field) if m else None
        error = relative_error(p_value, m_value) if p_value and m_value else None
        rows.append(
            {"phase": name, "predicted_s": p_value, "measured_s": m_value, "relative_error": error}
        )
    if args.json:
        common.print_json({"prediction": predicted, "measurement": measured, "error": rows})
        return 0
    print(
        f"{spec.name} on {measured.machine.get('device_name')} ({hardware}), tp={config.tp}, "
        f"weights={config.weight_dtype}, batch={args.batch}, prompt={args.prompt}, "
        f"context={args.context}"
    )
    if not measured.fits:
        print(f"measured: infeasible ({measured.reason})")
    print(f"{'phase':>8} {'predicted':>12} {'measured':>12} {'error':>8}")
    for row in rows:
        p = f"{row['predicted_s'] * 1e3:10.3f}ms" if row["predicted_s"] else "-"
        m = f"{row['measured_s'] * 1e3:10.3f}ms" if row["measured_s"] else "-"
        e = f"{row['relative_error']:+7.1%}" if row["relative_error"] is not None else "-"
        print(f"{row['phase']:>8} {p:>12} {m:>12} {e:>8}")
    return 0
