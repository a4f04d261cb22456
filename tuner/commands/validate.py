"""``tune validate PLAN.json``: measure a plan's configuration on this GPU and record the error
in the plan (``--dry-run`` prints the shapes and predictions without a GPU). TP > 1 runs under
``torchrun --nproc-per-node TP -m tuner.cli validate PLAN.json``. ``--traffic`` serves the
plan's workload on one GPU at three loads through the serving loop and compares TTFT and TPOT
percentiles and throughput (``tuner.traffic``)."""

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
    parser.add_argument(
        "--traffic",
        action="store_true",
        help="serve the plan's workload at 0.2x capacity, the plan's rate and 1.5x capacity "
        "(one GPU) and compare latency percentiles",
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=None,
        help="requests per load with --traffic (default: the plan's)",
    )
    parser.add_argument(
        "--loads",
        default=None,
        metavar="NAMES",
        help="with --traffic: the loads to run, comma-separated, of light, plan and overload "
        "(default: all three); measured loads already in the plan and not run again are kept",
    )
    parser.add_argument(
        "--iterations",
        metavar="PATH.csv",
        default=None,
        help="with --traffic: every measured iteration of every load, a row each (its path, "
        "tokens, measured, GPU and predicted seconds, compiles)",
    )
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
    from tuner.plan import load_plan
    from tuner.study_files import write_json_atomic
    from tuner.validation import validation_section, validation_shape

    plan = load_plan(args.plan)
    if args.traffic:
        return _traffic(args, plan)
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
        kept = {k: v for k, v in (plan.validation or {}).items() if k == "traffic"}
        updated = plan.model_copy(update={"validation": {**section, **kept}})
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


def _traffic(args: argparse.Namespace, plan) -> int:
    import os
    import shlex
    import sys
    from pathlib import Path

    from simulator.data.hardware import load_hardware
    from simulator.errors import ConfigError
    from tuner.search.run import build_search
    from tuner.study_files import write_json_atomic
    from tuner.traffic import LOADS, merge_traffic, run_traffic, traffic_config

    if args.requests is not None and args.requests < 20:
        raise ConfigError(f"--requests {args.requests}: at least 20 per load (percentiles)")
    loads = None
    if args.loads is not None:
        loads = [name.strip() for name in args.loads.split(",") if name.strip()]
        known = [name for name, _ in LOADS]
        unknown = [name for name in loads if name not in known]
        if unknown or not loads:
            raise ConfigError(f"--loads {args.loads!r}: name one or more of {', '.join(known)}")
    earlier = (plan.validation or {}).get("traffic")
    search = build_search(plan.search["spec"])
    hardware = load_hardware(plan.hardware, calibration=not args.no_calibration)
    config = traffic_config(plan)
    clock_for, machine = None, {}
    if not args.dry_run:
        from executor.points import host_dispatch_s, machine_info
        from executor.validate import serving_clocks

        clock_for = serving_clocks(search.space.model, config,
                                   max_seq_length=config.max_model_len)  # fmt: skip
        machine = {**machine_info(), "host_dispatch_us": round(1e6 * host_dispatch_s(), 2)}
    first = int(os.environ.get("RANK", "0")) == 0  # under torchrun, rank 0 speaks and writes
    command = "tune " + " ".join(shlex.quote(a) for a in sys.argv[1:])

    def keep(section: dict) -> dict:
        """The section, with its machine and command and the earlier loads it did not run
        again, into the plan file (atomically); returns what was written."""
        section = merge_traffic(plan, earlier, {**section, "machine": machine, "command": command})
        validation = {**(plan.validation or {}), "traffic": section}
        updated = plan.model_copy(update={"validation": validation})
        write_json_atomic(Path(args.plan), updated.model_dump(mode="json"))
        return section

    # Each finished load is kept as it ends (status "incomplete"): a run stopped in a later
    # load loses only that one.
    section = run_traffic(
        plan, model=search.space.model, hardware=hardware, workload=search.workload,
        slos=search.slos, seed=search.seed, clock_for=clock_for, requests=args.requests,
        progress=lambda line: print(f"tune validate: {line}", file=sys.stderr, flush=True),
        iterations_csv=Path(args.iterations) if args.iterations else None,
        bar=sys.stderr.isatty() and first, on_load=keep if first else None, loads=loads,
    )  # fmt: skip
    section.update(machine=machine, command=command)
    if clock_for is not None and first:
        section = keep(section)
    if first and args.json:
        common.print_json(section)
    elif first:
        _print_traffic(section)
        if clock_for is not None:
            print(f"validation under traffic: {section['status']} (written to {args.plan})")
    return 0


