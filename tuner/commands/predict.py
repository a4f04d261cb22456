"""``tune predict``: one configuration, step level (prefill + one decode step) or, with
``--workload``, request level (latency percentiles under traffic)."""

from __future__ import annotations

import argparse

from . import common


def add_parser(subparsers) -> None:
    parser = subparsers.add_parser(
        "predict",
        help="predict one configuration (per-op time, bound, memory)",
        description="Predict one deployment. Step level: prefill of --prompt tokens per "
        "sequence and one decode step with --context cached tokens, for --batch sequences. "
        "With --workload: simulate traffic and report TTFT/TPOT/E2E percentiles.",
    )
    common.add_model_hardware_args(parser)
    common.add_deployment_args(parser)
    common.add_step_shape_args(parser)
    common.add_workload_args(parser)
    common.add_serving_args(parser)
    common.add_json_arg(parser)
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    if getattr(args, "workload", None):
        from tuner.commands.serving_output import run_workload

        return run_workload(args)
    prediction, hardware = common.predict_from_args(args)
    if args.json:
        common.print_json(prediction.model_dump(mode="json"))
    if not prediction.fits:
        # One line says why; the JSON above (with --json) still carries the whole breakdown.
        from simulator.errors import ConfigError, DoesNotFitError

        error = ConfigError if prediction.prefill is None else DoesNotFitError
        raise error(prediction.reason or "does not fit")
    if not args.json:
        print(render(prediction, hardware))
    return 0


def render(prediction, hardware) -> str:
    batch = prediction.decode.batch if prediction.decode else 1
    from simulator.units import format_bytes, format_seconds
    from tuner.textfmt import key_values, table

    out = []
    c = prediction.config
    head = (
        f"{prediction.model} on {prediction.num_gpus} x {hardware.display_name}  "
        f"tp={c['tp']} pp={c['pp']} dp={c['dp']} ep={c['ep']} cp={c['cp']}  "
        f"weights {c['weight_dtype']}/{c['activation_dtype']}  kv {c['kv_dtype']}"
    )
    out.append(head)
    for phase_name in ("prefill", "decode"):
        phase = getattr(prediction, phase_name)
        if phase is None:
            continue
        ops = [o for o in prediction.ops if o.phase == phase_name]
        rows = [
            (
                o.name,
                format_seconds(o.time_s),
                f"{100 * o.share:5.1f}%",
                o.bound,
                _intensity(o),
                o.source,
            )
            for o in sorted(ops, key=lambda o: -o.time_s)
        ]
        shape = (
            f"batch {phase.batch} x prompt {phase.prompt}"
            if phase_name == "prefill"
            else f"batch {phase.batch} at context {phase.context}"
        )
        likely = prediction.bands.get(phase_name)
        title = (
            f"\n{phase_name}: {shape}: {format_seconds(phase.time_s)} "
            + (
                f"(likely {format_seconds(likely[0])} - {format_seconds(likely[1])}; "
                if likely
                else "("
            )
            + f"{phase.bound}-bound, {phase.tokens_per_s:,.0f} tokens/s)"
        )
        out.append(
            table(["op", "time", "share", "bound", "FLOP/byte", "source"], rows, title=title)
        )
    mem = prediction.memory
    if mem is not None:
        out.append("")
        out.append(
            key_values(
                [
                    ("weights", format_bytes(mem.weights_bytes)),
                    ("activations", format_bytes(mem.activation_bytes)),
                    ("reserved", format_bytes(mem.reserved_bytes)),
                    (
                        "KV cache",
                        f"{format_bytes(mem.kv_cache_bytes)} "
                        f"({mem.kv_tokens_capacity:,.0f} tokens at {mem.kv_bytes_per_token:,.0f} B/token)",
                    ),
                    ("KV needed", format_bytes(mem.required_kv_bytes)),
                    (
                        "budget",
                        f"{format_bytes(mem.capacity_bytes)} (the memory the driver reports "
                        "x gpu_memory_utilization)",
                    ),
                    ("max batch", f"{mem.max_batch_at_context} sequences at this length"),
                    (
                        "max context",
                        f"{int(mem.kv_tokens_capacity // max(batch, 1)):,} tokens per sequence "
                        f"at batch {batch}",
                    ),
                ],
                title="memory per GPU",
            )
        )
    return "\n".join(out)


def _intensity(op) -> str:
    if op.kind == "communication" or op.bytes <= 0:
        return "-"
    return f"{op.flops / op.bytes:,.1f}"
