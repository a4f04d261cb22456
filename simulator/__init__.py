"""rooftune's cost model: a roofline of the GPU per operator and phase, a memory plan, and a
request-level serving simulation on top. Pure numpy over frozen pydantic specs; no torch, no
optuna, no I/O beyond reading profiles and traces.

The public surface, re-exported here::

    from simulator import get_model, load_hardware, DeploymentConfig, predict, StepModel
    prediction = predict(get_model("llama-3.1-8b"), load_hardware("h100-sxm"),
                         DeploymentConfig(), batch=1, prompt=8192, context=1024)
"""

from importlib import import_module
from typing import TYPE_CHECKING, Any

# Where each public name lives. Importing ``simulator`` (or any submodule, which runs this file
# first) loads nothing else: a name's module loads the first time the name is used, so a verb
# that needs only the step model does not pay for the serving simulation.
_HOMES = {
    "CapacityResult": "capacity",
    "find_capacity": "capacity",
    "ConfigError": "errors",
    "DoesNotFitError": "errors",
    "GpuError": "errors",
    "NoFeasiblePlanError": "errors",
    "ProfileError": "errors",
    "RooftuneError": "errors",
    "StorageError": "errors",
    "UnknownHardwareError": "errors",
    "UnknownModelError": "errors",
    "WorkloadError": "errors",
    "list_hardware": "hardware",
    "load_hardware": "hardware",
    "get_model": "models",
    "list_models": "models",
    "parameter_counts": "models",
    "predict": "predict",
    "Measurement": "results",
    "Prediction": "results",
    "ServingResult": "serving",
    "simulate": "serving",
    "DeploymentConfig": "specs",
    "HardwareSpec": "specs",
    "ModelSpec": "specs",
    "SpeculativeConfig": "specs",
    "StepModel": "step",
    "Slo": "workload",
    "Workload": "workload",
    "get_workload": "workload",
    "list_workloads": "workload",
    "parse_slo": "workload",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # the same names, eagerly, for type checkers
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
