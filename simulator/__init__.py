"""rooftune's cost model: a roofline of the GPU per operator and phase, a memory plan, and a
request-level serving simulation on top. Pure numpy over frozen pydantic specs; no torch, no
optuna, no I/O beyond reading profiles and traces.

The public surface, re-exported here::

    from simulator import get_model, load_hardware, DeploymentConfig, predict, StepModel
    prediction = predict(get_model("llama-3.1-8b"), load_hardware("h100-sxm"),
                         DeploymentConfig(), batch=1, prompt=8192, context=1024)
"""

from .capacity import CapacityResult, find_capacity
from .errors import (
    ConfigError,
    DoesNotFitError,
    GpuError,
    NoFeasiblePlanError,
    ProfileError,
    RooftuneError,
    StorageError,
    UnknownHardwareError,
    UnknownModelError,
    WorkloadError,
)
from .hardware import list_hardware, load_hardware
from .models import get_model, list_models, parameter_counts
from .predict import predict
from .results import Measurement, Prediction
from .serving import ServingResult, simulate
from .specs import DeploymentConfig, HardwareSpec, ModelSpec, SpeculativeConfig
from .step import StepModel
from .workload import Slo, Workload, get_workload, list_workloads, parse_slo

__all__ = [
    "CapacityResult",
    "ServingResult",
    "Slo",
    "Workload",
    "find_capacity",
    "get_workload",
    "list_workloads",
    "parse_slo",
    "simulate",
    "ConfigError",
    "DeploymentConfig",
    "DoesNotFitError",
    "GpuError",
    "HardwareSpec",
    "Measurement",
    "ModelSpec",
    "NoFeasiblePlanError",
    "Prediction",
    "ProfileError",
    "RooftuneError",
    "SpeculativeConfig",
    "StepModel",
    "StorageError",
    "UnknownHardwareError",
    "UnknownModelError",
    "WorkloadError",
    "get_model",
    "list_hardware",
    "list_models",
    "load_hardware",
    "parameter_counts",
    "predict",
]
