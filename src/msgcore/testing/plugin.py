"""msgcore's pytest plugin: real servers for integration tests.

Loaded automatically where msgcore is installed (entry point ``pytest11``). Fixtures:

- ``msgcore_redis_url`` / ``msgcore_rabbit_url`` (session): ``MSGCORE_TEST_REDIS_URL`` /
  ``MSGCORE_TEST_RABBIT_URL`` if set; else a testcontainer when a Docker engine
  answers; else the test is skipped with the reason, or fails when ``CI=true``.
- ``msgcore_sqlite_url``: a fresh database file in the test's ``tmp_path``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest


def _docker_answers() -> bool:
    try:
        import docker  # type: ignore[import-untyped,unused-ignore]

        docker.from_env(timeout=2).ping()
    except Exception:
        return False
    return True


def _missing(what: str, env: str) -> None:
    reason = f"{what} is not available: set {env}, or run a Docker engine for testcontainers"
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"{reason} (CI=true: a missing server is a failure, not a skip)")
    pytest.skip(reason)


@pytest.fixture(scope="session")
def msgcore_redis_url() -> Iterator[str]:
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
def msgcore_rabbit_url() -> Iterator[str]:
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
def msgcore_sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'msgcore.db'}"
