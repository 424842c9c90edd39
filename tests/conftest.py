"""Shared fixtures: unique SQLite files, and real Redis/RabbitMQ servers.

Servers: ``MSGCORE_TEST_REDIS_URL`` / ``MSGCORE_TEST_RABBIT_URL`` if set; else the
server on its default port of 127.0.0.1 if one answers there (as the README says); else
msgcore's pytest plugin (msgcore.testing.plugin): a testcontainer, then skip -- or fail
under CI=true.
"""

from __future__ import annotations

import os
import socket
import uuid
from pathlib import Path

import pytest

from msgcore.urls import redact_url

LOCAL_REDIS_URL = "redis://127.0.0.1:6379/0"
LOCAL_RABBIT_URL = "amqp://guest:guest@127.0.0.1:5672/"


def _local_port_answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
    except OSError:
        return False


@pytest.fixture(scope="session")
def redis_url(request: pytest.FixtureRequest) -> str:
    if "MSGCORE_TEST_REDIS_URL" not in os.environ and _local_port_answers(6379):
        return LOCAL_REDIS_URL
    return str(request.getfixturevalue("msgcore_redis_url"))


@pytest.fixture(scope="session")
def rabbit_url(request: pytest.FixtureRequest) -> str:
    if "MSGCORE_TEST_RABBIT_URL" not in os.environ and _local_port_answers(5672):
        return LOCAL_RABBIT_URL
    return str(request.getfixturevalue("msgcore_rabbit_url"))


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
    fallback = "(127.0.0.1 if it answers, else testcontainers/skip)"
    return [
        f"redis: {redact_url(os.environ.get('MSGCORE_TEST_REDIS_URL', fallback))}",
        f"rabbit: {redact_url(os.environ.get('MSGCORE_TEST_RABBIT_URL', fallback))}",
    ]
