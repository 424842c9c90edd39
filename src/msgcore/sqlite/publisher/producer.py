"""The producer: encodes publish commands into rows, and runs request/reply."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from contextvars import ContextVar
from typing import TYPE_CHECKING, Any

from faststream._internal.endpoint.utils import ParserComposition
from faststream._internal.parser import DefaultCodec
from faststream._internal.producer import ProducerProto
from faststream.exceptions import IncorrectState
from typing_extensions import override

from msgcore.constants import REPLY_QUEUE_PREFIX, REPLY_TTL_SECONDS
from msgcore.exceptions import RequestTimeoutError
from msgcore.ids import new_message_id
from msgcore.sqlite.client.base import OutgoingMessage, StoredMessage
from msgcore.sqlite.parser import SqliteParser
from msgcore.sqlite.response import SqlitePublishCommand
from msgcore.sqlite.subscriber.settlement import CURRENT_DELIVERY

CAPTURED: ContextVar[list[OutgoingMessage] | None] = ContextVar(
    "msgcore_sqlite_captured_publishes", default=None
)
"""While set, publishes are encoded into this list instead of being written: the
caller commits them in a transaction of its own (``SqliteStore.create_jobs_publishing``)."""

if TYPE_CHECKING:
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import CustomCallable

    from msgcore.sqlite.client.connection import SqliteClient
    from msgcore.sqlite.client.notifier import Notifier

logger = logging.getLogger("msgcore.sqlite")


class SqliteProducer(ProducerProto[SqlitePublishCommand]):
    def __init__(
        self,
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        *,
        transactional: bool = True,
    ) -> None:
        default = SqliteParser()
        self._parser = ParserComposition(parser, default.parse_message)
        self._decoder = ParserComposition(decoder, default.decode_message)
        self.codec: CodecProto = DefaultCodec()
        self.serializer: SerializerProto | None = None
        self.transactional = transactional
        self._transport: SqliteClient | None = None
        self._notifier: Notifier | None = None
        self._reply_queue = f"{REPLY_QUEUE_PREFIX}{uuid.uuid4().hex}"
        self._waiting: dict[str, asyncio.Future[StoredMessage]] = {}
        self._listener: asyncio.Task[None] | None = None
        self._reply_event: asyncio.Event | None = None

    def connect(
        self,
        transport: SqliteClient,
        notifier: Notifier,
        serializer: SerializerProto | None,
        codec: CodecProto | None = None,
    ) -> None:
        self._transport = transport
        self._notifier = notifier
        self._reply_event = notifier.watch(self._reply_queue)
        self.serializer = serializer
        self.codec = codec or DefaultCodec()

    async def disconnect(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
            self._listener = None
            if self._transport is not None and self._transport.connected:
                with contextlib.suppress(Exception):
                    await self._transport.delete_queue(self._reply_queue)
        for fut in self._waiting.values():
            fut.cancel()
        self._waiting.clear()
        if self._notifier is not None and self._reply_event is not None:
            self._notifier.unwatch(self._reply_queue, self._reply_event)
        self._reply_event = None
        self._transport = None
        self._notifier = None

    @property
    def transport(self) -> SqliteClient:
        if self._transport is None:
            raise IncorrectState(
                "The SQLite broker is not connected: use `async with broker:`, "
                "`await broker.connect()` or `await broker.start()` before publishing."
            )
        return self._transport

    async def _encode(
        self,
        cmd: SqlitePublishCommand,
        body: Any,
        now: float,
        *,
        reply_to: str,
        correlation_id: str | None,
        expires_at: float | None = None,
    ) -> OutgoingMessage:
        if not cmd.destination:
            raise ValueError("publish() needs a queue: broker.publish(message, 'queue-name')")
        payload, content_type = await self.codec.encode(body, self.serializer)
        return OutgoingMessage(
            queue=cmd.destination,
            body=payload,
            headers=dict(cmd.headers) if cmd.headers else None,
            content_type=content_type,
            correlation_id=correlation_id,
            message_id=cmd.message_id or new_message_id(),
            reply_to=reply_to,
            priority=cmd.priority,
            visible_at=cmd.visible_at(now),
            created_at=now,
            expires_at=expires_at,
        )

    @override
    async def publish(self, cmd: SqlitePublishCommand) -> None:
        transport = self.transport
        is_reply = cmd.destination.startswith(REPLY_QUEUE_PREFIX)
        now = time.time()
        row = await self._encode(
            cmd,
            cmd.body,
            now,
            reply_to=cmd.reply_to,
            correlation_id=cmd.correlation_id,
            expires_at=now + REPLY_TTL_SECONDS if is_reply else None,
        )
        captured = CAPTURED.get()
        if captured is not None:
            captured.append(row)
            return
        delivery = CURRENT_DELIVERY.get()
        in_transaction = (
            self.transactional
            and delivery is not None
            and delivery.outbox is not None
            and not delivery.settled
            and delivery.settlement is not None
            and delivery.settlement.transport is transport
        )
        if row.queue == self._reply_queue and row.correlation_id in self._waiting:
            # A reply to a request made by this very producer: hand it over in memory,
            # once the handler's ack has committed, instead of a round trip via the file.
            if in_transaction:
                assert delivery is not None
                if delivery.after_ack is None:
                    delivery.after_ack = []
                delivery.after_ack.append(lambda: self._deliver_local(row))
            else:
                self._deliver_local(row)
            return
        if in_transaction:
            assert delivery is not None
            assert delivery.outbox is not None
            # Published while handling a row: commit with that row's ack, so that a
            # crash or a lost lease never leaves the onward message without the ack.
            delivery.outbox.append(row)
            return
        await transport.publish([row])

    def _deliver_local(self, row: OutgoingMessage) -> None:
        fut = self._waiting.pop(row.correlation_id or "", None)
        if fut is None or fut.done():
            return
        fut.set_result(
            StoredMessage(
                id=0,
                queue=row.queue,
                group="",
                body=row.body,
                headers=row.headers or {},
                content_type=row.content_type,
                correlation_id=row.correlation_id,
                message_id=row.message_id,
                reply_to="",
                priority=row.priority,
                attempts=1,
                created_at=row.created_at,
            )
        )

    @override
    async def publish_batch(self, cmd: SqlitePublishCommand) -> None:
        now = time.time()
        rows = [
            await self._encode(
                cmd, body, now, reply_to=cmd.reply_to, correlation_id=cmd.correlation_id
            )
            for body in cmd.batch_bodies
        ]
        await self.transport.publish(rows)

    @override
    async def request(self, cmd: SqlitePublishCommand) -> StoredMessage:
        transport = self.transport
        correlation_id = cmd.correlation_id or new_message_id()
        fut: asyncio.Future[StoredMessage] = asyncio.get_running_loop().create_future()
        self._waiting[correlation_id] = fut
        if self._listener is None or self._listener.done():
            self._listener = asyncio.create_task(
                self._listen_replies(), name="msgcore-sqlite-replies"
            )
        timeout = cmd.timeout if cmd.timeout is not None else 30.0
        try:
            row = await self._encode(
                cmd,
                cmd.body,
                time.time(),
                reply_to=self._reply_queue,
                correlation_id=correlation_id,
            )
            await transport.publish([row])
            try:
                async with asyncio.timeout(timeout):
                    return await fut
            except TimeoutError:
                raise RequestTimeoutError(
                    f"No reply from queue {cmd.destination!r} within {timeout:g}s "
                    f"(correlation_id={correlation_id}). Is a subscriber running on it, and "
                    "does its handler return a value? Raise `timeout=` for slow handlers."
                ) from None
        finally:
            self._waiting.pop(correlation_id, None)

    async def _listen_replies(self) -> None:
        notifier = self._notifier
        event = self._reply_event
        assert notifier is not None
        assert event is not None
        while self._waiting:
            # The event is set by the commit that stores a reply here, or by the
            # notifier when another process commits; it outlives this task, so a reply
            # committed between two listeners is not missed.
            await notifier.wait(event, None)
            event.clear()
            try:
                rows = await self.transport.take_replies(self._reply_queue)
            except Exception as exc:  # keep listening: a locked database passes
                logger.warning("reading replies failed, retrying: %s", exc)
                event.set()
                await asyncio.sleep(notifier.max_interval)
                continue
            for row in rows:
                fut = self._waiting.pop(row.correlation_id or "", None)
                if fut is not None and not fut.done():
                    fut.set_result(row)
