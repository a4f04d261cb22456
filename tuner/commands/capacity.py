"""``tune capacity``: the highest arrival rate one deployment serves within the SLOs."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="highest request rate that meets the SLOs",
        description="Simulate the workload at increasing arrival rates (bisection below the "
        "offline throughput) and report the highest rate whose latency percentiles meet every "
        "--slo without the queue growing. Exit 3 when no rate meets them.",
    )
    common.add_model_hardware_args(parser)
    common.add_deployment_args(parser)
    common.add_workload_args(parser)
    common.add_serving_args(parser)
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.capacity import find_capacity
    from simulator.errors import NoFeasiblePlanError
    from tuner.commands.serving_output import export, render

    model, hardware = common.load_model_and_hardware(args)
    workload = common.workload_from_args(args)
    config = common.serving_config_from_args(args, workload)
    result = find_capacity(
        model, hardware, config, workload, workload.slos, seed=args.seed, router=args.router
    )
    if not result.feasible or result.prediction is None:
        reason = result.reason or "no arrival rate meets the SLOs"
        if not result.probes:  # the configuration itself cannot run
            from simulator.errors import ConfigError, DoesNotFitError

            raise (DoesNotFitError if "does not fit" in reason else ConfigError)(reason)
        raise NoFeasiblePlanError(reason)
    export(args, result.result)
    if args.json:
        common.print_json(
            {
                "rate_per_s": result.rate,
                "max_throughput_rps": result.max_throughput_rps,
                "probes": [{"rate_per_s": r, "met": m} for r, m in result.probes],
                "prediction": result.prediction.model_dump(mode="json"),
            }
        )
        return 0
    slos = ", ".join(str(s) for s in workload.slos) or "no SLOs given: highest stable rate"
    print(
        f"capacity: {result.rate:,.2f} requests/s ({slos}); offline maximum "
        f"{result.max_throughput_rps:,.2f} requests/s; {len(result.probes)} simulations"
    )
    print(render(result.result, hardware))
    return 0
