"""Flags shared by several verbs, so scripts can rely on the same spelling everywhere.

``--model NAME|config.json``, ``--hardware NAME``, ``--tp --pp --dp --ep --cp``, ``--weights``,
``--activations``, ``--kv-dtype``, batching knobs, ``--json``. ``config_from_args`` turns them into
a validated ``DeploymentConfig`` or raises ``ConfigError`` with one readable line.
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from simulator.data.policies import DEFAULT_GPU_MEMORY_UTILIZATION


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
    group.add_argument(
        "--fp8-scaling",
        default="dynamic",
        choices=["dynamic", "static"],
        help="FP8 activation scales: per-token at run time (dynamic, the default) or fixed "
        "per-tensor scales from calibration (static)",
    )
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
    group.add_argument(
        "--gpu-memory-utilization", type=finite_float, default=DEFAULT_GPU_MEMORY_UTILIZATION
    )


def finite_float(text: str) -> float:
    """An argparse type: a number, and a finite one ("nan" and "inf" mean nothing here)."""
    import math

    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
    return value


def add_json_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--json", action="store_true", help="print machine-readable JSON only")


def default_activation(weights: str) -> str:
    return {"fp8": "fp8", "int8": "bf16", "int4": "bf16", "fp16": "fp16"}.get(weights, "bf16")


def config_from_args(args: argparse.Namespace, **overrides: Any):
    """Build a ``DeploymentConfig`` from the shared flags; bad combinations raise ConfigError."""
    from pydantic import ValidationError

    from simulator.data.specs import DeploymentConfig
    from simulator.errors import ConfigError, one_line

    values: dict[str, Any] = dict(
        tp=args.tp,
        pp=args.pp,
        dp=args.dp,
        ep=args.ep,
        cp=args.cp,
        weight_dtype=args.weights,
        activation_dtype=args.activations or default_activation(args.weights),
        kv_dtype=args.kv_dtype,
        fp8_scaling=getattr(args, "fp8_scaling", "dynamic"),
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
    if getattr(args, "engine", None):
        from tuner.engines import ENGINE_ADMISSION

        values["admission"] = getattr(args, "admission", None) or ENGINE_ADMISSION[args.engine]
    values.update(overrides)
    try:
        return DeploymentConfig(**values)
    except ValidationError as error:
        raise ConfigError(one_line(error)) from None


def print_json(obj: Any) -> None:
    import json  # only with --json: the table output never needs it

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
    group.add_argument(
        "--steady-state",
        action="store_true",
        help="report latencies and throughput without the first and last 10%% of the "
        "requests (warm-up: a closed loop's users all start at once; drain: the last ones "
        "finish alone)",
    )
    group.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    group.add_argument(
        "--slo",
        action="append",
        default=[],
        help="SLO such as ttft_p99=2s or tpot_p99=50ms (repeatable)",
    )


def load_model_and_hardware(args: argparse.Namespace):
    from simulator.data.hardware import load_hardware
    from simulator.data.models import get_model

    model = get_model(args.model)
    hardware = load_hardware(args.hardware, calibration=not getattr(args, "no_calibration", False))
    return model, hardware


# --- request-level simulation (tune predict --workload, tune capacity) ---------------------------


def add_serving_args(parser: argparse.ArgumentParser) -> None:
    """Flags of the serving simulation beside ``add_workload_args``: speculative decoding, the
    data-parallel router, exports and the progress bar."""
    from simulator.data.policies import ADMISSIONS
    from tuner.engines import ENGINES

    group = parser.add_argument_group("serving simulation")
    group.add_argument(
        "--engine",
        default="vllm",
        choices=ENGINES,
        help="the engine whose admission and preemption rules the simulation follows "
        "(default vllm; trtllm admits only what finishes without eviction)",
    )
    group.add_argument(
        "--admission",
        default=None,
        choices=ADMISSIONS,
        help="another of the engines' admission policies (trtllm-max-utilization: "
        "TensorRT-LLM's other capacity-scheduler policy)",
    )
    group.add_argument(
        "--bench-limits",
        action="store_true",
        help="with --engine trtllm: the max_num_seqs and max_num_batched_tokens trtllm-bench "
        "picks itself from the workload's mean lengths (to compare with its published runs)",
    )
    group.add_argument(
        "--spec",
        default=None,
        metavar="METHOD:...",
        help="speculative decoding: draft:MODEL:G:ACCEPT (e.g. "
        "draft:llama-3.2-1b:4:0.7), eagle:G:ACCEPT or ngram:G:ACCEPT",
    )
    group.add_argument(
        "--router",
        default="least_outstanding",
        choices=["least_outstanding", "round_robin"],
        help="how requests are spread over --dp replicas",
    )
    group.add_argument(
        "--timeline",
        default=None,
        metavar="PATH.csv",
        help="write one row per request (arrival, first token, finish, ...)",
    )
    group.add_argument(
        "--trace",
        default=None,
        metavar="PATH.json",
        help="write a Chrome trace of the requests (chrome://tracing, Perfetto)",
    )
    group.add_argument(
        "--progress",
        action="store_true",
        help="show a progress bar even when stderr is not a terminal",
    )


def parse_spec(text: str | None):
    """``draft:llama-3.2-1b:4:0.7`` / ``eagle:4:0.7`` / ``ngram:3:0.6`` -> SpeculativeConfig
    (G defaults to 3, ACCEPT to 0.7); bad text raises ConfigError."""
    if not text:
        return None
    from simulator.data.specs import SpeculativeConfig
    from simulator.errors import ConfigError, one_line

    parts = [p.strip() for p in str(text).split(":")]
    method, rest = parts[0].lower(), parts[1:]
    values: dict[str, Any] = {"method": method}
    if method == "draft":
        if not rest or not rest[0]:
            raise ConfigError("--spec draft needs a draft model: draft:MODEL[:G[:ACCEPT]]")
        values["draft_model"], rest = rest[0], rest[1:]
    elif method not in ("eagle", "ngram"):
        raise ConfigError(f"--spec {text!r}: method must be draft, eagle or ngram")
    if len(rest) > 2:
        raise ConfigError(f"--spec {text!r}: expected METHOD[:MODEL]:G:ACCEPT")
    try:
        if rest:
            if not rest[0].isdigit():
                raise ConfigError(f"--spec {text!r}: G, the drafted tokens, is a whole number")
            values["num_speculative_tokens"] = int(rest[0])
        if len(rest) > 1:
            try:
                values["acceptance_rate"] = float(rest[1])
            except ValueError:
                raise ConfigError(
                    f"--spec {text!r}: ACCEPT, the acceptance rate, is a number in (0, 1)"
                ) from None
        if values.get("draft_model"):
            from simulator.data.models import get_model

            get_model(values["draft_model"])  # unknown names fail here, in one line
        return SpeculativeConfig(**values)
    except ValueError as error:
        raise ConfigError(f"--spec {text!r}: {one_line(error)}") from None


def workload_from_args(args: argparse.Namespace):
    """The ``Workload`` of ``--workload --rate --requests --seed --slo``."""
    from simulator.data.workload import get_workload

    return get_workload(
        args.workload or "chat",
        rate=args.rate,
        num_requests=args.requests,
        seed=args.seed,
        slos=tuple(args.slo or ()),
        steady_state=True if getattr(args, "steady_state", False) else None,
    )


def serving_config_from_args(args: argparse.Namespace, workload):
    """``config_from_args`` for a workload: ``max_model_len`` defaults to the longest request
    (at least 8192), and a request past an explicit ``--max-model-len`` is a WorkloadError."""
    from simulator.data.workload import sample_requests
    from simulator.errors import WorkloadError

    requests = sample_requests(workload, args.seed)
    lengths = requests.prompt_tokens + requests.output_tokens
    longest = int(lengths.max())
    overrides: dict[str, Any] = {}
    if args.max_model_len is None:
        overrides["max_model_len"] = max(8192, longest)
    elif longest > args.max_model_len:
        i = int(lengths.argmax())
        raise WorkloadError(
            f"request {i} has {int(requests.prompt_tokens[i])} prompt + "
            f"{int(requests.output_tokens[i])} output tokens = {longest}, past "
            f"--max-model-len {args.max_model_len}"
        )
    spec = parse_spec(getattr(args, "spec", None))
    if spec is not None:
        overrides["speculative"] = spec
    config = config_from_args(args, **overrides)
    if getattr(args, "bench_limits", False):
        config = _bench_limits(args, config, requests)
    return config


def _bench_limits(args: argparse.Namespace, config, requests):
    """``config`` with the batch limits trtllm-bench would pick for these requests."""
    from simulator.data.hardware import load_hardware
    from simulator.data.models import get_model
    from simulator.errors import ConfigError, DoesNotFitError
    from simulator.serving.bench_limits import trtllm_bench_limits

    if getattr(args, "engine", None) != "trtllm":
        raise ConfigError("--bench-limits is trtllm-bench's rule: use it with --engine trtllm")
    hardware = load_hardware(args.hardware, calibration=False)
    seqs, tokens = trtllm_bench_limits(
        get_model(args.model), hardware, config,
        isl=max(1, round(float(requests.prompt_tokens.mean()))),
        osl=max(1, round(float(requests.output_tokens.mean()))),
    )  # fmt: skip
    if not seqs:
        raise DoesNotFitError("trtllm-bench would find no room for one request's KV cache")
    return config.model_copy(update={"max_num_seqs": seqs, "max_num_batched_tokens": tokens})


def add_step_shape_args(parser: argparse.ArgumentParser) -> None:
    shape = parser.add_argument_group("step shape")
    shape.add_argument("--batch", type=int, default=1, help="sequences per step (default 1)")
    shape.add_argument("--prompt", type=int, default=1024, help="prefill tokens per sequence")
    shape.add_argument(
        "--context", type=int, default=1024, help="cached tokens at the decode step"
    )


def predict_from_args(args: argparse.Namespace):
    """Step-level prediction for the shared flags: ``(prediction, hardware)``.

    Without ``--max-model-len`` the engine is sized for the asked-for shape, so a question about
    a 1k-token step is not refused because of a default 8k-token context window.
    """
    from simulator.cost.predict import predict
    from simulator.errors import ConfigError

    for flag in ("batch", "prompt", "context"):
        if getattr(args, flag) < 1:
            raise ConfigError(f"--{flag} must be at least 1")
    model, hardware = load_model_and_hardware(args)
    overrides: dict[str, Any] = {}
    if args.max_model_len is None:
        overrides["max_model_len"] = max(args.prompt, args.context + 1, 16)
    spec = parse_spec(getattr(args, "spec", None))  # checked here too: never ignored silently
    if spec is not None:
        overrides["speculative"] = spec
    config = config_from_args(args, **overrides)
    prediction = predict(
        model, hardware, config, batch=args.batch, prompt=args.prompt, context=args.context
    )
    return prediction, hardware
