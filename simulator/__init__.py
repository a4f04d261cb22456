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
    "CapacityResult": "serving.capacity",
    "find_capacity": "serving.capacity",
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
    "list_hardware": "data.hardware",
    "load_hardware": "data.hardware",
    "get_model": "data.models",
    "list_models": "data.models",
    "parameter_counts": "data.models",
    "predict": "cost.predict",
    "Measurement": "results",
    "Prediction": "results",
    "ServingResult": "serving.simulate",
    "simulate": "serving.simulate",
    "DeploymentConfig": "data.specs",
    "HardwareSpec": "data.specs",
    "ModelSpec": "data.specs",
    "SpeculativeConfig": "data.specs",
    "StepModel": "cost.step",
    "Slo": "data.workload",
    "Workload": "data.workload",
    "get_workload": "data.workload",
    "list_workloads": "data.workload",
    "parse_slo": "data.workload",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module 'simulator' has no attribute {name!r}")
    value = getattr(import_module(f".{home}", __name__), name)
    globals()[name] = value
    return value


if TYPE_CHECKING:  # the same names, eagerly, for type checkers
    from .cost.predict import predict
    from .cost.step import StepModel
    from .data.hardware import list_hardware, load_hardware
    from .data.models import get_model, list_models, parameter_counts
    from .data.specs import DeploymentConfig, HardwareSpec, ModelSpec, SpeculativeConfig
    from .data.workload import Slo, Workload, get_workload, list_workloads, parse_slo
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
    from .results import Measurement, Prediction
    from .serving.capacity import CapacityResult, find_capacity
    from .serving.simulate import ServingResult, simulate

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
