"""Request/reply over one private reply queue, with any number of requests in flight.

FastStream's ``RabbitBroker.request`` uses direct reply-to behind a lock: one request
at a time per broker (faststream issue #1318), and no timeout unless one is passed.
msgcore's ``request()`` publishes through the channel's own publisher (so middlewares
and telemetry run) with ``reply_to`` set to an exclusive queue of this broker, and
matches replies to requests by correlation id.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from typing import TYPE_CHECKING, Any, cast

from faststream._internal.endpoint.utils import process_msg
from faststream.message import SourceType, gen_cor_id

from msgcore.adapters.rabbit.settlement import UnroutableError
from msgcore.constants import REPLY_QUEUE_PREFIX
from msgcore.exceptions import ConfigurationError, DeliveryError, RequestTimeoutError

if TYPE_CHECKING:
    from aio_pika import IncomingMessage
    from aio_pika.abc import AbstractChannel, AbstractIncomingMessage
    from faststream._internal.basic_types import SendableMessage
    from faststream.rabbit import RabbitBroker

    from msgcore.adapters.rabbit.publisher import MsgcoreRabbitPublisher

__all__ = ["Requester"]


class Requester:
    """Sends requests of one broker and hands each reply to the request it answers."""

    def __init__(self, broker: RabbitBroker) -> None:
        self._broker = broker
        self.reply_queue = f"{REPLY_QUEUE_PREFIX}{uuid.uuid4().hex}"
        self._waiting: dict[str, list[asyncio.Future[AbstractIncomingMessage]]] = {}
        self._channel: AbstractChannel | None = None
        self._lock = asyncio.Lock()

    @property
    def in_flight(self) -> int:
        return sum(len(w) for w in self._waiting.values())

    async def _ensure_consuming(self) -> None:
        if self._channel is not None and not self._channel.is_closed:
            return
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return
            connection = self._broker._connection
            if connection is None:
                raise ConfigurationError(
                    "The broker is not connected: request inside `async with broker:`."
                )
            channel = await connection.channel()
            # exclusive: deleted with this connection; a robust connection declares it
            # again (same name) and resumes consuming after a reconnect
            queue = await channel.declare_queue(
                self.reply_queue, exclusive=True, auto_delete=True, durable=False
            )
            await queue.consume(self._on_reply, no_ack=True)
            self._channel = channel

    async def _on_reply(self, raw: AbstractIncomingMessage) -> None:
        waiting = self._waiting.get(raw.correlation_id or "")
        while waiting:
            future = waiting.pop(0)
            if not future.done():
                future.set_result(raw)
                return
        # a late reply (its request timed out) or a second group's: nobody waits for it

    async def request(
        self,
        publisher: MsgcoreRabbitPublisher,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        timeout: float,
    ) -> Any:
        correlation_id = correlation_id or gen_cor_id()
        future: asyncio.Future[AbstractIncomingMessage] = asyncio.get_running_loop().create_future()
        waiting = self._waiting.setdefault(correlation_id, [])
        waiting.append(future)
        unroutable: UnroutableError | None = None
        try:
            async with asyncio.timeout(timeout):
                await self._ensure_consuming()
                try:
                    await publisher.publish(
                        cast("Any", message),
                        headers=headers,
                        correlation_id=correlation_id,
                        reply_to=self.reply_queue,
                    )
                except UnroutableError as exc:
                    # Nobody can answer; as on every transport, the request times out.
                    unroutable = exc
                raw = await future
        except TimeoutError:
            why = (
                f" {unroutable}"
                if unroutable is not None
                else " Is a subscriber running, and does it return a value without no_reply=True?"
            )
            raise RequestTimeoutError(
                f"No reply from channel {publisher.msgcore_channel!r} within {timeout}s "
                f"(correlation_id={correlation_id}).{why}"
            ) from None
        finally:
            with contextlib.suppress(ValueError):
                waiting.remove(future)
            if not waiting:
                self._waiting.pop(correlation_id, None)
        return await self._decode(cast("IncomingMessage", raw))

    async def _decode(self, raw: IncomingMessage) -> Any:
        config = self._broker.config
        producer = config.producer
        reply = await process_msg(
            msg=raw,
            middlewares=(
                m(raw, context=config.context) for m in reversed(config.broker_middlewares)
            ),
            parser=producer._parser,
            decoder=producer._decoder,
            source_type=SourceType.RESPONSE,
        )
        return None if reply is None else await reply.decode()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        if channel is not None and not channel.is_closed:
            with contextlib.suppress(Exception):
                await channel.close()
        for waiting in self._waiting.values():
            for future in waiting:
                if not future.done():
                    future.set_exception(
                        DeliveryError("The broker stopped before the reply arrived.")
                    )
        self._waiting.clear()
