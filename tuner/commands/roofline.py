"""``tune roofline``: draw the GPU's roofline with every prefill and decode op of a config."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("roofline", help="plot the roofline with a config's ops")
    common.add_model_hardware_args(parser)
    common.add_deployment_args(parser)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--prompt", type=int, default=1024)
    parser.add_argument("--context", type=int, default=1024)
    parser.add_argument(
        "--out", default="roofline.png", help="PNG to write (default roofline.png)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.predict import predict
    from tuner.roofline_plot import plot_roofline

    model, hardware = common.load_model_and_hardware(args)
    overrides = {}
    if args.max_model_len is None:
        overrides["max_model_len"] = max(args.prompt, args.context + 1, 16)
    config = common.config_from_args(args, **overrides)
    prediction = predict(
        model, hardware, config, batch=args.batch, prompt=args.prompt, context=args.context
    )
    if prediction.prefill is None:
        from simulator.errors import ConfigError

        raise ConfigError(prediction.reason or "invalid configuration")
    plot_roofline(prediction, hardware, args.out)
    print(f"wrote {args.out}")
    return 0
