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


IMAGE_SUFFIXES = (".png", ".svg", ".pdf")


def run(args: argparse.Namespace) -> int:
    import sys
    from pathlib import Path

    from simulator.errors import ConfigError
    from tuner.roofline_plot import plot_roofline

    out = Path(args.out)
    if out.is_dir():
        out = out / "roofline.png"  # a folder: the plot goes in it, under the default name
    if out.suffix.lower() not in IMAGE_SUFFIXES:
        raise ConfigError(f"--out {args.out}: write a {', '.join(IMAGE_SUFFIXES)} file")
    prediction, hardware = common.predict_from_args(args)
    if prediction.prefill is None:
        raise ConfigError(prediction.reason or "invalid configuration")
    if not prediction.fits:  # the ops still plot; the user must know it cannot launch
        print(f"tune roofline: warning: {prediction.reason}", file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    plot_roofline(prediction, hardware, str(out))
    print(f"wrote {out}")
    return 0
