"""The frozen input types of the simulator: what model, on what GPU, deployed how.

``ModelSpec`` speaks Hugging Face ``config.json`` names, so any Llama-architecture checkpoint maps
onto it offline. ``HardwareSpec`` is datasheet numbers only; what the GPU achieves in practice
(efficiency curves, overheads) is an ``Efficiency`` kept beside it and replaced by calibration.
``DeploymentConfig`` is one point of the search space. All of them are validated once, at the
boundary; the cost model then works on plain numbers and numpy arrays.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ..units import MiB
from .policies import DEFAULT_GPU_MEMORY_UTILIZATION, Admission

__all__ = [
    "DTYPE_BYTES",
    "WeightDtype",
    "ComputeDtype",
    "KvDtype",
    "ModelSpec",
    "HardwareSpec",
    "Efficiency",
    "SpeculativeConfig",
    "DeploymentConfig",
]

# Bytes per element of each storage dtype. int4 is half a byte; group scales are added separately.
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4.0,
    "bf16": 2.0,
    "fp16": 2.0,
    "fp8": 1.0,
    "int8": 1.0,
    "int4": 0.5,
}

WeightDtype = Literal["bf16", "fp16", "fp8", "int8", "int4"]
ComputeDtype = Literal["bf16", "fp16", "fp8", "int8"]
KvDtype = Literal["bf16", "fp16", "fp8"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


ModelType = Literal["llama", "llama4_text", "mistral", "qwen2", "qwen3", "mixtral", "deepseek_v3"]


class ModelSpec(_Frozen):
    """A decoder of the Llama lineage. Field names follow Hugging Face ``config.json``; what the
    matrices are and how they split is the family's description (``architecture.py``, keyed by
    ``model_type``).

    Dense Llama (3.x): every layer is attention + SwiGLU MLP of width ``intermediate_size``.
    MoE layers (Llama 4, Mixtral, DeepSeek-V3): from layer ``first_k_dense_replace`` on, every
    ``moe_layer_step``-th layer replaces the dense MLP with ``num_local_experts`` routed experts
    of width ``moe_intermediate_size`` (top ``num_experts_per_tok``) plus ``num_shared_experts``
    always-on experts of the same width. ``intermediate_size`` is always the *dense* MLP width
    (the loader maps each family's spelling). Qwen2 adds biases to q, k and v
    (``attention_bias``), Qwen3 normalizes q and k per head. DeepSeek-V3's multi-head latent
    attention compresses queries to ``q_lora_rank`` and keys and values to ``kv_lora_rank``
    (plus ``qk_rope_head_dim`` rotated dimensions, shared by all heads); per head, keys are
    ``qk_nope_head_dim + qk_rope_head_dim`` long and values ``v_head_dim``.
    """

    name: str
    model_type: ModelType = "llama"
    num_hidden_layers: int = Field(gt=0)
    hidden_size: int = Field(gt=0)
    num_attention_heads: int = Field(gt=0)
    num_key_value_heads: int = Field(gt=0)
    head_dim: int = Field(gt=0)
    intermediate_size: int = Field(gt=0)
    vocab_size: int = Field(gt=0)
    tie_word_embeddings: bool = False
    max_position_embeddings: int = Field(default=131072, gt=0)
    rope_theta: float = 500000.0
    rope_scaling: dict[str, float | str | int] | None = None
    rms_norm_eps: float = 1e-5
    torch_dtype: str = "bfloat16"
    # Mixture of experts (0 experts = dense model).
    num_local_experts: int = Field(default=0, ge=0)
    num_experts_per_tok: int = Field(default=0, ge=0)
    num_shared_experts: int = Field(default=0, ge=0)
    moe_intermediate_size: int = Field(default=0, ge=0)
    moe_layer_step: int = Field(default=0, ge=0)
    first_k_dense_replace: int = Field(default=0, ge=0)
    attention_bias: bool = False
    # Multi-head latent attention (DeepSeek-V3); 0 kv_lora_rank = grouped-query attention.
    q_lora_rank: int = Field(default=0, ge=0)
    kv_lora_rank: int = Field(default=0, ge=0)
    qk_rope_head_dim: int = Field(default=0, ge=0)
    qk_nope_head_dim: int = Field(default=0, ge=0)
    v_head_dim: int = Field(default=0, ge=0)
    # Where the numbers come from (URL of the published config.json, or a local path).
    source: str = ""

    @model_validator(mode="after")
    def _check(self) -> ModelSpec:
        if self.num_attention_heads % self.num_key_value_heads:
            raise ValueError(
                f"num_attention_heads={self.num_attention_heads} is not a multiple of "
                f"num_key_value_heads={self.num_key_value_heads}"
            )
        if self.num_local_experts:
            if not (0 < self.num_experts_per_tok <= self.num_local_experts):
                raise ValueError("num_experts_per_tok must be in 1..num_local_experts")
            if self.moe_intermediate_size <= 0 or self.moe_layer_step <= 0:
                raise ValueError("an MoE model needs moe_intermediate_size and moe_layer_step")
        return self

    @property
    def is_moe(self) -> bool:
        return self.num_local_experts > 0

    @property
    def num_moe_layers(self) -> int:
        """Layers whose MLP is a mixture of experts: layer i is when ``i >=
        first_k_dense_replace`` and ``(i + 1) % moe_layer_step == 0`` (HF Llama 4's
        ``interleave_moe_layer_step``; DeepSeek-V3's first three layers stay dense)."""
        if not self.is_moe:
            return 0
        return sum(
            1
            for i in range(self.first_k_dense_replace, self.num_hidden_layers)
            if (i + 1) % self.moe_layer_step == 0
        )

    @property
    def latent_attention(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def num_dense_layers(self) -> int:
        return self.num_hidden_layers - self.num_moe_layers

    @property
    def q_size(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_size(self) -> int:
        return self.num_key_value_heads * self.head_dim


class Efficiency(_Frozen):
    """What fraction of the datasheet a real kernel reaches, and the fixed costs around kernels.

    Literature defaults live in ``hardware_profiles/defaults.efficiency.yaml``; ``tune calibrate``
    writes measured ones to ``hardware_profiles/calibration/<gpu>.yaml``. Curves are piecewise
    linear in log-log (log efficiency vs log2 of their x, tokens or sequence length), clamped at
    both ends: between two knots efficiency, and so time, is a power law of x.
    """

    # Fraction of peak HBM bandwidth a streaming kernel reaches.
    hbm: float = Field(default=0.85, gt=0, le=1)
    # Tensor-core GEMM efficiency vs the number of tokens M (rows of the activation matrix).
    gemm_tokens: tuple[float, ...] = (1, 16, 64, 128, 256, 512, 1024, 2048, 4096, 8192)
    gemm_efficiency: tuple[float, ...] = (
        0.25,
        0.30,
        0.45,
        0.55,
        0.65,
        0.70,
        0.74,
        0.77,
        0.79,
        0.80,
    )
    # Extra derate of an fp8 / int8 GEMM relative to the bf16 curve (scaled-mm kernels).
    low_precision_gemm_factor: float = Field(default=0.90, gt=0, le=1)
    # FlashAttention prefill efficiency vs query length per sequence.
    attention_seq: tuple[float, ...] = (128, 512, 1024, 2048, 4096, 8192, 16384)
    attention_efficiency: tuple[float, ...] = (0.25, 0.40, 0.50, 0.57, 0.62, 0.65, 0.66)
    # Decode attention (paged KV read) reaches this fraction of ``hbm``.
    decode_attention_hbm: float = Field(default=0.80, gt=0, le=1)
    # The fraction of the bf16 tensor peak a decode-attention kernel's math reaches where it is
    # compute-bound (many query heads per KV head: latent attention, speculative verify). It is
    # not the prefill curve: a decode kernel streams the KV cache once for every query row.
    decode_attention_compute: float = Field(default=0.55, gt=0, le=1)
    # Fraction of the scale-up link bandwidth a large collective reaches (bus bandwidth).
    link: float = Field(default=0.80, gt=0, le=1)
    network: float = Field(default=0.80, gt=0, le=1)
    # Latency of one collective call: base + per extra rank (alpha of the alpha-beta model).
    collective_latency_s: float = Field(default=8e-6, ge=0)
    collective_latency_per_rank_s: float = Field(default=1e-6, ge=0)
    network_latency_s: float = Field(default=20e-6, ge=0)
    # Fixed time of one multi-token GEMM kernel beyond streaming its weights: a library GEMM's
    # ramp-up and tail (~4 us on an H100, studies/executor-h100/micro.json). It lengthens only
    # the memory-bound side, where small TP shards feel it; a one-token GEMM is a GEMV that
    # streams from its first tile (executor.kernels) and measures without it.
    gemm_tail_s: float = Field(default=0.0, ge=0)
    # Fixed cost of one kernel: launch from the host (eager) or back-to-back inside a CUDA graph.
    kernel_launch_s: float = Field(default=5e-6, ge=0)
    kernel_graph_s: float = Field(default=1.5e-6, ge=0)
    # Host time per kernel of a model run eagerly from PyTorch, with no CUDA graph at all
    # (module and Python dispatch around each launch: an eager decode step's time over its
    # kernel count, measured). None: ``kernel_launch_s``, the bare launch.
    eager_kernel_s: float | None = Field(default=None, ge=0)
    # Host-side cost of one engine iteration (scheduling, sampling, detokenization).
    step_overhead_s: float = Field(default=3e-4, ge=0)
    # Host-side cost per token an iteration emits (sampling, detokenizing, streaming): what
    # grows with the batch. 0 until measured (the serving loop of ``tune validate --traffic``).
    token_overhead_s: float = Field(default=0.0, ge=0)
    # Where these numbers come from: ``source`` in one line, ``sources`` per field group (URLs),
    # ``provenance`` for measured files (GPU, driver, torch, date, commit).
    source: str = "literature defaults"
    sources: dict[str, str] = Field(default_factory=dict)
    provenance: dict[str, str] = Field(default_factory=dict)
    # How far the calibrated model's step times fell from the measured ones: per phase
    # (prefill, decode), the 10th and 90th percentile of (predicted - measured) / measured over
    # the calibration's measured steps. Empty without a calibration.
    step_error: dict[str, tuple[float, float]] = Field(default_factory=dict)

    @model_validator(mode="after")
    def _check(self) -> Efficiency:
        for xs, ys, label in (
            (self.gemm_tokens, self.gemm_efficiency, "gemm"),
            (self.attention_seq, self.attention_efficiency, "attention"),
        ):
            if len(xs) != len(ys) or len(xs) < 1:
                raise ValueError(f"{label} curve: x and efficiency must have the same length")
            if any(b <= a for a, b in zip(xs, xs[1:], strict=False)):
                raise ValueError(f"{label} curve: x must be strictly increasing")
            if any(not (0 < y <= 1) for y in ys):
                raise ValueError(f"{label} curve: efficiencies must be in (0, 1]")
        # Time is work / (peak x efficiency), a power law of x between knots (log-log curves).
        # It never falls as the work grows (work ~ x for a GEMM, x^2 for causal attention) when
        # it does not fall from knot to knot: each knot may rise at most by (x1 / x0)^exponent.
        for xs, ys, label, exponent in (
            (self.gemm_tokens, self.gemm_efficiency, "gemm", 1.0),
            (self.attention_seq, self.attention_efficiency, "attention", 2.0),
        ):
            for i in range(1, len(xs)):
                (x0, y0), (x1, y1) = (xs[i - 1], ys[i - 1]), (xs[i], ys[i])
                limit = y0 * (x1 / x0) ** exponent
                if y1 > limit * (1 + 1e-9):
                    raise ValueError(
                        f"{label} curve rises too steeply from {y0:.3g} at {x0:g} to {y1:.3g} "
                        f"at {x1:g} (at most {limit:.3g}): a larger step would be predicted "
                        "faster"
                    )
        return self


class HardwareSpec(_Frozen):
    """One GPU model as its datasheet describes it. Dense peaks only (no 2:4 sparsity figures).

    ``peak_flops_per_s`` has one entry per tensor-core dtype the GPU has; a dtype it lacks is
    absent (Hopper has no int4 tensor cores, so int4 weights compute in bf16 after dequant).
    ``vector_flops_per_s`` is the non-tensor FP32 rate (dequantization, elementwise work).
    Link bandwidths are per direction, per GPU.
    """

    name: str
    display_name: str
    vendor: str = "NVIDIA"
    # The chip generation (hopper, ampere...): the calibrations of two profiles of one
    # architecture must agree on a kernel's efficiency unless a reason is stated.
    architecture: str | None = None
    peak_flops_per_s: dict[str, float]
    vector_flops_per_s: float = Field(gt=0)
    hbm_bytes: float = Field(gt=0)
    # The total the driver reports, in MiB as nvidia-smi prints it (torch.cuda.mem_get_info
    # gives the same in bytes): what every engine's memory fraction multiplies, and so what
    # every memory rule here uses. Marketing GB and driver MiB differ by up to 7 % (an H100 SXM
    # "80 GB" reports 81,559 MiB = 85.5e9 bytes). None: not known, take hbm_bytes.
    device_memory_mib: int | None = Field(default=None, gt=0)
    hbm_bytes_per_s: float = Field(gt=0)
    l2_bytes: float = Field(gt=0)
    sm_count: int = Field(gt=0)
    scale_up_bytes_per_s: float = Field(gt=0)  # NVLink (or PCIe when there is no NVLink)
    scale_up_kind: str = "nvlink"
    gpus_per_node: int = Field(gt=0)
    scale_out_bytes_per_s: float = Field(gt=0)  # network per GPU
    pcie_bytes_per_s: float = Field(gt=0)
    tdp_watts: float = Field(gt=0)
    price_per_hour: float | None = None
    sources: dict[str, str]
    efficiency: Efficiency = Field(default_factory=Efficiency)

    @field_validator("peak_flops_per_s")
    @classmethod
    def _known_dtypes(cls, peaks: dict[str, float]) -> dict[str, float]:
        unknown = set(peaks) - {"bf16", "fp16", "fp8", "int8", "int4", "fp4", "tf32"}
        if unknown:
            raise ValueError(f"unknown dtypes in peak_flops_per_s: {sorted(unknown)}")
        if "bf16" not in peaks and "fp16" not in peaks:
            raise ValueError("peak_flops_per_s needs at least bf16 or fp16")
        if any(v <= 0 for v in peaks.values()):
            raise ValueError("peaks must be positive")
        return peaks

    def peak(self, dtype: str) -> float:
        """Dense tensor peak for a compute dtype; bf16/fp16 stand in for each other."""
        if dtype in self.peak_flops_per_s:
            return self.peak_flops_per_s[dtype]
        if dtype in ("bf16", "fp16"):
            return self.peak_flops_per_s.get("bf16") or self.peak_flops_per_s["fp16"]
        raise KeyError(dtype)

    def has_dtype(self, dtype: str) -> bool:
        return dtype in self.peak_flops_per_s or dtype in ("bf16", "fp16")

    @property
    def memory_reported_bytes(self) -> float:
        """Each GPU's memory as the driver reports it (``hbm_bytes`` when not known)."""
        if self.device_memory_mib is None:
            return self.hbm_bytes
        return float(self.device_memory_mib * MiB)

    @property
    def ridge_bf16(self) -> float:
        """Arithmetic intensity (FLOP/byte) where a bf16 kernel turns compute-bound."""
        return self.peak("bf16") / self.hbm_bytes_per_s


class SpeculativeConfig(_Frozen):
    """Speculative decoding: a drafter proposes ``num_speculative_tokens`` tokens, the target
    verifies them in one step of ``g + 1`` tokens per sequence, and each proposal is accepted with
    probability ``acceptance_rate`` until the first rejection."""

    method: Literal["draft", "eagle", "ngram"] = "draft"
    draft_model: str | None = None  # preset name or config.json, for method="draft"
    num_speculative_tokens: int = Field(default=3, ge=1, le=16)
    acceptance_rate: float = Field(default=0.7, gt=0, lt=1)

    @model_validator(mode="after")
    def _check(self) -> SpeculativeConfig:
        if self.method == "draft" and not self.draft_model:
            raise ValueError("method='draft' needs draft_model")
        return self


class DeploymentConfig(_Frozen):
    """One deployment of one model replica set: parallelism, dtypes, batching, speculation.

    Parallelism inside a replica: ``tp`` (tensor), ``pp`` (pipeline stages), ``cp`` (context
    parallel: a long prompt's attention split over ``cp`` GPUs), ``ep`` (experts spread over ``ep``
    GPUs of the TP group, each expert split ``tp / ep`` ways). ``dp`` replicas sit behind a router.
    GPUs used = ``dp * tp * pp * cp``.

    Quantization: ``weight_dtype`` is how weights are stored, ``activation_dtype`` what the GEMMs
    compute in. fp8/fp8 is FP8 W8A8; int8/int8 is INT8 W8A8 (SmoothQuant, with
    ``int8_outlier_fraction`` of the input channels kept in bf16 as LLM.int8 does); int8/bf16 and
    int4/bf16 are weight-only (dequantized on the fly, group scales every ``quant_group_size``).
    """

    tp: int = Field(default=1, ge=1)
    pp: int = Field(default=1, ge=1)
    dp: int = Field(default=1, ge=1)
    ep: int = Field(default=1, ge=1)
    cp: int = Field(default=1, ge=1)
    weight_dtype: WeightDtype = "bf16"
    activation_dtype: ComputeDtype = "bf16"
    kv_dtype: KvDtype = "bf16"
    fp8_scaling: Literal["static", "dynamic"] = "dynamic"
    quant_group_size: int = Field(default=128, ge=16)
    int8_outlier_fraction: float = Field(default=0.0, ge=0, lt=0.5)
    attention: Literal["flash", "naive"] = "flash"
    max_num_seqs: int = Field(default=256, ge=1)
    max_num_batched_tokens: int = Field(default=8192, ge=1)
    enable_chunked_prefill: bool = True
    scheduling: Literal["continuous", "static"] = "continuous"
    # Whose admission and preemption rules the continuous scheduler follows (the engine's, since
    # the same knobs admit different batches on different engines): simulator/serving/admission.py.
    admission: Admission = "vllm"
    speculative: SpeculativeConfig | None = None
    gpu_memory_utilization: float = Field(default=DEFAULT_GPU_MEMORY_UTILIZATION, gt=0, le=1)
    max_model_len: int = Field(default=8192, ge=16)
    cuda_graphs: bool = True
    block_size: int = Field(default=16, ge=1)

    @model_validator(mode="after")
    def _check(self) -> DeploymentConfig:
        w, a = self.weight_dtype, self.activation_dtype
        allowed = {
            ("bf16", "bf16"),
            ("fp16", "fp16"),
            ("fp8", "fp8"),
            ("int8", "int8"),
            ("fp8", "bf16"),
            ("int8", "bf16"),
            ("int4", "bf16"),
            ("fp8", "fp16"),
            ("int8", "fp16"),
            ("int4", "fp16"),
        }
        if (w, a) not in allowed:
            raise ValueError(
                f"weights {w} with activations {a} is not a supported scheme; use bf16/bf16, "
                "fp8/fp8 (W8A8), int8/int8 (W8A8), or int8|int4|fp8 weights with bf16 activations"
            )
        if self.ep > self.tp or self.tp % self.ep:
            raise ValueError(f"ep={self.ep} must divide tp={self.tp}")
        if self.max_num_batched_tokens < self.max_num_seqs and self.scheduling == "continuous":
            raise ValueError(
                f"max_num_batched_tokens={self.max_num_batched_tokens} is below "
                f"max_num_seqs={self.max_num_seqs}: decodes alone would not fit one step"
            )
        if not self.enable_chunked_prefill and self.max_num_batched_tokens < self.max_model_len:
            raise ValueError(
                "without chunked prefill max_num_batched_tokens must be at least max_model_len "
                f"({self.max_num_batched_tokens} < {self.max_model_len})"
            )
        return self

    @property
    def gpus_per_replica(self) -> int:
        return self.tp * self.pp * self.cp

    @property
    def num_gpus(self) -> int:
        return self.dp * self.gpus_per_replica

    @property
    def is_weight_only(self) -> bool:
        return self.weight_dtype in ("int8", "int4", "fp8") and self.activation_dtype in (
            "bf16",
            "fp16",
        )
