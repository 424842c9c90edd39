"""Shared fixtures: unique SQLite files, and real Redis/RabbitMQ servers.

Servers come from msgcore's pytest plugin (msgcore.testing.plugin): env URL, then a
testcontainer, then skip -- or fail under CI=true.
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from msgcore.urls import redact_url


@pytest.fixture(scope="session")
def redis_url(msgcore_redis_url: str) -> str:
    return msgcore_redis_url


@pytest.fixture(scope="session")
def rabbit_url(msgcore_rabbit_url: str) -> str:
    return msgcore_rabbit_url


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    """A database file of this test's own."""
    return tmp_path / "msgcore.db"


@pytest.fixture
def db_url(db_path: Path) -> str:
    # sqlite:/// + an absolute path gives the four-slash absolute form
    return f"sqlite:///{db_path}"


@pytest.fixture
def unique() -> str:
    """A name no other test (or earlier run) uses: for queues, streams and keys."""
    return f"t{uuid.uuid4().hex[:12]}"


def pytest_report_header() -> list[str]:
    return [
        f"redis: {redact_url(os.environ.get('MSGCORE_TEST_REDIS_URL', '(testcontainers/skip)'))}",
        f"rabbit: {redact_url(os.environ.get('MSGCORE_TEST_RABBIT_URL', '(testcontainers/skip)'))}",
    ]
