"""``msgcore locks`` end to end: a subprocess against a SQLite file and Redis."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from tests.cli.stores import cli_store
from tests.cli.test_cache_cli import msgcore


@pytest.fixture(params=["sqlite", "redis"])
async def held(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[dict[str, str]]:
    """A store where two order locks and a report lock are held; the env pointing at it."""
    async with cli_store(request, tmp_path, unique) as (store, env):
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
