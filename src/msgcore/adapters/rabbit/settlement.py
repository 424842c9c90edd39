"""How a delivery of a group queue is settled: ack, retry after a wait, or dead-letter.

RabbitMQ's own ``nack`` puts a message back at once (a poison message loops) and a
reject without a dead-letter exchange drops it. So msgcore settles every failure
itself: it publishes a copy (publisher-confirmed, persistent) where the message must
go next, and acks the delivery only once the copy is stored. A crash between the two
leaves both: at least once, never lost.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import aio_pika
from aio_pika.abc import AbstractChannel, AbstractIncomingMessage, DeliveryMode
from pamqp.commands import Basic

from msgcore.adapters.rabbit.message import (
    HEADER_CHANNEL,
    HEADER_DEAD_LETTER_ID,
    HEADER_DUE,
    HEADER_ERROR,
    HEADER_FAILED_AT,
    HEADER_GROUP,
    HEADER_REASON,
    user_headers,
)
from msgcore.adapters.rabbit.topology import WaitQueues, bucket_ms, wait_queue_arguments
from msgcore.constants import HEADER_ATTEMPT
from msgcore.exceptions import DeliveryError
from msgcore.failures import INVALID_PAYLOAD, describe_error, invalid_reason
from msgcore.naming import rabbit_wait_queue
from msgcore.retry import RetryPolicy

if TYPE_CHECKING:
    from aio_pika import IncomingMessage

__all__ = [
    "CURRENT_DELIVERY",
    "Delivery",
    "Settler",
    "UnroutableError",
    "describe_error",
    "ensure_routed",
]

CURRENT_DELIVERY: ContextVar[Delivery | None] = ContextVar("msgcore_rabbit_delivery", default=None)
"""The delivery whose handler runs in this task (read by the parser and middleware)."""


LogFn = Callable[[str, int], None]


class UnroutableError(DeliveryError):
    """RabbitMQ had no queue for a publish (no group of the channel exists yet)."""


def ensure_routed(result: object, what: str) -> None:
    """``DeliveryError`` unless a publisher-confirmed publish reached a queue.

    aio-pika returns the message itself when RabbitMQ hands back a mandatory publish
    that no queue was bound for; FastStream would let it go without a word.
    """
    if result is None or isinstance(result, Basic.Ack):
        return
    if isinstance(result, Basic.Nack | Basic.Reject):
        raise DeliveryError(f"RabbitMQ refused {what} (publisher confirm: {result.name}).")
    raise UnroutableError(f"RabbitMQ could not route {what}: no queue is bound for it.")


@dataclass(eq=False)
class Delivery:
    """One delivery of a group queue, while msgcore owns its settlement."""

    raw: IncomingMessage
    attempt: int
    settler: Settler
    error: BaseException | None = None
    started: bool = False
    settled: bool = False

    @property
    def open(self) -> bool:
        return not self.settled and not self.raw.processed


class Settler:
    """Settles the deliveries of one subscriber (one channel, one group)."""

    def __init__(
        self,
        *,
        get_channel: Callable[[], Awaitable[AbstractChannel]],
        waits: WaitQueues,
        queue: str,
        dead_queue: str,
        channel: str,
        group: str,
        retry: RetryPolicy,
        log: LogFn,
    ) -> None:
        self._get_channel = get_channel
        self._waits = waits
        self.queue = queue
        self.dead_queue = dead_queue
        self.channel = channel
        self.group = group
        self.retry_policy = retry
        self._log = log

    # -- settlements ------------------------------------------------------------------

    async def ack(self, d: Delivery) -> None:
        if not d.open:
            return
        d.settled = True
        await self._settle_raw(d, "ack")

    async def retry(self, d: Delivery, *, delay: float | None = None) -> None:
        """Back to this group after ``delay`` (default: the backoff of this attempt), or
        to the dead letters when it cannot or must not be tried again."""
        if not d.open:
            return
        if isinstance(d.error, INVALID_PAYLOAD):
            await self.dead_letter(d, reason=invalid_reason(d.error))
            return
        policy = self.retry_policy
        if policy.exhausted(d.attempt):
            await self.dead_letter(
                d, reason=f"failed {d.attempt} of {policy.max_attempts} attempts"
            )
            return
        wait = policy.delay(d.attempt) if delay is None else max(delay, 0.0)
        due = time.time() + wait
        if await self._move(d, lambda: self._park(d, due, attempt=d.attempt + 1), "retry"):
            self._log(
                f"attempt {d.attempt} failed, retrying in {wait:.2f}s "
                f"(correlation_id={d.raw.correlation_id}): {describe_error(d.error)}",
                logging.INFO,
            )

    async def dead_letter(self, d: Delivery, *, reason: str) -> None:
        if not d.open:
            return
        error = describe_error(d.error)
        headers = {
            **user_headers(d.raw.headers),
            HEADER_ATTEMPT: d.attempt,
            HEADER_REASON: reason,
            HEADER_FAILED_AT: int(time.time() * 1000),
            HEADER_CHANNEL: self.channel,
            HEADER_GROUP: self.group,
            # a queue gives its messages no ids: this one lets tools pick it out
            HEADER_DEAD_LETTER_ID: uuid.uuid4().hex,
        }
        if error is not None:
            headers[HEADER_ERROR] = error

        async def store() -> None:
            await self._publish(self.dead_queue, self.copy_of(d.raw, headers), "a dead letter")

        if await self._move(d, store, "dead-letter"):
            self._log(
                f"moved to {self.dead_queue} (correlation_id={d.raw.correlation_id}): "
                f"{reason}{f' ({error})' if error else ''}",
                logging.WARNING,
            )

    async def park(self, d: Delivery, due: float) -> None:
        """Not due yet (delayed publish, or a retry's next hop): wait for the rest."""
        if not d.open:
            return
        await self._move(d, lambda: self._park(d, due, attempt=d.attempt), "wait")

    async def hand_back(self, d: Delivery) -> None:
        """Received but never started (shutdown): back to the queue with its attempt
        count as it was, so that the hand-back does not count as a failed attempt."""
        if not d.open:
            return

        async def requeue() -> None:
            headers = {**user_headers(d.raw.headers), HEADER_ATTEMPT: d.attempt}
            if (due := (d.raw.headers or {}).get(HEADER_DUE)) is not None:
                headers[HEADER_DUE] = due
            await self._publish(self.queue, self.copy_of(d.raw, headers), "a handed-back message")

        await self._move(d, requeue, "hand-back")

    async def release(self, d: Delivery) -> None:
        """Put the delivery back as RabbitMQ does (counted by the quorum queue)."""
        if not d.open:
            return
        d.settled = True
        await self._settle_raw(d, "nack")

    # -- moving copies ------------------------------------------------------------------

    async def _move(self, d: Delivery, store: Callable[[], Awaitable[None]], what: str) -> bool:
        """Store a copy with ``store()``, then ack the delivery. On failure the delivery
        goes back to the queue (and is counted as an attempt by the quorum queue)."""
        d.settled = True
        try:
            await store()
        except Exception as exc:
            self._log(
                f"{what} failed, the message goes back to {self.queue} "
                f"(correlation_id={d.raw.correlation_id}): {exc!r}",
                logging.ERROR,
            )
            # a pause, so that a broken RabbitMQ does not turn into a hot redelivery loop
            await asyncio.sleep(1.0)
            await self._settle_raw(d, "nack")
            return False
        await self._settle_raw(d, "ack")
        return True

    async def _park(self, d: Delivery, due: float, *, attempt: int) -> None:
        headers = {
            **user_headers(d.raw.headers),
            HEADER_ATTEMPT: attempt,
            HEADER_DUE: int(due * 1000),
        }
        message = self.copy_of(d.raw, headers)
        ttl = bucket_ms(due - time.time())
        if ttl is None:
            await self._publish(self.queue, message, "a retry")
            return
        name = rabbit_wait_queue(self.queue, ttl)
        channel = await self._get_channel()
        args = wait_queue_arguments(ttl, exchange="", routing_key=self.queue)
        await self._waits.ensure(channel, name, args)
        try:
            await self._publish(name, message, "a waiting message", channel=channel)
        except UnroutableError:
            # the wait queue was deleted behind our back: declare it again, once
            self._waits.forget(name)
            await self._waits.ensure(channel, name, args)
            await self._publish(name, message, "a waiting message", channel=channel)

    async def _publish(
        self,
        queue: str,
        message: aio_pika.Message,
        what: str,
        *,
        channel: AbstractChannel | None = None,
    ) -> None:
        channel = channel or await self._get_channel()
        result = await channel.default_exchange.publish(message, routing_key=queue, mandatory=True)
        ensure_routed(result, f"{what} for {queue!r}")

    @staticmethod
    def copy_of(raw: AbstractIncomingMessage, headers: dict[str, Any]) -> aio_pika.Message:
        # user_id is dropped: RabbitMQ refuses one that is not this connection's user.
        # expiration is dropped: a retry must not expire because its original would have.
        return aio_pika.Message(
            raw.body,
            headers=headers,
            content_type=raw.content_type,
            content_encoding=raw.content_encoding,
            delivery_mode=DeliveryMode.PERSISTENT,
            correlation_id=raw.correlation_id,
            reply_to=raw.reply_to,
            message_id=raw.message_id,
            timestamp=raw.timestamp,
            type=raw.type,
            app_id=raw.app_id,
        )

    async def _settle_raw(self, d: Delivery, how: str) -> None:
        if d.raw.processed:
            return
        try:
            if how == "ack":
                await d.raw.ack()
            else:
                await d.raw.nack(requeue=True)
        except Exception as exc:
            # the channel is gone: RabbitMQ puts the message back by itself
            self._log(
                f"{how} failed; RabbitMQ redelivers the message when the channel closes "
                f"(correlation_id={d.raw.correlation_id}): {exc!r}",
                logging.WARNING,
            )