def _print_traffic(section: dict) -> None:
    from tuner.traffic import decode_step_ratios, show_metric

    dispatch = (section.get("machine") or {}).get("host_dispatch_us")
    if dispatch is not None:  # iterations launched from Python run at the host's pace
        print(f"host: {dispatch:.1f} us to issue an eager op")

    for row in section["loads"]:
        kept = f" (kept from {row['measured_utc']})" if "measured_utc" in row else ""
        print(f"{row['load']}: {row['rate_per_s']:.2f} req/s, {row['requests']} requests{kept}")
        measured, errors = row.get("measured") or {}, row.get("errors") or {}
        for metric, predicted in row["predicted"].items():
            error, value = errors.get(metric), measured.get(metric)
            tail = "" if value is None else f"  measured {show_metric(metric, value)}"
            if error is not None:  # counts (preemptions) are shown, not scored
                tail += f"  error {100 * error:+.1f}%"
            print(f"  {metric:20s} predicted {show_metric(metric, predicted):>12}{tail}")
        for note in row.get("executor_notes") or []:
            print(f"  note: {note}")
        if row.get("compiles"):
            kernels = ", ".join(row.get("compiled_kernels") or [])
            print(f"  {row['compiles']} Triton kernel compiles inside timed iterations "
                  "(each about a second: the executor's outliers)"
                  + (f": {kernels}" if kernels else ""))  # fmt: skip
        if row.get("allocator_retries"):
            print(f"  {row['allocator_retries']} allocator retries: the GPU ran out of free "
                  "blocks beside the KV cache, and each one synchronized it")  # fmt: skip
        iterations = row.get("iterations") or {}
        for kind in ("graph", "piecewise", "eager"):
            if kind in iterations:
                group = iterations[kind]
                gpu, issued = group.get("mean_device_s"), group.get("mean_issued_s")
                print(f"  {kind} iterations: {group['count']}, mean "
                      f"{1e3 * group['mean_step_s']:.2f} ms measured"
                      + (f" ({1e3 * gpu:.2f} on the GPU)" if gpu is not None else "")
                      + (f", issued in {1e3 * issued:.2f}" if issued is not None else "")
                      + (" (the host's pace)" if _host_bound(group) else "")
                      + f", median {1e3 * group.get('median_step_s', float('nan')):.2f}, "
                      f"{1e3 * group['mean_predicted_s']:.2f} ms predicted")  # fmt: skip
        ratios = decode_step_ratios(row.get("decode_steps") or [])
        if ratios:
            print("  decode steps, measured / predicted by batch: " + ", ".join(
                f"{span} {ratio:.2f}x" for span, ratio in ratios))  # fmt: skip
    for note in section["notes"]:
        print(f"note: {note}")


HOST_BOUND = 0.8  # issued in this share of its time or more: the host set the iteration's pace


def _host_bound(group: dict) -> bool:
    """Whether a path's iterations were set by the host: issued in at least ``HOST_BOUND`` of
    their time (a GPU-bound iteration is issued well before its GPU work ends; a host-bound
    one, launch by launch, only just before)."""
    issued = group.get("mean_issued_s")
    return issued is not None and issued >= HOST_BOUND * group["mean_step_s"]
