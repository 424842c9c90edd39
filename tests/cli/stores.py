"""The store a CLI test fills, on a SQLite file or Redis, and the environment that points
``msgcore`` at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest

from msgcore.store import Store
from msgcore.store.redis import RedisStore
from msgcore.store.sqlite import SqliteStore
from tests.contract.harness import delete_redis_keys


@asynccontextmanager
async def cli_store(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[tuple[Store, dict[str, str]]]:
    """``request.param`` ``"sqlite"`` or ``"redis"``: the open store and its env; the
    Redis keys are deleted afterwards."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        store: Store = SqliteStore(url)
        env = {"MSGCORE_URL": url}
    else:
        url = str(request.getfixturevalue("redis_url"))
        store = RedisStore(url, prefix=f"{unique}:")
        env = {"MSGCORE_URL": url, "MSGCORE_REDIS__STREAM_PREFIX": f"{unique}:"}
    try:
        async with store:
            yield store, env
    finally:
        if request.param == "redis":
            await delete_redis_keys(url, f"{unique}:*")
