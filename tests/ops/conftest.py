"""The ``ops`` fixture: each ``msgcore.ops`` test runs on a SQLite file, Redis and RabbitMQ.

Names are the test's own (stream prefix and exchange ``unique``, channels starting with
it). Afterwards every Redis key holding ``unique`` is deleted, and on RabbitMQ every
queue msgcore can have declared for the test's channels and groups: group, dead-letter,
holding, and the wait and delay queues of every wait time (quorum queues never expire).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import pytest

from msgcore import Router, Settings, naming
from msgcore.adapters.rabbit.topology import MAX_WAIT_MS
from tests.contract.harness import Transport

_ALL_WAITS = [1 << n for n in range(MAX_WAIT_MS.bit_length())]


@dataclass
class Ops:
    """One real transport and the store beside it, named for this test."""

    transport: Transport
    store_url: str | None

    @property
    def name(self) -> str:
        return self.transport.name

    def channel(self, name: str) -> str:
        return self.transport.uses(f"{self.transport.unique}.{name}")

    def settings(self, **overrides: Any) -> Settings:
        return self.transport.settings(store_url=self.store_url, **overrides)

    def broker(self, *routers: Router) -> Any:
        return self.transport.broker(*routers, store_url=self.store_url)

    def run(self, broker: Any) -> Any:
        return self.transport.run(broker)


async def _delete_rabbit_names(transport: Transport) -> None:
    exchange = transport.unique
    queues: set[str] = set()
    for channel in transport._channels:
        queues.add(naming.rabbit_unrouted_queue(channel, exchange))
        queues.update(naming.rabbit_delay_queue(channel, ms, exchange) for ms in _ALL_WAITS)
    for channel, group in transport._declared:
        queue = naming.rabbit_group_queue(channel, group)
        queues.update({queue, naming.rabbit_dead_letter_queue(channel, group)})
        queues.update(naming.rabbit_wait_queue(queue, ms) for ms in _ALL_WAITS)
    connection = await aio_pika.connect(transport.url)
    try:
        amqp = await connection.channel()
        for name in sorted(queues):  # delete-ok for a queue that does not exist
            await amqp.queue_delete(name)
        for name in (exchange, naming.rabbit_unrouted_exchange(exchange)):
            await amqp.exchange_delete(name)
    finally:
        await connection.close()


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def ops(request: pytest.FixtureRequest, tmp_path: Path, unique: str) -> AsyncIterator[Ops]:
    name = request.param
    store_url = None
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'ops.db'}"
    elif name == "redis":
        url = str(request.getfixturevalue("redis_url"))
    else:
        url = str(request.getfixturevalue("rabbit_url"))
        # RabbitMQ keeps no state; its default store is a file in the working directory
        store_url = f"sqlite:///{tmp_path / 'store.db'}"
    transport = Transport(name, "real", url, unique)
    try:
        yield Ops(transport, store_url)
    finally:
        if name == "rabbit":
            await _delete_rabbit_names(transport)
        else:
            await transport.cleanup()
