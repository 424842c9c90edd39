"""Regression test: a commit by another connection right after a consumer starts.

A subscriber that finds its queue empty waits on the notifier, whose poll task takes a
``PRAGMA data_version`` baseline on its first read. A row committed by another
connection (another broker or process) after the empty claim but before that first
read does not change the version any more, so nothing wakes the subscriber until some
later commit. The test widens that window deterministically by delaying the
notifier's first read (made on the connection's thread, as when the event-loop thread
cannot read).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from msgcore import Router, Settings, create_broker
from msgcore.sqlite.client.connection import SqliteClient


async def test_row_committed_before_the_first_poll_is_delivered(
    db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    original = SqliteClient.data_version
    first_read: set[int] = set()

    async def slow_first_read(self: SqliteClient) -> int:
        if id(self) not in first_read:
            first_read.add(id(self))
            await asyncio.sleep(0.3)
        return await original(self)

    monkeypatch.setattr(SqliteClient, "data_version", slow_first_read)
    monkeypatch.setattr(SqliteClient, "data_version_now", lambda self: None)

    settings = Settings(url=db_url, log_messages=False)
    received: list[Any] = []
    consumer = Router(prefix=f"{unique}.")

    @consumer.subscriber("jobs", group="workers")
    async def work(n: int) -> None:
        received.append(n)

    producer = Router(prefix=f"{unique}.")
    jobs = producer.publisher("jobs")
    consumer_broker = create_broker(consumer, settings=settings)
    producer_broker = create_broker(producer, settings=settings)
    async with producer_broker, consumer_broker:
        await consumer_broker.start()
        await asyncio.sleep(0.05)  # the empty claim is done; the first poll is pending
        await jobs.publish(1)
        for _ in range(60):
            if received:
                break
            await asyncio.sleep(0.05)

    assert received == [1], "the message committed by another connection was not delivered"
