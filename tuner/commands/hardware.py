"""``tune hardware list|show NAME``: the GPU profiles rooftune knows."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("hardware", help="list or show GPU profiles")
    sub = parser.add_subparsers(dest="action", metavar="ACTION", required=True)
    listing = sub.add_parser("list", help="list profiles with their headline numbers")
    common.add_json_arg(listing)
    show = sub.add_parser("show", help="show one profile: peaks, memory, links, efficiency")
    show.add_argument("name")
    show.add_argument("--no-calibration", action="store_true")
    common.add_json_arg(show)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.data.hardware import describe_hardware, list_hardware, load_hardware
    from simulator.units import format_bytes, format_rate
    from tuner.textfmt import key_values, table

    if args.action == "list":
        specs = [load_hardware(name) for name in list_hardware()]
        if args.json:
            common.print_json([s.model_dump(mode="json") for s in specs])
            return 0
        rows = [
            (
                s.name,
                s.display_name,
                f"{s.peak('bf16') / 1e12:,.0f}",
                f"{s.peak('fp8') / 1e12:,.0f}" if "fp8" in s.peak_flops_per_s else "-",
                format_bytes(s.hbm_bytes, 0),
                format_rate(s.hbm_bytes_per_s),
                f"{s.ridge_bf16:,.0f}",
                f"${s.price_per_hour:.2f}" if s.price_per_hour else "-",
            )
            for s in specs
        ]
        print(
            table(
                [
                    "name",
                    "GPU",
                    "bf16 TFLOP/s",
                    "fp8 TFLOP/s",
                    "HBM",
                    "bandwidth",
                    "ridge FLOP/B",
                    "$/GPU-h",
                ],
                rows,
            )
        )
        return 0
    spec = load_hardware(args.name, calibration=not args.no_calibration)
    if args.json:
        common.print_json(spec.model_dump(mode="json"))
    else:
        print(key_values(describe_hardware(spec), title=spec.display_name))
    return 0
