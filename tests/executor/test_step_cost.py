"""The executor counts a step's bytes and FLOPs exactly as the simulator's op table does.

Both derive from the model's description (``simulator.data.architecture``), by two different paths:
``executor.engine.step_cost`` sums the matrices, the op table builds per-op coefficients. For
every preset, tensor-parallel degree and phase they must agree: GEMM and attention FLOPs, the
weight bytes a step reads (norm weights aside: the op table counts them in the norm kernels),
and the KV bytes a decode reads. Mixture-of-experts steps are taken with every expert touched.
"""

from __future__ import annotations

import numpy as np
import pytest

from simulator.cost.configs import ConfigArrays
from simulator.cost.ops import build_op_table
from simulator.cost.shapes import FEATURES, decode_features, prefill_features
from simulator.data.architecture import architecture_of
from simulator.data.hardware import load_hardware
from simulator.data.models import PRESETS

engine = pytest.importorskip("executor.engine")

H100 = load_hardware("h100-sxm")
F = {name: i for i, name in enumerate(FEATURES)}


def table_counts(spec, tp: int, x: np.ndarray) -> dict[str, float]:
    table = build_op_table(spec, H100, ConfigArrays.from_arrays(size=1, tp=tp))
    x = x.copy()
    x[..., F["moe_touched"]] = 1.0 if spec.is_moe else 0.0
    flops = table.apply("flops", x[None, :])[0]
    weights = table.dense("bytes", 0)[:, [F["has_tokens"], F["moe_touched"]]].sum(axis=1)
    kinds = np.array(table.kinds)
    computing = (kinds == "gemm") | (kinds == "attention")
    decode_kv = table.dense("bytes", 0)[table.names.index("attention_decode"), F["decode_kv"]]
    return {
        "flops": float(flops[computing].sum()),
        "weight_bytes": float(weights[kinds == "gemm"].sum()),
        "kv_bytes_per_token": float(decode_kv),
    }


@pytest.mark.parametrize("name", list(PRESETS))
@pytest.mark.parametrize("tp", [1, 2, 8, 16])
def test_the_executor_and_the_op_table_count_alike(name, tp):
    spec = PRESETS[name]
    if spec.num_attention_heads % tp:
        pytest.skip(f"tp {tp} does not divide {spec.num_attention_heads} heads")
    norms = engine.step_cost(spec, batch=1, context=0, tp=tp).weight_bytes
    norms -= table_counts(spec, tp, decode_features(1, 1))["weight_bytes"]
    assert norms == pytest.approx(2.0 * architecture_of(spec).norms)

    batch, context = 4, 999
    decode = engine.step_cost(spec, batch=batch, context=context, tp=tp)
    counted = table_counts(spec, tp, decode_features(batch, context + 1))
    assert decode.flops == pytest.approx(counted["flops"], rel=1e-12)
    assert decode.weight_bytes - norms == pytest.approx(counted["weight_bytes"], rel=1e-12)
    assert decode.kv_bytes == pytest.approx(
        batch * (context + 1) * counted["kv_bytes_per_token"], rel=1e-12
    )

    prompt = 333
    prefill = engine.step_cost(spec, batch=batch, prompt=prompt, tp=tp)
    counted = table_counts(spec, tp, prefill_features(batch, prompt))
    assert prefill.flops == pytest.approx(counted["flops"], rel=1e-12)
