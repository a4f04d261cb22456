"""Throughput of the vectorized step model: configurations per second on this machine.

A grid of configurations (tp, pp, weight and KV dtypes, batch, context) is built straight as
numpy columns, then one call counts the ops, sizes the memory and times a prefill and a decode
step for every configuration. Printed as a table, then one JSON line last.
"""

from __future__ import annotations

import json
import time

import numpy as np


def step_model_throughput(
    *,
    num_configs: int = 200_000,
    model_name: str = "llama-3.1-70b",
    hardware_name: str = "h100-sxm",
    repeats: int = 3,
) -> dict:
    from simulator.cost.configs import ConfigArrays
    from simulator.cost.shapes import decode_features
    from simulator.cost.step import StepModel
    from simulator.data.hardware import load_hardware
    from simulator.data.models import get_model

    model, hardware = get_model(model_name), load_hardware(hardware_name)
    rng = np.random.default_rng(0)
    tp = rng.choice([1, 2, 4, 8], num_configs)
    configs = ConfigArrays.from_arrays(
        size=num_configs,
        tp=tp,
        pp=rng.choice([1, 2, 4], num_configs),
        weight_code=rng.choice([0, 2, 4], num_configs),
        compute_code=0,
        kv_code=rng.choice([0, 2], num_configs),
        max_num_seqs=rng.choice([64, 128, 256, 512], num_configs),
    )
    batch = rng.integers(1, 512, num_configs)
    context = rng.integers(128, 32768, num_configs)
    best = np.inf
    for _ in range(repeats):
        start = time.perf_counter()
        step = StepModel.build(model, hardware, configs)
        decode = step.step(decode_features(batch, context))
        fits = step.fits(batch, context + 1)
        best = min(best, time.perf_counter() - start)
    return {
        "benchmark": "step_model_throughput",
        "model": model_name,
        "hardware": hardware_name,
        "configs": num_configs,
        "seconds": round(best, 4),
        "configs_per_second": round(num_configs / best),
        "feasible": int(np.sum(fits & np.isfinite(decode.latency_s))),
    }


def main() -> None:
    result = step_model_throughput()
    print(f"{'configs':>10} {'seconds':>9} {'configs/s':>12}")
    print(f"{result['configs']:>10} {result['seconds']:>9.3f} {result['configs_per_second']:>12,}")
    print(json.dumps(result))


if __name__ == "__main__":
    main()
