"""``tune capacity``: the highest arrival rate one deployment serves within the SLOs."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "capacity",
        help="highest request rate that meets the SLOs",
        description="Bound the capacity with the step model, then bisect the arrival rate "
        "below that bound (on a 2 %% rate grid) with the serving simulation, and report the "
        "highest rate whose latency percentiles meet every --slo without the queue growing: "
        "the same machinery tune plan uses for every replica. Exit 3 when no rate meets them.",
    )
    common.add_model_hardware_args(parser)
    common.add_deployment_args(parser)
    common.add_workload_args(parser)
    common.add_serving_args(parser)
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from simulator.errors import NoFeasiblePlanError
    from simulator.serving.bounds import bound_of
    from simulator.serving.capacity import RATE_STEP, find_capacity
    from tuner.commands.serving_output import export, render

    model, hardware = common.load_model_and_hardware(args)
    workload = common.workload_from_args(args)
    config = common.serving_config_from_args(args, workload)
    replica = config.model_copy(update={"dp": 1})
    bound, limit = bound_of(model, hardware, replica, workload, workload.slos)
    ceiling = config.dp * bound * RATE_STEP if bound > 0 else None

    def search(**bracket):
        return find_capacity(model, hardware, config, workload, workload.slos, seed=args.seed,
                             router=args.router, **bracket)  # fmt: skip

    result = search(ceiling=ceiling)
    probes = len(result.probes)
    if ceiling is not None and result.feasible and result.rate * RATE_STEP**2 >= ceiling:
        # At the top of the bracket: never let the bound cap the answer; go on to the offline
        # throughput from there.
        result = search(floor=result.rate)
        probes += len(result.probes)
    if not result.feasible or result.prediction is None:
        reason = result.reason or "no arrival rate meets the SLOs"
        if result.unfit is not None:  # the configuration itself cannot run
            from simulator.errors import unfit_error

            raise unfit_error(result.unfit, reason)
        raise NoFeasiblePlanError(reason)
    export(args, result.result)
    if args.json:
        common.print_json(
            {
                "rate_per_s": result.rate,
                "bound_rate_per_s": config.dp * bound,
                "bound_limit": limit,
                "simulations": probes,
                "probes": [{"rate_per_s": r, "met": m} for r, m in result.probes],
                "prediction": result.prediction.model_dump(mode="json"),
            }
        )
        return 0
    slos = ", ".join(str(s) for s in workload.slos) or "no SLOs given: highest stable rate"
    print(
        f"capacity: {result.rate:,.2f} requests/s ({slos}); the step model bounds it at "
        f"{config.dp * bound:,.2f} requests/s (set by {limit}); {probes} simulations"
    )
    print(render(result.result, hardware))
    return 0
