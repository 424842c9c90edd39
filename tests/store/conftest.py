"""The ``store`` fixture: every store test runs on a SQLite file and on Redis.

``open_store()`` opens another store object on the same data (a second connection, as
another process would have); the fixture closes them all. On Redis each test has its own
key prefix and deletes its keys afterwards.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest

from msgcore.store import Store
from msgcore.store.redis import RedisStore
from msgcore.store.sqlite import SqliteStore
from tests.contract.harness import delete_redis_keys

OpenStore = Callable[[], Awaitable[Store]]


@pytest.fixture(params=["sqlite", "redis"])
async def open_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[OpenStore]:
    opened: list[Store] = []
    prefix = f"{unique}:"
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        # Resolved here only: the SQLite runs must not depend on a Redis server.
        url = str(request.getfixturevalue("redis_url"))

    async def open_one() -> Store:
        store: Store = (
            SqliteStore(url) if request.param == "sqlite" else RedisStore(url, prefix=prefix)
        )
        await store.open()
        opened.append(store)
        return store

    yield open_one
    for store in opened:
        await store.close()
    if request.param == "redis":
        await delete_redis_keys(url, f"{prefix}*")


@pytest.fixture
async def store(open_store: OpenStore) -> Store:
    return await open_store()
