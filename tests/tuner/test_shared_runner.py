"""``SharedRunner._just_failed`` on the times Optuna's storages give back."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from types import SimpleNamespace

from optuna.trial import TrialState

from tuner.search.trials import SharedRunner


def failed(at: datetime) -> SimpleNamespace:
    return SimpleNamespace(state=TrialState.FAIL, datetime_complete=at)


def test_a_trial_that_failed_moments_ago_is_seen_with_naive_or_aware_times():
    """The RDB and journal storages keep naive local times (a heartbeat's failure among them);
    the check must not mix them with an aware "now"."""
    assert SharedRunner._just_failed([failed(datetime.now() - timedelta(seconds=0.5))])
    assert not SharedRunner._just_failed([failed(datetime.now() - timedelta(minutes=5))])
    aware = datetime.now(timezone.utc) - timedelta(seconds=0.5)
    assert SharedRunner._just_failed([failed(aware)])
    assert not SharedRunner._just_failed([SimpleNamespace(state=TrialState.COMPLETE,
                                                          datetime_complete=datetime.now())])  # fmt: skip
