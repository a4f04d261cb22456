"""Optuna studies: where the search's simulations are stored, and how workers share them.

**Storage.** By default a study lives in an Optuna journal file inside the study directory
(``STUDY_DIR/study.journal``): an append-only log where every finished simulation is one
flushed record, so a crash or Ctrl-C loses at most the simulation in flight, and re-running the
same ``tune plan`` resumes (the search replays what the study holds). ``--storage
postgresql://...`` puts the study in PostgreSQL instead, where any number of ``tune worker``
processes on any machines join it by name and run the simulations the search queues. There each
process sends a heartbeat while its trial runs; a trial whose heartbeat stops (a killed worker)
is failed by whichever process next looks, and ``RetryHeartbeatStaleTrialCallback`` queues it
again.

Every trial is a queued or recorded simulation (``tuner.search.trials``): no sampler proposes points,
so the study's sampler is a seeded random one that never runs.
"""

from __future__ import annotations

import os
import socket
import time
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from simulator.errors import ConfigError, StorageError

__all__ = [
    "quiet_optuna",
    "SPEC_ATTR",
    "redact",
    "open_storage",
    "create_study",
    "load_study",
    "recover_stale_trials",
    "worker_id",
    "count_states",
    "driver_url",
]

SPEC_ATTR = "rooftune_spec"  # study user attr: everything a worker needs to rebuild the search
JOURNAL_NAME = "study.journal"


def quiet_optuna() -> None:
    """Optuna's warnings only, and not the one it logs, traceback and all, for a trial stopped
    by Ctrl-C: the command says "interrupted" in one line and the study resumes on a rerun."""
    import logging

    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    logger = logging.getLogger("optuna.study._optimize")
    if not any(isinstance(f, _DropInterrupts) for f in logger.filters):
        logger.addFilter(_DropInterrupts())


class _DropInterrupts:
    """A logging filter: drop records about a KeyboardInterrupt."""

    def filter(self, record) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        return not isinstance(exc, KeyboardInterrupt) and "KeyboardInterrupt" not in str(
            record.msg
        )


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


def redact(url: str | None) -> str:
    """A storage URL without its password, for messages and plans."""
    if not url:
        return "journal"
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
        return urlunsplit(parts._replace(netloc=netloc))
    return url


