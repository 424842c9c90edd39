"""``TestSqliteBroker``: run handlers in memory, with no database file."""

from __future__ import annotations

import time
from collections.abc import Generator, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, cast, overload
from unittest.mock import MagicMock

import anyio
from faststream._internal.testing.broker import EnterType, TestBroker, change_producer
from faststream.exceptions import SubscriberNotFound
from typing_extensions import override

from msgcore.ids import new_message_id
from msgcore.sqlite.broker.broker import SqliteBroker
from msgcore.sqlite.client.base import StoredMessage
from msgcore.sqlite.publisher.producer import SqliteProducer

if TYPE_CHECKING:
    from msgcore.sqlite.publisher.usecase import SqlitePublisher
    from msgcore.sqlite.response import SqlitePublishCommand
    from msgcore.sqlite.subscriber.usecase import SqliteSubscriber

__all__ = ("TestSqliteBroker",)


class TestSqliteBroker(TestBroker[SqliteBroker, EnterType], broker=SqliteBroker):
    """In-memory test double of ``SqliteBroker``, FastStream-style::

        async with TestSqliteBroker(broker) as br:
            await br.publish({"x": 1}, "orders")
            handle.mock.assert_called_once_with({"x": 1})

    Handlers run inline in the publishing task: retries, leases and delays are not
    simulated (test those against a real database file).
    """

    @overload
    def __init__(
        self: TestSqliteBroker[SqliteBroker],
        broker: SqliteBroker,
        /,
        *,
        with_real: bool = False,
        connect_only: bool | None = None,
    ) -> None: ...

    @overload
    def __init__(
        self: TestSqliteBroker[tuple[SqliteBroker, ...]],
        *brokers: SqliteBroker,
        with_real: bool = False,
        connect_only: bool | None = None,
    ) -> None: ...

    def __init__(
        self,
        *brokers: SqliteBroker,
        with_real: bool = False,
        connect_only: bool | None = None,
    ) -> None:
        super().__init__(*brokers, with_real=with_real, connect_only=connect_only)

    @override
    def create_publisher_fake_subscriber(
        self, broker: SqliteBroker, publisher: SqlitePublisher
    ) -> tuple[SqliteSubscriber, bool]:
        for sub in _subscribers(self.brokers):
            if sub.queue == publisher.queue:
                return sub, True
        return broker.subscriber(publisher.queue, persistent=False), False

    @contextmanager
    def _patch_producer(self, broker: SqliteBroker) -> Generator[None, None, None]:
        with change_producer(broker.config.broker_config, FakeProducer(broker, self.brokers)):
            yield

    @override
    async def _fake_connect(self, broker: SqliteBroker, *args: Any, **kwargs: Any) -> Any:
        return MagicMock()


def _subscribers(brokers: tuple[SqliteBroker, ...]) -> Iterator[SqliteSubscriber]:
    for b in brokers:
        for s in b.subscribers:
            yield cast("SqliteSubscriber", s)


class FakeProducer(SqliteProducer):
    """Delivers to matching subscribers in process: once per consumer group."""

    def __init__(self, broker: SqliteBroker, brokers: tuple[SqliteBroker, ...]) -> None:
        super().__init__(broker._parser, broker._decoder)
        self.broker = broker
        self.brokers = brokers
        self.serializer = broker.config.fd_config._serializer
        if broker.config.broker_codec is not None:
            self.codec = broker.config.broker_codec

    async def _build(self, cmd: SqlitePublishCommand, body: Any, reply_to: str) -> StoredMessage:
        payload, content_type = await self.codec.encode(body, self.serializer)
        return StoredMessage(
            id=0,
            queue=cmd.destination,
            group="",
            body=payload,
            headers=dict(cmd.headers or {}),
            content_type=content_type,
            correlation_id=cmd.correlation_id,
            message_id=cmd.message_id or new_message_id(),
            reply_to=reply_to,
            priority=cmd.priority,
            attempts=1,
            created_at=time.time(),
        )

    def _targets(self, queue: str) -> list[SqliteSubscriber]:
        seen: set[str] = set()
        found = []
        for sub in _subscribers(self.brokers):
            if sub.queue == queue and sub.group not in seen:
                seen.add(sub.group)
                found.append(sub)
        return found

    @override
    async def publish(self, cmd: SqlitePublishCommand) -> None:
        for sub in self._targets(cmd.destination):
            msg = await self._build(cmd, cmd.body, cmd.reply_to)
            msg.group = sub.group
            await sub.process_message(msg)

    @override
    async def publish_batch(self, cmd: SqlitePublishCommand) -> None:
        for body in cmd.batch_bodies:
            for sub in self._targets(cmd.destination):
                msg = await self._build(cmd, body, cmd.reply_to)
                msg.group = sub.group
                await sub.process_message(msg)

    @override
    async def request(self, cmd: SqlitePublishCommand) -> StoredMessage:
        for sub in self._targets(cmd.destination):
            msg = await self._build(cmd, cmd.body, "")
            msg.group = sub.group
            with anyio.fail_after(cmd.timeout or 30.0):
                result = await sub.process_message(msg)
            payload, content_type = await self.codec.encode(result.body, self.serializer)
            return StoredMessage(
                id=0,
                queue="",
                group="",
                body=payload,
                headers=dict(result.headers or {}),
                content_type=content_type,
                correlation_id=result.correlation_id or msg.correlation_id,
                message_id=new_message_id(),
                reply_to="",
                priority=0,
                attempts=1,
                created_at=time.time(),
            )
        raise SubscriberNotFound
