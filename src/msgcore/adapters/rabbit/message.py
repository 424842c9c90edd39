"""The message msgcore's RabbitMQ subscribers hand to handlers, and its headers."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream._internal.utils.path import match_path
from faststream.message import StreamMessage, gen_cor_id
from faststream.rabbit.message import RabbitMessage
from faststream.rabbit.parser import AioPikaParser

from msgcore.constants import HEADER_ATTEMPT, HEADER_CACHE_BYPASS, HEADER_JOB_ID

if TYPE_CHECKING:
    from aio_pika import IncomingMessage
    from aio_pika.abc import HeadersType

    from msgcore.adapters.rabbit.settlement import Delivery

__all__ = [
    "HEADER_CHANNEL",
    "HEADER_DEAD_LETTER_ID",
    "HEADER_DUE",
    "HEADER_ERROR",
    "HEADER_FAILED_AT",
    "HEADER_GROUP",
    "HEADER_REASON",
    "MsgcoreParser",
    "MsgcoreRabbitMessage",
    "attempt_of",
    "due_of",
    "transport_headers",
    "user_headers",
]

HEADER_DUE = "x-msgcore-due"
"""Epoch milliseconds before which the message must not be handled (delays, retries)."""
HEADER_REASON = "x-msgcore-reason"
HEADER_ERROR = "x-msgcore-error"
HEADER_FAILED_AT = "x-msgcore-failed-at"
"""Epoch milliseconds at which the message was dead-lettered."""
HEADER_CHANNEL = "x-msgcore-channel"
HEADER_GROUP = "x-msgcore-group"
HEADER_DEAD_LETTER_ID = "x-msgcore-dead-letter-id"
"""A random token given to a message when it is dead-lettered: names it in the queue."""

DELIVERY_COUNT = "x-delivery-count"
"""Set by quorum queues: how often the message went back to the queue unsettled."""

_INTERNAL_PREFIXES = ("x-msgcore-", "x-first-death-", "x-last-death-")
_INTERNAL = frozenset({"x-death", DELIVERY_COUNT})
# msgcore headers that belong to the message, not to its transport bookkeeping: the
# job tracking middleware reads them on every transport
_PUBLIC = frozenset({HEADER_JOB_ID, HEADER_CACHE_BYPASS})


def _is_internal(key: str) -> bool:
    return key not in _PUBLIC and (key in _INTERNAL or key.startswith(_INTERNAL_PREFIXES))


def user_headers(headers: HeadersType | None) -> dict[str, Any]:
    """The headers as the publisher set them: without msgcore's own (``x-msgcore-*``) or
    what RabbitMQ adds on dead-lettering and redelivery."""
    return {k: v for k, v in (headers or {}).items() if not _is_internal(k)}


def transport_headers(headers: HeadersType | None) -> dict[str, Any]:
    """The headers a copy of the message keeps: the publisher's and msgcore's own, not
    what RabbitMQ added (dead-lettering history, its delivery count)."""
    return {
        k: v
        for k, v in (headers or {}).items()
        if k not in _INTERNAL and not k.startswith(("x-first-death-", "x-last-death-"))
    }


def _int_header(headers: HeadersType | None, key: str, default: int) -> int:
    value = (headers or {}).get(key)
    if isinstance(value, bytes):
        value = value.decode(errors="replace")
    if isinstance(value, bool) or value is None:
        return default
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def attempt_of(headers: HeadersType | None) -> int:
    """Which delivery this is (1 for the first): msgcore's count of settled attempts plus
    the deliveries the quorum queue counted that were never settled (crashes)."""
    attempt = max(_int_header(headers, HEADER_ATTEMPT, 1), 1)
    return attempt + max(_int_header(headers, DELIVERY_COUNT, 0), 0)


def due_of(headers: HeadersType | None) -> float | None:
    """Epoch seconds before which the message must not be handled, if it says so."""
    ms = _int_header(headers, HEADER_DUE, 0)
    return ms / 1000 if ms > 0 else None


class MsgcoreRabbitMessage(RabbitMessage):
    """A message of a msgcore group queue. ``nack()`` retries with the subscriber's
    backoff, ``reject()`` dead-letters; both ack the delivery once the copy is stored.

    Outside a msgcore subscriber's consume loop (``TestClient``) they behave like
    FastStream's ``RabbitMessage``.
    """

    delivery: Delivery | None = None

    @property
    def attempt(self) -> int:
        """Which delivery of this message this is (1 for the first)."""
        if self.delivery is not None:
            return self.delivery.attempt
        return attempt_of(self.raw_message.headers)

    async def ack(self, multiple: bool = False) -> None:
        delivery = self.delivery
        if delivery is None:
            await super().ack(multiple=multiple)
            return
        if self.committed is None:
            await delivery.settler.ack(delivery)
        await StreamMessage.ack(self)

    async def nack(
        self, multiple: bool = False, requeue: bool = True, *, delay: float | None = None
    ) -> None:
        """Retry later: after ``delay`` seconds, or the subscriber's backoff.

        After the last allowed attempt the message is dead-lettered instead;
        ``requeue=False`` dead-letters at once.
        """
        delivery = self.delivery
        if delivery is None:
            await super().nack(multiple=multiple, requeue=requeue)
            return
        if self.committed is None:
            if requeue:
                await delivery.settler.retry(delivery, delay=delay)
            else:
                await delivery.settler.dead_letter(
                    delivery, reason="rejected by the handler (nack without requeue)"
                )
        await StreamMessage.nack(self)

    async def reject(self, requeue: bool = False) -> None:
        """Give up on the message: it moves to the group's dead-letter queue."""
        delivery = self.delivery
        if delivery is None:
            await super().reject(requeue=requeue)
            return
        if self.committed is None:
            if requeue:
                await delivery.settler.retry(delivery)
            else:
                await delivery.settler.dead_letter(delivery, reason="rejected by the handler")
        await StreamMessage.reject(self)


class MsgcoreParser(AioPikaParser):
    """Parses deliveries of a msgcore group queue into ``MsgcoreRabbitMessage``."""

    __slots__ = ()

    async def parse_message(self, message: IncomingMessage) -> StreamMessage[IncomingMessage]:
        from msgcore.adapters.rabbit.settlement import CURRENT_DELIVERY

        parsed = MsgcoreRabbitMessage(
            body=message.body,
            headers=user_headers(message.headers),
            reply_to=message.reply_to or "",
            content_type=message.content_type,
            message_id=message.message_id or gen_cor_id(),
            correlation_id=message.correlation_id or gen_cor_id(),
            path=match_path(self.pattern, message.routing_key or ""),
            raw_message=message,
        )
        delivery = CURRENT_DELIVERY.get()
        if delivery is not None and delivery.raw is message:
            parsed.delivery = delivery
        return parsed
