"""Deployment configurations as arrays: the form the vectorized cost model consumes.

``ConfigArrays`` holds one numpy array per knob, shape ``[N]``, so the cost model evaluates N
configurations in one pass with no Python loop over them. Build it from validated
``DeploymentConfig`` objects (``from_configs``) or straight from numpy grids (``from_arrays``,
what the tuner's pruning pass and the benchmark use: no per-config object is ever made).

Infeasibility is a value here, not an exception: ``invalid_reason`` codes say why a
configuration cannot be built (TP does not divide the heads, fp8 on a GPU without fp8 tensor
cores...), and the cost model returns ``time = inf`` for them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

import numpy as np

from ..data.specs import DTYPE_BYTES, DeploymentConfig, HardwareSpec, ModelSpec

__all__ = ["ConfigArrays", "INVALID_REASONS", "WEIGHT_CODES", "COMPUTE_CODES", "KV_CODES"]

WEIGHT_CODES = ("bf16", "fp16", "fp8", "int8", "int4")
COMPUTE_CODES = ("bf16", "fp16", "fp8", "int8")
KV_CODES = ("bf16", "fp16", "fp8")

# Why a configuration is invalid; code 0 means valid.
INVALID_REASONS = {
    1: "tp={tp} does not divide num_attention_heads={heads}",
    2: "tp={tp} and num_key_value_heads={kv_heads}: one must divide the other",
    3: "tp={tp} does not divide intermediate_size={ffn}",
    4: "ep={ep} does not divide num_local_experts={experts} (or ep exceeds tp={tp})",
    5: "pp={pp} exceeds num_hidden_layers={layers}",
    6: "{gpu} has no {act} tensor cores",
    7: "ep={ep} needs a mixture-of-experts model",
}


@dataclass(frozen=True)
class ConfigArrays:
    """Struct of arrays, one entry per configuration (all arrays shape [N])."""

    tp: np.ndarray
    pp: np.ndarray
    ep: np.ndarray
    cp: np.ndarray
    dp: np.ndarray
    weight_code: np.ndarray  # index into WEIGHT_CODES
    compute_code: np.ndarray  # index into COMPUTE_CODES
    kv_code: np.ndarray  # index into KV_CODES
    dynamic_scaling: np.ndarray  # bool: activation scales computed per step (fp8/int8 W8A8)
    quant_group_size: np.ndarray
    int8_outlier_fraction: np.ndarray
    naive_attention: np.ndarray  # bool
    cuda_graphs: np.ndarray  # bool
    max_num_seqs: np.ndarray
    max_num_batched_tokens: np.ndarray
    max_model_len: np.ndarray
    gpu_memory_utilization: np.ndarray
    block_size: np.ndarray

    def __len__(self) -> int:
        return int(self.tp.shape[0])

    @classmethod
    def from_configs(cls, configs: Sequence[DeploymentConfig]) -> ConfigArrays:
        def column(fn, dtype=float) -> np.ndarray:
            return np.array([fn(c) for c in configs], dtype=dtype)

        return cls(
            tp=column(lambda c: c.tp),
            pp=column(lambda c: c.pp),
            ep=column(lambda c: c.ep),
            cp=column(lambda c: c.cp),
            dp=column(lambda c: c.dp),
            weight_code=column(lambda c: WEIGHT_CODES.index(c.weight_dtype), int),
            compute_code=column(lambda c: COMPUTE_CODES.index(c.activation_dtype), int),
            kv_code=column(lambda c: KV_CODES.index(c.kv_dtype), int),
            dynamic_scaling=column(lambda c: c.fp8_scaling == "dynamic", bool),
            quant_group_size=column(lambda c: c.quant_group_size),
            int8_outlier_fraction=column(lambda c: c.int8_outlier_fraction),
            naive_attention=column(lambda c: c.attention == "naive", bool),
            cuda_graphs=column(lambda c: c.cuda_graphs, bool),
            max_num_seqs=column(lambda c: c.max_num_seqs),
            max_num_batched_tokens=column(lambda c: c.max_num_batched_tokens),
            max_model_len=column(lambda c: c.max_model_len),
            gpu_memory_utilization=column(lambda c: c.gpu_memory_utilization),
            block_size=column(lambda c: c.block_size),
        )

    @classmethod
    def from_arrays(cls, size: int | None = None, **columns) -> ConfigArrays:
        """Build from numpy columns; knobs not given take DeploymentConfig's defaults.

        Dtype knobs may be given by name (``weight_dtype=np.array(["bf16", "fp8"])``) or by code.
        """
        defaults = DeploymentConfig()
        named = {
            "weight_dtype": ("weight_code", WEIGHT_CODES),
            "activation_dtype": ("compute_code", COMPUTE_CODES),
            "kv_dtype": ("kv_code", KV_CODES),
        }
        for key, (code_key, names) in named.items():
            if key in columns:
                values = np.asarray(columns.pop(key))
                if values.dtype.kind in "US":  # names -> codes, one lookup per distinct name
                    uniques, inverse = np.unique(values, return_inverse=True)
                    codes = np.array([names.index(str(name)) for name in uniques])
                    values = codes[inverse].reshape(values.shape)
                columns[code_key] = values
        if size is None:
            size = max((np.size(v) for v in columns.values()), default=1)
        base = {
            "tp": defaults.tp,
            "pp": defaults.pp,
            "ep": defaults.ep,
            "cp": defaults.cp,
            "dp": defaults.dp,
            "weight_code": WEIGHT_CODES.index(defaults.weight_dtype),
            "compute_code": COMPUTE_CODES.index(defaults.activation_dtype),
            "kv_code": KV_CODES.index(defaults.kv_dtype),
            "dynamic_scaling": defaults.fp8_scaling == "dynamic",
            "quant_group_size": defaults.quant_group_size,
            "int8_outlier_fraction": defaults.int8_outlier_fraction,
            "naive_attention": defaults.attention == "naive",
            "cuda_graphs": defaults.cuda_graphs,
            "max_num_seqs": defaults.max_num_seqs,
            "max_num_batched_tokens": defaults.max_num_batched_tokens,
            "max_model_len": defaults.max_model_len,
            "gpu_memory_utilization": defaults.gpu_memory_utilization,
            "block_size": defaults.block_size,
        }
        unknown = set(columns) - set(base)
        if unknown:
            raise TypeError(f"unknown config columns: {sorted(unknown)}")
        out: dict[str, np.ndarray] = {}
        for f in fields(cls):
            value = np.asarray(columns.get(f.name, base[f.name]))
            if f.name.endswith("_code"):
                kind: type = int
            else:
                kind = bool if isinstance(base[f.name], bool) else float
            out[f.name] = np.broadcast_to(value, (size,)).astype(kind)
        return cls(**out)

    def select(self, rows: np.ndarray) -> ConfigArrays:
        """The configurations at ``rows`` (an index array), in that order."""
        return ConfigArrays(**{f.name: getattr(self, f.name)[rows] for f in fields(self)})

    # --- derived per-config quantities -------------------------------------------------------

    @property
    def weight_bytes_per_element(self) -> np.ndarray:
        """Stored bytes per weight, group scales included (int4: 0.5 + one bf16 scale per group)."""
        table = np.array([DTYPE_BYTES[name] for name in WEIGHT_CODES])
        per_element = table[self.weight_code]
        return per_element + np.where(self.weight_code == 4, 2.0 / self.quant_group_size, 0.0)

    @property
    def kv_bytes_per_element(self) -> np.ndarray:
        return np.array([DTYPE_BYTES[name] for name in KV_CODES])[self.kv_code]

    @property
    def low_precision_compute(self) -> np.ndarray:
        """fp8 or int8 GEMMs (W8A8)."""
        return self.compute_code >= 2

    @property
    def weight_only(self) -> np.ndarray:
        """Quantized weights dequantized to bf16/fp16 inside the GEMM."""
        return (self.weight_code >= 2) & (self.compute_code <= 1)

    def compute_peak(self, hardware: HardwareSpec) -> np.ndarray:
        """Dense tensor peak of each config's GEMM dtype (NaN where the GPU lacks it)."""
        table = np.array(
            [hardware.peak(name) if hardware.has_dtype(name) else np.nan for name in COMPUTE_CODES]
        )
        return table[self.compute_code]

    def invalid_code(self, model: ModelSpec, hardware: HardwareSpec) -> np.ndarray:
        """0 where the configuration can be built, else a key of INVALID_REASONS (first failure).
        What tp and ep may split is the model's description (``architecture.py``)."""
        from ..data.architecture import Layouts, architecture_of

        layouts = Layouts.of(self.tp, self.ep)
        code = architecture_of(model).invalid_code(layouts.tp, layouts.ep)[layouts.index]

        def flag(condition: np.ndarray, value: int) -> None:
            code[(code == 0) & condition] = value

        flag(self.pp > model.num_hidden_layers, 5)
        flag(np.isnan(self.compute_peak(hardware)), 6)
        return code

    def reason(self, index: int, code: int, model: ModelSpec, hardware: HardwareSpec) -> str:
        return INVALID_REASONS[code].format(
            tp=int(self.tp[index]),
            ep=int(self.ep[index]),
            pp=int(self.pp[index]),
            heads=model.num_attention_heads,
            kv_heads=model.num_key_value_heads,
            ffn=model.intermediate_size,
            experts=model.num_local_experts,
            layers=model.num_hidden_layers,
            gpu=hardware.display_name,
            act=COMPUTE_CODES[int(self.compute_code[index])],
        )
