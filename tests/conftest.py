"""Shared fixtures: unique SQLite files, and real Redis/RabbitMQ servers.

Servers are resolved from MSGCORE_TEST_REDIS_URL / MSGCORE_TEST_RABBIT_URL first, then
a testcontainer when a Docker engine answers, else the test is skipped with the reason
-- except under CI=true, where a missing server fails the test.
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from msgcore.urls import redact_url


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def _missing(what: str, env: str) -> None:
    reason = (
        f"{what} is not available: set {env}, or run a Docker engine for testcontainers"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def redis_url() -> Iterator[str]:
    if url := os.environ.get("MSGCORE_TEST_REDIS_URL"):
        yield url
        return
    if _docker_answers():
        from testcontainers.redis import RedisContainer

        with RedisContainer("redis:7") as c:
            yield f"redis://{c.get_container_host_ip()}:{c.get_exposed_port(6379)}/0"
        return
    _missing("Redis", "MSGCORE_TEST_REDIS_URL")


@pytest.fixture(scope="session")
def rabbit_url() -> Iterator[str]:
    if url := os.environ.get("MSGCORE_TEST_RABBIT_URL"):
        yield url
        return
    if _docker_answers():
        from testcontainers.rabbitmq import RabbitMqContainer

        with RabbitMqContainer("rabbitmq:3-management") as c:
            host, port = c.get_container_host_ip(), c.get_exposed_port(5672)
            yield f"amqp://guest:guest@{host}:{port}/"
        return
    _missing("RabbitMQ", "MSGCORE_TEST_RABBIT_URL")


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
