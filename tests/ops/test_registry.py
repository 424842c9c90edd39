"""The subscriber registry in the job store: written by workers at start, read by tools."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgcore import Router, Store
from msgcore.constants import DEFAULT_GROUP
from msgcore.store import store_for
from msgcore.store.redis import RedisStore
from msgcore.store.sqlite import SqliteStore
from tests.contract.harness import delete_redis_keys

from .conftest import Ops


@pytest.fixture(params=["sqlite", "redis"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Store]:
    if request.param == "sqlite":
        opened: Store = SqliteStore(f"sqlite:///{tmp_path / 'store.db'}")
    else:
        url = str(request.getfixturevalue("redis_url"))
        opened = RedisStore(url, prefix=f"{unique}:")
    async with opened:
        yield opened
    if request.param == "redis":
        await delete_redis_keys(url, f"{unique}:*")


async def test_register_is_idempotent_and_sorted(store: Store) -> None:
    assert await store.registered_subscribers() == []
    await store.register_subscribers([("orders", "billing"), ("a.b@c", "g|1")])
    await store.register_subscribers([("orders", "billing"), ("orders", "audit")])
    await store.register_subscribers([])
    assert await store.registered_subscribers() == [
        ("a.b@c", "g|1"),
        ("orders", "audit"),
        ("orders", "billing"),
    ]


async def test_workers_register_their_subscribers_at_start(ops: Ops) -> None:
    orders, emails = ops.channel("orders"), ops.channel("emails")
    router = Router()

    @router.subscriber(orders, group="billing")
    async def bill(order: dict[str, int]) -> None: ...

    @router.subscriber(emails)
    async def send(email: dict[str, int]) -> None: ...

    async with ops.run(ops.broker(router)):
        pass
    async with store_for(ops.settings()) as store:
        assert await store.registered_subscribers() == sorted(
            [(orders, "billing"), (emails, DEFAULT_GROUP)]
        )
