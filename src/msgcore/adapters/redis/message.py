"""The message msgcore's Redis subscribers hand to handlers, and the parser that builds it.

``ack``/``nack``/``reject`` settle the entry for its group through ``Settlement``
(FastStream's own stream message only ``XACK``s, and leaves nacked entries pending).
Under ``TestRedisBroker`` no settlement is attached and the message behaves exactly as
FastStream's ``RedisStreamMessage``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from faststream._internal.constants import EMPTY
from faststream.message import StreamMessage
from faststream.redis.message import RedisStreamMessage
from faststream.redis.parser import RedisStreamParser
from typing_extensions import override

from msgcore.constants import HEADER_ATTEMPT

if TYPE_CHECKING:
    from msgcore.adapters.redis.settlement import Delivery, Settlement

__all__ = ["ENVELOPE_HEADERS", "MsgcoreStreamMessage", "MsgcoreStreamParser"]

ENVELOPE_HEADERS = ("correlation_id", "content-type", "reply_to")
"""What FastStream's envelope carries among the headers. The parser has read them into
the message's own fields; handlers see only the publisher's headers, as on SQLite and
RabbitMQ."""


class MsgcoreStreamMessage(RedisStreamMessage):
    """A stream entry delivered to one group, settled with msgcore's retry semantics."""

    delivery: Delivery | None = None
    settlement: Settlement | None = None

    @property
    def attempt(self) -> int:
        """Which delivery of this message this is (1 for the first)."""
        if self.delivery is not None:
            return self.delivery.attempt
        try:
            return int(self.headers.get(HEADER_ATTEMPT, 1))
        except (TypeError, ValueError):
            return 1

    @override
    async def ack(self, redis: Any = EMPTY, group: Any = EMPTY) -> None:
        if self.delivery is None or self.settlement is None:
            await super().ack(redis, group)
            return
        if self.committed is None:
            await self.settlement.ack(self.delivery)
        await StreamMessage.ack(self)

    @override
    async def nack(
        self, redis: Any = EMPTY, group: Any = EMPTY, *, delay: float | None = None
    ) -> None:
        """Deliver again to this group after ``delay`` seconds, or the subscriber's backoff.

        After the last allowed attempt the message goes to the dead letters instead.
        """
        if self.delivery is None or self.settlement is None:
            await super().nack(redis, group)
            return
        if self.committed is None:
            await self.settlement.nack(self.delivery, delay=delay)
        await StreamMessage.nack(self)

    @override
    async def reject(self, redis: Any = EMPTY, group: Any = EMPTY) -> None:
        """Give up on the message: it goes to the dead letters, never dropped."""
        if self.delivery is None or self.settlement is None:
            await super().reject(redis, group)
            return
        if self.committed is None:
            await self.settlement.reject(self.delivery)
        await StreamMessage.reject(self)


class MsgcoreStreamParser(RedisStreamParser):
    """FastStream's stream parser, attaching the held entry and its delivery number."""

    msg_class = MsgcoreStreamMessage
    settlement: Settlement | None = None

    @override
    async def parse_message(self, message: Mapping[str, Any]) -> StreamMessage[Mapping[str, Any]]:
        msg = await super().parse_message(message)
        headers = msg.headers
        for key in ENVELOPE_HEADERS:
            headers.pop(key, None)
        ids: Sequence[bytes] = message.get("message_ids") or ()
        settlement = self.settlement
        delivery = settlement.find(message["channel"], ids[0]) if settlement and ids else None
        if delivery is not None and isinstance(msg, MsgcoreStreamMessage):
            msg.delivery, msg.settlement = delivery, settlement
            if "message_id" not in msg.headers:
                # stable across redeliveries: the id of the entry the message first had
                msg.message_id = delivery.origin.decode()
            if delivery.attempt > 1:
                msg.headers[HEADER_ATTEMPT] = str(delivery.attempt)
        return msg
