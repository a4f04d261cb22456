"""``tune calibrate``: measure this GPU and write its efficiency, or fit saved measurements.

On a GPU machine (torch + CUDA): run ``executor.bench``'s microbenchmarks, fit the efficiency
with ``simulator.calibration.fit`` and write ``hardware_profiles/calibration/<gpu>.yaml`` (or --out)
with provenance. The GPU is detected through NVML and must match the profile: a calibration is
never written for another GPU.

Anywhere (no GPU needed): ``--from DIR`` fits the JSON a bench run saved (micro.json, model.json,
tp*.json) and, with ``--fidelity``, compares the calibrated predictions with every measured step.
"""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "calibrate",
        help="measure this GPU's efficiency (or fit saved measurements) into a calibration file",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--hardware", default=None, help="profile to calibrate (default: the detected GPU's)"
    )
    parser.add_argument(
        "--model", default="llama-3.1-8b", help="model whose layer shapes the GEMM benchmark uses"
    )
    parser.add_argument("--out", default=None, help="write here instead of the profile's file")
    parser.add_argument(
        "--from",
        dest="from_dir",
        default=None,
        help="fit the bench JSON saved in this directory instead of measuring",
    )
    parser.add_argument(
        "--fidelity",
        default=None,
        metavar="PATH",
        help="with --from: write the predicted-vs-measured table (Markdown) here",
    )
    parser.add_argument(
        "--accept-difference",
        default=None,
        metavar="REASON",
        help="keep a fit that is more than 25%% from another calibration of the same "
        "architecture, stating why (kept in the calibration's sources)",
    )
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if args.from_dir:
        return _from_saved(args)
    from executor.validate import calibrate_here

    path = calibrate_here(
        hardware=args.hardware,
        model=args.model,
        out=args.out,
        accept_difference=args.accept_difference,
    )
    print(f"wrote {path}")
    return 0


def _from_saved(args: argparse.Namespace) -> int:
    from simulator.calibration.fit_saved import fit_saved
    from simulator.errors import ProfileError

    if not args.hardware:
        raise ProfileError("--from needs --hardware (the profile of the GPU that measured)")
    result = fit_saved(
        args.from_dir,
        hardware=args.hardware,
        model=args.model,
        out=args.out,
        fidelity_path=args.fidelity,
        accept_difference=args.accept_difference,
    )
    if args.json:
        common.print_json(result)
    else:
        print(f"wrote {result['calibration']}")
        if result.get("fidelity"):
            print(result["fidelity_markdown"])
    return 0
