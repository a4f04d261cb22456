"""``tune roofline``: draw the GPU's roofline with every prefill and decode op of a config."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("roofline", help="plot the roofline with a config's ops")
    common.add_model_hardware_args(parser)
    common.add_deployment_args(parser)
    common.add_step_shape_args(parser)
    parser.add_argument(
        "--out", default="roofline.png", help="PNG to write (default roofline.png)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.errors import ConfigError
    from tuner.roofline_plot import plot_roofline

    prediction, hardware = common.predict_from_args(args)
    if prediction.prefill is None:
        raise ConfigError(prediction.reason or "invalid configuration")
    plot_roofline(prediction, hardware, args.out)
    print(f"wrote {args.out}")
    return 0
