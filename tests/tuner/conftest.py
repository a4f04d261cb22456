"""Fixtures for the tuner tests: the two external services (PostgreSQL, headless chromium),
skipped when absent unless CI requires them (ROOFTUNE_REQUIRE_POSTGRES / _BROWSER=1)."""

from __future__ import annotations

import os
import shutil

import pytest
from tuner_helpers import CHROMIUM, EXAMPLE_PLAN, PG_URL


def _required(env: str) -> bool:
    return os.environ.get(env, "") == "1"


@pytest.fixture
def pg_url():
    """The PostgreSQL URL; skips when the server is down unless ROOFTUNE_REQUIRE_POSTGRES=1."""
    try:
        import psycopg2

        psycopg2.connect(PG_URL, connect_timeout=3).close()
    except Exception as error:  # any driver or network failure means "not reachable"
        message = f"PostgreSQL at {PG_URL} is not reachable ({str(error).strip()})"
        if _required("ROOFTUNE_REQUIRE_POSTGRES"):
            pytest.fail(message + " and ROOFTUNE_REQUIRE_POSTGRES=1")
        pytest.skip(message)
    return PG_URL


@pytest.fixture
def chromium():
    """Path of headless chromium; skips when missing unless ROOFTUNE_REQUIRE_BROWSER=1."""
    path = CHROMIUM if os.path.exists(CHROMIUM) else shutil.which("chromium")
    if not path:
        message = f"chromium not found at {CHROMIUM} (apt-get install -y chromium)"
        if _required("ROOFTUNE_REQUIRE_BROWSER"):
            pytest.fail(message + " and ROOFTUNE_REQUIRE_BROWSER=1")
        pytest.skip(message)
    return path


@pytest.fixture
def plan_file(tmp_path):
    """A copy of the committed 70B example plan, free to be written."""
    path = tmp_path / "plan.json"
    shutil.copy(EXAMPLE_PLAN, path)
    return path
