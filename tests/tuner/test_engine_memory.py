"""Engine configs and memory: the fraction each engine's config names gives the plan at least
its KV cache under that engine's own budget rule, and never more memory than the GPU has; a
plan that does not fit is refused in one line."""

from __future__ import annotations

import itertools

import pytest

from simulator.cost.memory import RESERVED_CONTEXT_BYTES
from simulator.data.specs import DeploymentConfig
from simulator.errors import ConfigError
from tests.tuner.test_engines import GIB, inputs_for, plan_memory
from tuner.engines import ENGINES, EngineSection, common, memory_fraction, render


def granted(engine: str, fraction: float, *, hbm, w, a, r) -> tuple[float, float]:
    """(KV bytes the engine allocates, total bytes it uses), recomputed from its rule."""
    if engine == "vllm":  # share of total memory for everything
        kv = fraction * hbm - (w + a + r)
        return kv, w + a + r + kv
    if engine == "sglang":  # share of the memory free at start for weights + KV pool
        free = hbm - RESERVED_CONTEXT_BYTES
        return fraction * free - w, fraction * free + a + r
    kv = fraction * (hbm - w - a - r)  # TRT-LLM: share of what is free after weights, buffers
    return kv, w + a + r + kv


def emitted_fraction(section: EngineSection) -> float:
    flag = {"vllm": "--gpu-memory-utilization", "sglang": "--mem-fraction-static"}
    flags = common.flag_values(section.args)
    return float(flags[flag.get(section.engine, "--kv_cache_free_gpu_memory_fraction")])


# fmt: off
MEMORY_GRID = list(itertools.product(  # hbm, then its shares: weights, activations, reserve, KV
    (24 * GIB, 80 * GIB, 141 * GIB), (0.05, 0.3, 0.6),
    (0.01, 0.06), (0.01, 0.04), (0.001, 0.1, 0.3, 0.6),
))
# fmt: on


@pytest.mark.parametrize("engine", ENGINES)
def test_emitted_fraction_gives_the_plan_its_kv_and_fits(engine):
    config = DeploymentConfig()
    checked = refused = 0
    for hbm, *shares in MEMORY_GRID:
        w, a, r, kv = (round(s * hbm) for s in shares)
        inputs = inputs_for(config, **plan_memory(hbm, w, a, r, kv))
        try:
            section = render(engine, inputs)
        except ConfigError:
            refused += 1
            # Refusals are only for plans that do not fit (or leave under 2% headroom).
            assert w + a + r + kv > 0.975 * hbm, (engine, hbm, shares)
            continue
        fraction = emitted_fraction(section)
        assert 0 < fraction <= 0.98
        kv_given, total = granted(engine, fraction, hbm=hbm, w=w, a=a, r=r)
        assert kv_given >= kv, f"{engine}: {fraction} gives {kv_given} < {kv} bytes of KV"
        assert total <= hbm, f"{engine}: {fraction} uses {total} > {hbm} bytes"
        assert kv_given - kv < 0.0011 * hbm, "rounded up by more than one 0.001 step"
        checked += 1
    assert checked > 100 and refused > 0


@pytest.mark.parametrize("engine", ENGINES)
def test_plans_that_do_not_fit_are_refused(engine):
    too_big = inputs_for(DeploymentConfig(), kv_cache_bytes=70 * GIB)  # 16+3+2+70 > 80 GiB
    with pytest.raises(ConfigError):
        memory_fraction(engine, too_big)
    with pytest.raises(ConfigError, match="no memory"):
        memory_fraction(engine, inputs_for(DeploymentConfig(), kv_cache_bytes=0))


def test_sglang_rounding_never_eats_activation_headroom():
    # weights + KV = 0.90004 of the free memory, 5e-5 of it left over: 0.901 would overcommit
    # the memory outside SGLang's static pools, so the fraction comes from the next finer grid.
    hbm = 80 * GIB
    free = hbm - RESERVED_CONTEXT_BYTES
    w, kv, a = 0.5 * free, 0.40004 * free, 0.05 * hbm
    r = hbm - 0.90015 * free - a
    inputs = inputs_for(DeploymentConfig(), **plan_memory(hbm, w, a, r, kv))
    fraction = memory_fraction("sglang", inputs)
    granted_kv, total = granted("sglang", fraction, hbm=hbm, w=w, a=a, r=r)
    assert fraction == 0.9001 and granted_kv >= kv and total <= hbm


def test_engine_inputs_validate():
    with pytest.raises(ConfigError, match="weights_bytes"):
        inputs_for(DeploymentConfig(), weights_bytes=-1)
    with pytest.raises(ConfigError, match="model_id"):
        inputs_for(DeploymentConfig(), model_id=" ")
    with pytest.raises(ConfigError, match="unknown engine"):
        render("tgi", inputs_for(DeploymentConfig()))
