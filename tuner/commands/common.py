"""Flags shared by several verbs, so scripts can rely on the same spelling everywhere.

``--model NAME|config.json``, ``--hardware NAME``, ``--tp --pp --dp --ep --cp``, ``--weights``,
``--activations``, ``--kv-dtype``, batching knobs, ``--json``. ``config_from_args`` turns them into
a validated ``DeploymentConfig`` or raises ``ConfigError`` with one readable line.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any


def add_model_hardware_args(
    parser: argparse.ArgumentParser, *, hardware_required: bool = True
) -> None:
    parser.add_argument(
        "--model", required=True, help="preset name (tune models list) or config.json path"
    )
    parser.add_argument(
        "--hardware",
        required=hardware_required,
        default=None,
        help="GPU profile name (tune hardware list) or a profile YAML path",
    )
    parser.add_argument(
        "--no-calibration",
        action="store_true",
        help="use literature efficiency defaults even where a calibration file exists",
    )


def add_deployment_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("deployment")
    group.add_argument("--tp", type=int, default=1, help="tensor-parallel GPUs (default 1)")
    group.add_argument("--pp", type=int, default=1, help="pipeline stages (default 1)")
    group.add_argument("--dp", type=int, default=1, help="data-parallel replicas (default 1)")
    group.add_argument(
        "--ep", type=int, default=1, help="expert-parallel GPUs within TP (default 1)"
    )
    group.add_argument("--cp", type=int, default=1, help="context-parallel GPUs (default 1)")
    group.add_argument(
        "--weights",
        default="bf16",
        choices=["bf16", "fp16", "fp8", "int8", "int4"],
        help="weight dtype (default bf16)",
    )
    group.add_argument(
        "--activations",
        default=None,
        choices=["bf16", "fp16", "fp8", "int8"],
        help="GEMM compute dtype; default: fp8 for fp8 weights, bf16 (weight-only) for int8/int4",
    )
    group.add_argument("--kv-dtype", default="bf16", choices=["bf16", "fp16", "fp8"])
    group.add_argument("--attention", default="flash", choices=["flash", "naive"])
    group.add_argument("--max-num-seqs", type=int, default=256)
    group.add_argument("--max-num-batched-tokens", type=int, default=8192)
    group.add_argument(
        "--max-model-len",
        type=int,
        default=None,
        help="longest sequence the engine accepts (default: fits the request)",
    )
    group.add_argument("--no-chunked-prefill", action="store_true")
    group.add_argument("--static-batching", action="store_true")
    group.add_argument("--no-cuda-graphs", action="store_true")
    group.add_argument("--gpu-memory-utilization", type=float, default=0.90)


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")


def default_activation(weights: str) -> str:
    return {"fp8": "fp8", "int8": "bf16", "int4": "bf16", "fp16": "fp16"}.get(weights, "bf16")


def config_from_args(args: argparse.Namespace, **overrides: Any):
    """Build a ``DeploymentConfig`` from the shared flags; bad combinations raise ConfigError."""
    from pydantic import ValidationError

    from simulator.errors import ConfigError
    from simulator.specs import DeploymentConfig

    values: dict[str, Any] = dict(
        tp=args.tp,
        pp=args.pp,
        dp=args.dp,
        ep=args.ep,
        cp=args.cp,
        weight_dtype=args.weights,
        activation_dtype=args.activations or default_activation(args.weights),
        kv_dtype=args.kv_dtype,
        attention=args.attention,
        max_num_seqs=args.max_num_seqs,
        max_num_batched_tokens=args.max_num_batched_tokens,
        enable_chunked_prefill=not args.no_chunked_prefill,
        scheduling="static" if args.static_batching else "continuous",
        cuda_graphs=not args.no_cuda_graphs,
        gpu_memory_utilization=args.gpu_memory_utilization,
    )
    if args.max_model_len is not None:
        values["max_model_len"] = args.max_model_len
    values.update(overrides)
    try:
        return DeploymentConfig(**values)
    except ValidationError as error:
        raise ConfigError(first_validation_message(error)) from None


def first_validation_message(error: Any) -> str:
    """One line out of a pydantic ValidationError: 'field: message'."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first.get("loc", ()) if part != "__root__")
    message = first.get("msg", str(error)).removeprefix("Value error, ")
    return f"{where}: {message}" if where else message


def print_json(obj: Any) -> None:
    json.dump(obj, sys.stdout, indent=2, default=_json_default)
    sys.stdout.write("\n")


def _json_default(obj: Any) -> Any:
    if hasattr(obj, "model_dump"):
        return obj.model_dump(mode="json")
    if hasattr(obj, "tolist"):
        return obj.tolist()
    if isinstance(obj, float):
        return None
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")


def add_workload_args(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("traffic (request-level simulation)")
    group.add_argument(
        "--workload",
        default=None,
        help="workload preset (chat, summarization, code, isl128-osl128, ...) or a "
        "trace file (JSONL/CSV of arrival_s, prompt_tokens, output_tokens)",
    )
    group.add_argument(
        "--rate",
        default=None,
        help="arrival rate in requests/s, or 'inf' for offline (all queued at once)",
    )
    group.add_argument("--requests", type=int, default=None, help="number of requests")
    group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    group.add_argument(
        "--slo",
        action="append",
        default=[],
        help="SLO such as ttft_p99=2s or tpot_p99=50ms (repeatable)",
    )


def load_model_and_hardware(args: argparse.Namespace):
    from simulator.hardware import load_hardware
    from simulator.models import get_model

    model = get_model(args.model)
    hardware = load_hardware(args.hardware, calibration=not getattr(args, "no_calibration", False))
    return model, hardware
