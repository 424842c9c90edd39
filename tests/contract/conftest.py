"""The ``transport`` fixture: one contract test, six runs.

Every test in this package that takes ``transport`` runs on SQLite, Redis and RabbitMQ,
each both in memory (``msgcore.testing.TestClient``) and against the real transport (a
SQLite file, the Redis server, the RabbitMQ server). A test marked
``@pytest.mark.real_only`` runs on the three real transports only: the behaviour it
checks (retries, dead letters, delays, competing brokers, timeouts) does not exist in
FastStream's in-memory test brokers. Nothing is skipped by parameter: a missing server
skips with its reason outside CI and fails under ``CI=true`` (msgcore's pytest plugin).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from tests.contract.harness import delete_redis_keys

from .harness import Transport

TRANSPORTS = ("sqlite", "redis", "rabbit")
KINDS = ("memory", "real")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers",
        "real_only: runs on the real SQLite file, Redis and RabbitMQ only (no in-memory run)",
    )
    config.addinivalue_line(
        "markers",
        "known_bug(*runs, reason, strict=True): xfail the listed runs (e.g. 'rabbit-real') "
        "because of a transport bug; strict=False only for a bug that shows intermittently",
    )


def _param(name: str, kind: str, bugs: list[pytest.Mark]) -> Any:
    run = f"{name}-{kind}"
    marks = []
    for bug in bugs:
        if run in bug.args:
            marks.append(
                pytest.mark.xfail(
                    reason=f"BUG: {bug.kwargs['reason']}", strict=bug.kwargs.get("strict", True)
                )
            )
    return pytest.param((name, kind), id=run, marks=marks)


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "transport" not in metafunc.fixturenames:
        return
    kinds = ("real",) if metafunc.definition.get_closest_marker("real_only") else KINDS
    bugs = list(metafunc.definition.iter_markers("known_bug"))
    metafunc.parametrize(
        "transport",
        [_param(name, kind, bugs) for name in TRANSPORTS for kind in kinds],
        indirect=True,
    )


def _server_url(request: pytest.FixtureRequest, name: str, tmp_path: Path) -> str:
    if name == "sqlite":
        return f"sqlite:///{tmp_path / 'contract.db'}"
    # Only the real runs need a server; resolving the fixture lazily keeps the
    # in-memory runs independent of it.
    return str(request.getfixturevalue("redis_url" if name == "redis" else "rabbit_url"))


@pytest.fixture
async def transport(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Transport]:
    name, kind = request.param
    if kind == "real":
        url = _server_url(request, name, tmp_path)
    else:
        # In memory nothing connects; the URL only picks the transport.
        url = {
            "sqlite": f"sqlite:///{tmp_path / 'memory.db'}",
            "redis": "redis://127.0.0.1:6379/0",
            "rabbit": "amqp://guest:guest@127.0.0.1:5672/",
        }[name]
    t = Transport(name, kind, url, unique)
    try:
        yield t
    finally:
        await t.cleanup()


# "beside": MSGCORE_STORE_URL unset, the store lives beside the transport (on the SQLite
# transport it shares the transport's connection; RabbitMQ gets a SQLite file here).
STORES = ("sqlite-store", "redis-store", "beside")


@pytest.fixture(params=STORES)
async def store_url(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str, transport: Transport
) -> AsyncIterator[str | None]:
    if request.param == "sqlite-store":
        yield f"sqlite:///{tmp_path / 'jobs.db'}"
        return
    if request.param == "beside":
        # RabbitMQ keeps no state: its default store is a SQLite file in the working
        # directory, which a test must not write to
        yield f"sqlite:///{tmp_path / 'rabbit-store.db'}" if transport.name == "rabbit" else None
        if transport.name != "redis":
            return
        # beside Redis the store is on the Redis server even for the in-memory runs
        # (there is no in-memory Redis store): its keys go too
        url = transport.url
    else:
        url = str(request.getfixturevalue("redis_url"))
        yield url
    await delete_redis_keys(url, f"{unique}:*")