def driver_url(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 means psycopg 3 by
    it, while rooftune depends on psycopg2 (``psycopg2-binary``)."""
    if url.startswith("postgresql://"):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None:
            return "postgresql+psycopg2://" + url[len("postgresql://") :]
    return url


def open_storage(
    url: str | None,
    *,
    study_dir: Path | None = None,
    heartbeat_s: int = 10,
    grace_s: int | None = None,
    max_retry: int = 3,
) -> Any:
    """The Optuna storage for ``url`` (None: the journal file in ``study_dir``)."""
    import optuna
    from optuna.storages import RDBStorage, RetryHeartbeatStaleTrialCallback
    from optuna.storages.journal import JournalFileBackend, JournalFileOpenLock, JournalStorage

    if url is None or url.endswith(".journal"):
        path = Path(url) if url else (study_dir or Path(".")) / JOURNAL_NAME
        if not path.parent.is_dir():
            raise StorageError(f"journal directory {path.parent} does not exist")
        lock = JournalFileOpenLock(str(path))
        return JournalStorage(JournalFileBackend(str(path), lock_obj=lock))
    scheme = urlsplit(url).scheme
    if scheme not in ("postgresql", "postgresql+psycopg2", "sqlite", "mysql+pymysql"):
        raise ConfigError(
            f"--storage {redact(url)}: expected postgresql://..., sqlite:///... or "
            "a .journal file path"
        )
    kwargs: dict[str, Any] = {}
    if scheme.startswith("postgresql"):
        kwargs["engine_kwargs"] = {"connect_args": {"connect_timeout": 5}, "pool_pre_ping": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        try:
            return RDBStorage(
                driver_url(url),
                heartbeat_interval=heartbeat_s,
                grace_period=grace_s or 3 * heartbeat_s,
                heartbeat_stale_trial_callback=RetryHeartbeatStaleTrialCallback(
                    max_retry=max_retry
                ),
                **kwargs,
            )
        except Exception as error:  # sqlalchemy / driver errors vary by backend
            reason = str(getattr(error, "orig", None) or error).strip().splitlines()
            text = reason[0] if reason else type(error).__name__
            raise StorageError(f"cannot open storage {redact(url)}: {text}") from None


def create_study(
    *,
    storage: Any,
    name: str,
    directions: Sequence[str],
    metric_names: Sequence[str],
    spec: dict[str, Any],
) -> Any:
    """Create the study, or resume it when it exists with the same search ``spec``."""
    import optuna

    try:
        study = optuna.create_study(
            storage=storage,
            study_name=name,
            sampler=optuna.samplers.RandomSampler(seed=int(spec.get("seed", 0))),
            directions=[str(d) for d in directions],  # type: ignore[misc]
            load_if_exists=True,
        )
    except ValueError as error:
        raise StorageError(f"study {name!r}: {error}") from None
    stored = study.user_attrs.get(SPEC_ATTR)
    if stored is None:
        study.set_user_attr(SPEC_ATTR, spec)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    elif _search_part(stored) == _search_part(spec):
        if stored != spec:  # same search, new budget or outputs: workers read the new one
            study.set_user_attr(SPEC_ATTR, spec)
    else:
        changed = sorted(
            k
            for k in set(stored) | set(spec)
            if k in _SEARCH_KEYS and stored.get(k) != spec.get(k)
        )
        raise StorageError(
            f"study {name!r} already holds a different search (differs in "
            f"{', '.join(changed)}); pick another --study or directory"
        )
    return study


# What must match to resume a study (the simulation budget and outputs may change).
_SEARCH_KEYS = (
    "model",
    "hardware",
    "gpus",
    "workload",
    "rate",
    "requests",
    "seed",
    "slos",
    "allow_quant",
    "speculative",
    "small",
    "objective",
    "max_model_len",
    "gpu_memory_utilization",
    "calibration",
    "engine",
    "tp",
    "pp",
    "ep",
    "spec_methods",
)


def _search_part(spec: dict[str, Any]) -> dict[str, Any]:
    return {k: spec.get(k) for k in _SEARCH_KEYS}


def load_study(*, storage: Any, name: str, wait_s: float = 0.0) -> Any:
    """Join an existing study, waiting up to ``wait_s`` seconds for it to be created."""
    import optuna

    deadline = time.monotonic() + wait_s
    while True:
        try:
            study = optuna.load_study(
                study_name=name, storage=storage, sampler=optuna.samplers.RandomSampler()
            )
        except KeyError:
            if time.monotonic() >= deadline:
                raise StorageError(f"no study named {name!r} in that storage") from None
            time.sleep(0.5)
            continue
        if SPEC_ATTR not in study.user_attrs:
            if time.monotonic() >= deadline:
                raise StorageError(f"study {name!r} was not created by tune plan")
            time.sleep(0.5)
            continue
        return study


def count_states(study: Any) -> dict[str, int]:
    from optuna.trial import TrialState

    counts = {state.name: 0 for state in TrialState}
    for trial in study.get_trials(deepcopy=False):
        counts[trial.state.name] += 1
    return counts


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover_stale_trials(study: Any) -> int:
    """Journal studies: fail trials a dead process on this host left RUNNING, queue them again."""
    from optuna.trial import TrialState

    host = socket.gethostname()
    recovered = 0
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = str(trial.user_attrs.get("worker", ""))
        owner_host, _, pid = owner.rpartition(":")
        if owner_host != host or not pid.isdigit() or _alive(int(pid)):
            continue
        study._storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL)
        study.enqueue_trial(
            trial.params, user_attrs={"retry_of": trial.number}, skip_if_exists=False
        )
        recovered += 1
    return recovered
