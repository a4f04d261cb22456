"""``tune calibrate``: measure this GPU and write its efficiency, or fit saved measurements.

On a GPU machine (torch + CUDA): run ``executor.bench``'s microbenchmarks, fit the efficiency
with ``simulator.calibration.fit`` and write ``hardware_profiles/calibration/<gpu>.yaml`` (or --out)
with provenance. The GPU is detected through NVML and must match the profile: a calibration is
never written for another GPU.

Anywhere (no GPU needed): ``--from DIR`` fits the JSON a bench run saved (micro.json, model.json,
tp*.json) and, with ``--fidelity``, compares the calibrated predictions with every measured step.
``--from PLAN.json`` (a plan validated with ``tune validate --traffic``) fits the host's share of
an iteration (``step_overhead_s``, ``token_overhead_s``) from the serving loop's measurements
and writes it into the GPU's calibration, the rest kept.
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
        help="fit the bench JSON saved in this directory instead of measuring, or the host "
        "overhead measured by tune validate --traffic in this plan.json",
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
        from pathlib import Path

        if Path(args.from_dir).is_file():
            return _from_validation(args)
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


def _from_validation(args: argparse.Namespace) -> int:
    from pathlib import Path

    from simulator.calibration.host_overhead import combine_fits
    from simulator.data.hardware import load_hardware, profile_for_device, write_calibration
    from simulator.errors import ProfileError
    from tuner.plan import load_plan

    plan = load_plan(args.from_dir)
    traffic = (plan.validation or {}).get("traffic") or {}
    fits = [row["host_overhead"] for row in traffic.get("loads", []) if row.get("host_overhead")]
    if not fits:
        raise ProfileError(f"{args.from_dir}: no host overhead measured in it (run tune validate "
                           "PLAN.json --traffic on a GPU first)")  # fmt: skip
    device = str((traffic.get("machine") or {}).get("device_name", ""))
    measured_on = profile_for_device(device)
    hardware = args.hardware or measured_on or plan.hardware
    if measured_on is not None and measured_on != hardware:
        raise ProfileError(f"{args.from_dir} was measured on {device} ({measured_on}), not "
                           f"{hardware}: a calibration is never written for another GPU")  # fmt: skip
    fit = combine_fits(fits)
    current = load_hardware(hardware).efficiency
    sources = {**current.sources, "host_overhead": (
        f"measured: tune validate --traffic, {fit['iterations']} iterations on {device or 'a GPU'}"
        f" ({traffic.get('measured_utc', '')}), wall time less the GPU's, least squares over "
        "the tokens each emitted")}  # fmt: skip
    efficiency = current.model_copy(update={
        "step_overhead_s": fit["per_iteration_s"], "token_overhead_s": fit["per_token_s"],
        "sources": sources,
    })  # fmt: skip
    path = write_calibration(hardware, efficiency=efficiency, provenance=current.provenance,
                             path=Path(args.out) if args.out else None)  # fmt: skip
    if args.json:
        common.print_json({"calibration": str(path), "hardware": hardware, **fit})
    else:
        print(f"host overhead: {fit['per_iteration_s'] * 1e3:.3f} ms per iteration + "
              f"{fit['per_token_s'] * 1e6:.2f} us per token emitted (rms residual "
              f"{fit['residual_s'] * 1e3:.3f} ms, {fit['iterations']} iterations)")  # fmt: skip
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
