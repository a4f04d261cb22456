"""The one exception tree of rooftune.

Every error a user can cause (bad input, unknown names, a model that does not fit, an unreachable
storage) is a ``RooftuneError``. The CLI turns any of them into one line on stderr and a non-zero
exit code; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

__all__ = [
    "RooftuneError",
    "ConfigError",
    "UnknownModelError",
    "UnknownHardwareError",
    "ProfileError",
    "DoesNotFitError",
    "WorkloadError",
    "NoFeasiblePlanError",
    "StorageError",
    "GpuError",
    "unfit_error",
    "one_line",
]


class RooftuneError(Exception):
    """Root of every error rooftune raises on purpose. ``exit_code`` is what the CLI returns."""

    exit_code = 1


class ConfigError(RooftuneError):
    """A deployment configuration is impossible (TP does not divide the heads, bad dtype...)."""

    exit_code = 2


class UnknownModelError(RooftuneError):
    """No preset of that name and no readable config.json at that path."""

    exit_code = 2


class UnknownHardwareError(RooftuneError):
    """No hardware profile of that name."""

    exit_code = 2


class ProfileError(RooftuneError):
    """A hardware profile or calibration file is malformed."""

    exit_code = 2


class DoesNotFitError(RooftuneError):
    """The deployment does not fit in GPU memory."""

    exit_code = 1


class WorkloadError(RooftuneError):
    """A workload or trace is malformed (negative rate, empty trace, lengths past max_model_len)."""

    exit_code = 2


class NoFeasiblePlanError(RooftuneError):
    """The search finished but no configuration meets the SLOs."""

    exit_code = 3


class StorageError(RooftuneError):
    """A study storage cannot be reached or holds something else."""

    exit_code = 1


class GpuError(RooftuneError):
    """No usable GPU, or a GPU that does not match the requested profile."""

    exit_code = 1


def unfit_error(kind: str | None, reason: str | None) -> RooftuneError:
    """The error for a configuration that cannot run, by the kind of reason
    (``results.Unfit``): memory that does not suffice is a ``DoesNotFitError``, the rest is a
    configuration the user must change (``ConfigError``)."""
    message = reason or "the configuration cannot run"
    if kind in ("memory", "kv_cache"):
        return DoesNotFitError(message)
    return ConfigError(message)


def one_line(error: BaseException | str, prefix: str = "") -> str:
    """The first problem of ``error`` as one line: ``'field.sub: message'`` for a pydantic
    ``ValidationError`` (its location joined by dots, under ``prefix``), ``str(error)`` else.

    Every place that turns a rejected input into a ``RooftuneError`` words it through here, so
    the CLI's single line always names the field first.
    """
    details = getattr(error, "errors", None)
    if callable(details) and details():
        first = details()[0]
        parts = (prefix, *first.get("loc", ()))
        where = ".".join(str(part) for part in parts if part not in ("", "__root__"))
        message = str(first.get("msg", "")).removeprefix("Value error, ")
        text = f"{where}: {message}" if where else message
    else:
        text = f"{prefix}: {error}" if prefix else str(error)
    return " ".join(text.split())
