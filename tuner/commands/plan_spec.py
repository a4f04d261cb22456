"""The search a ``tune plan`` command line asks for: its arguments checked (each bad one is a
single line, raised as ``ConfigError`` before anything runs) and gathered into the spec dict
that ``tuner.search.run.build_search`` takes and the plan keeps."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["DEFAULT_REQUESTS", "MAX_GPUS", "spec_from_args"]

DEFAULT_REQUESTS = 500  # requests the traffic simulates, unless --requests says otherwise
MAX_GPUS = 4096  # the largest budget one plan searches (512 nodes of 8)


def spec_from_args(args: argparse.Namespace) -> dict[str, Any]:
    from simulator.errors import ConfigError

    if args.gpus < 1:
        raise ConfigError(f"--gpus must be at least 1 (got {args.gpus})")
    if args.gpus > MAX_GPUS:
        # The search space grows with the budget: 100,000 GPUs once ran 528 s for 5 trials.
        raise ConfigError(f"--gpus {args.gpus:,} is past the {MAX_GPUS:,} one plan searches")
    if args.trials is not None and args.trials < 1:
        raise ConfigError(f"--trials must be at least 1 (got {args.trials})")
    if args.max_model_len is not None and args.max_model_len < 16:
        raise ConfigError(f"--max-model-len must be at least 16 tokens (got {args.max_model_len})")
    utilization = args.gpu_memory_utilization
    if utilization is not None and not 0 < utilization <= 1:
        raise ConfigError(f"--gpu-memory-utilization must be in (0, 1] (got {utilization:g})")
    if args.seed < 0:
        raise ConfigError(f"--seed must be 0 or more (got {args.seed})")
    if args.timeout is not None and not args.timeout > 0:
        raise ConfigError(f"--timeout must be a positive number of seconds (got {args.timeout})")
    if args.heartbeat < 1:
        raise ConfigError(f"--heartbeat must be at least 1 second (got {args.heartbeat})")
    if not [h for h in args.hardware.split(",") if h.strip()]:
        raise ConfigError("--hardware names no GPU profile (tune hardware list shows them)")
    return {
        "model": args.model,
        "hardware": [h.strip() for h in args.hardware.split(",") if h.strip()],
        "gpus": args.gpus,
        "workload": args.workload,
        "rate": args.rate,
        "requests": args.requests or DEFAULT_REQUESTS,
        "seed": args.seed,
        "slos": list(args.slo),
        "allow_quant": args.allow_quant,
        "speculative": not args.no_speculative,
        "small": args.small_space,
        "objective": args.objective,
        "max_model_len": args.max_model_len,
        "gpu_memory_utilization": utilization,
        "calibration": not args.no_calibration,
        "engine": args.engine,
        "model_id": args.model_id,
        "exhaustive": args.exhaustive,
        **{knob: _sizes(knob, getattr(args, knob)) for knob in ("tp", "pp", "ep")},
        "spec_methods": _methods(args),
    }


def _methods(args: argparse.Namespace) -> list[str] | None:
    from simulator.errors import ConfigError

    if not args.speculative:
        return None
    if args.no_speculative:
        raise ConfigError("--speculative and --no-speculative contradict each other")
    return [m.strip() for m in args.speculative.split(",") if m.strip()]


def _sizes(knob: str, text: str | None) -> list[int] | None:
    """``--tp 4,8`` -> [4, 8]; bad text is one line."""
    from simulator.errors import ConfigError

    if not text:
        return None
    try:
        sizes = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise ConfigError(f"--{knob} takes sizes like 8 or 4,8 (got {text!r})") from None
    if not sizes or min(sizes) < 1:
        raise ConfigError(f"--{knob} sizes must be positive integers (got {text!r})")
    return sizes
