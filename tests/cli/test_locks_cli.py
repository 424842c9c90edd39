"""``msgcore locks`` end to end: a subprocess against a SQLite file and Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgcore.store import Store
from msgcore.store.redis import RedisStore
from msgcore.store.sqlite import SqliteStore
from tests.cli.test_cache_cli import msgcore
from tests.contract.harness import delete_redis_keys


@pytest.fixture(params=["sqlite", "redis"])
async def held(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[dict[str, str]]:
    """A store where two order locks and a report lock are held; the env pointing at it."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'cli.db'}"
        store: Store = SqliteStore(url)
        env = {"MSGCORE_URL": url}
    else:
        url = str(request.getfixturevalue("redis_url"))
        store = RedisStore(url, prefix=f"{unique}:")
        env = {"MSGCORE_URL": url, "MSGCORE_REDIS__STREAM_PREFIX": f"{unique}:"}
    async with store:
        now = time.time()
        for key, holder in (
            ("orders:ada", "job j1 on host:11"),
            ("orders:bob", "job j2 on host:12"),
        ):
            assert await store.lock_acquire(key, key, holder=holder, lease=60, now=now) is None
        assert (
            await store.lock_acquire("report", "t", holder="client on host:13", lease=60, now=now)
            is None
        )
        assert await store.lock_acquire("gone", "t", holder="x", lease=0.01, now=now) is None
        await asyncio.sleep(0.05)
        yield env
    if request.param == "redis":
        await delete_redis_keys(url, f"{unique}:*")


def test_locks_table_and_json(held: dict[str, str]) -> None:
    shown = msgcore("locks", env=held)
    assert shown.returncode == 0, shown.stderr
    for text in ("orders:ada", "job j1 on host:11", "orders:bob", "report", "client on host:13"):
        assert text in shown.stdout
    assert "gone" not in shown.stdout  # its lease ran out

    orders = msgcore("locks", "orders:", "--json", env=held)
    assert orders.returncode == 0, orders.stderr
    rows = json.loads(orders.stdout)
    assert [(r["key"], r["holder"]) for r in rows] == [
        ("orders:ada", "job j1 on host:11"),
        ("orders:bob", "job j2 on host:12"),
    ]
    assert all(55 < r["expires_in"] <= 60 for r in rows)

    none = msgcore("locks", "refunds:", env=held)
    assert none.returncode == 0 and "No locks are held under 'refunds:'" in none.stdout


def test_locks_unreachable_store_is_a_clear_redacted_error() -> None:
    failed = msgcore("locks", "--url", "redis://:s3cret@127.0.0.1:1/0")
    assert failed.returncode != 0
    output = failed.stdout + failed.stderr
    assert "Cannot reach the Redis job store" in output
    assert "s3cret" not in output
