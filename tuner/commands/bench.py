"""``tune bench``: how fast the vectorized step model runs on this machine."""

from __future__ import annotations

import argparse


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="configs per second through the step model")
    parser.add_argument("--configs", type=int, default=200_000)
    parser.add_argument("--model", default="llama-3.1-70b")
    parser.add_argument("--hardware", default="h100-sxm")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json

    from tuner.benchmarks import step_model_throughput

    result = step_model_throughput(
        num_configs=args.configs, model_name=args.model, hardware_name=args.hardware
    )
    print(f"{'configs':>10} {'seconds':>9} {'configs/s':>12}")
    print(f"{result['configs']:>10} {result['seconds']:>9.3f} {result['configs_per_second']:>12,}")
    print(json.dumps(result))
    return 0
