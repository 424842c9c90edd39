"""Binding msgcore declarations to the SQLite transport: queues with consumer groups."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from msgcore.adapters.base import BoundPublisher, DeadLetterRecord, TransportAdapter
from msgcore.naming import sqlite_queue
from msgcore.sqlite import SqliteBroker, SqliteRouter
from msgcore.sqlite.client.base import DeadLetter as StoredDeadLetter
from msgcore.urls import parse_sqlite_url

if TYPE_CHECKING:
    from faststream._internal.basic_types import SendableMessage

    from msgcore.router import PublisherHandle, SubscriberDeclaration
    from msgcore.sqlite.publisher.usecase import SqlitePublisher
    from msgcore.sqlite.subscriber.usecase import SqliteSubscriber


class _SqlitePublisher(BoundPublisher):
    def __init__(self, publisher: SqlitePublisher, request_timeout: float) -> None:
        self.publisher = publisher
        self.request_timeout = request_timeout

    async def publish(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        delay: float | None,
        not_before: datetime | None,
        priority: int | None,
    ) -> None:
        await self.publisher.publish(
            message,
            headers=headers,
            correlation_id=correlation_id,
            delay=delay,
            not_before=not_before,
            priority=priority,
        )

    async def request(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        timeout: float | None,
    ) -> Any:
        reply = await self.publisher.request(
            message,
            headers=headers,
            correlation_id=correlation_id,
            timeout=timeout or self.request_timeout,
        )
        return await reply.decode()


class SqliteAdapter(TransportAdapter):
    name = "sqlite"

    def broker(self) -> SqliteBroker:
        s = self.settings.sqlite
        # an option in the URL (?busy_timeout=2) wins over MSGCORE_SQLITE__*, as on a
        # bare SqliteBroker, which also checks it
        in_url = parse_sqlite_url(self.settings.url).options
        timings = {
            name: getattr(s, name)
            for name in ("busy_timeout", "min_poll_interval", "max_poll_interval")
            if name not in in_url
        }
        return SqliteBroker(
            self.settings.url,
            transactional_publish=s.transactional_publish,
            **timings,
            **self.log_kwargs,
        )

    def native_router(
        self, *, dependencies: Sequence[Any], middlewares: Sequence[Any]
    ) -> SqliteRouter:
        return SqliteRouter(dependencies=dependencies, middlewares=middlewares)

    def publisher(
        self, native_router: SqliteRouter, channel: str, handle: PublisherHandle
    ) -> SqlitePublisher:
        return native_router.publisher(
            sqlite_queue(channel),
            headers=handle.headers or None,
            title=handle.title,
            description=handle.description,
            schema=handle.schema,
            include_in_schema=handle.include_in_schema,
        )

    def bind_publisher(self, broker: Any, native_publisher: SqlitePublisher) -> BoundPublisher:
        return _SqlitePublisher(native_publisher, self.settings.request_timeout)

    def subscribe(
        self,
        native_router: SqliteRouter,
        decl: SubscriberDeclaration,
        channel: str,
    ) -> SqliteSubscriber:
        subscriber = native_router.subscriber(
            sqlite_queue(channel),
            group=decl.group,
            max_workers=decl.max_workers,
            prefetch=decl.prefetch,
            lease_seconds=decl.lease_seconds,
            retry=decl.retry,
            **decl.endpoint_options,
        )
        return subscriber

    async def dead_letters(
        self, broker: SqliteBroker, channel: str | None = None, *, limit: int = 100
    ) -> list[DeadLetterRecord]:
        queue = None if channel is None else sqlite_queue(channel)
        return [dead_letter_record(d) for d in await broker.dead_letters(queue, limit=limit)]


def dead_letter_record(d: StoredDeadLetter) -> DeadLetterRecord:
    """A SQLite dead-letter row as every transport reports it (queue = channel)."""
    return DeadLetterRecord(
        channel=d.queue,
        group=d.group,
        body=d.body,
        headers=d.headers,
        correlation_id=d.correlation_id,
        message_id=d.message_id,
        attempts=d.attempts,
        reason=d.reason,
        error=d.error,
        failed_at=d.failed_at,
    )
