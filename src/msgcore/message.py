"""``msgcore.Message``: the transport-neutral view of the message being handled."""

from __future__ import annotations

from typing import Annotated, Any

from fast_depends import Depends
from faststream import Context
from faststream.message import StreamMessage

from msgcore.constants import HEADER_ATTEMPT

__all__ = ["Message", "MessageView"]


class MessageView:
    """What a handler may know about its message, the same on every transport."""

    __slots__ = ("_message",)

    def __init__(self, message: StreamMessage[Any]) -> None:
        self._message = message

    @property
    def body(self) -> bytes:
        body = self._message.body
        return body if isinstance(body, bytes) else bytes(body)

    @property
    def headers(self) -> dict[str, Any]:
        return self._message.headers

    @property
    def correlation_id(self) -> str | None:
        return self._message.correlation_id

    @property
    def message_id(self) -> str | None:
        return self._message.message_id

    @property
    def attempt(self) -> int:
        """Which delivery this is: 1 for the first."""
        native = getattr(self._message, "attempt", None)
        if isinstance(native, int):
            return native
        try:
            return int(self._message.headers.get(HEADER_ATTEMPT, 1))
        except (TypeError, ValueError):
            return 1

    async def decode(self) -> Any:
        return await self._message.decode()

    async def ack(self) -> None:
        await self._message.ack()

    async def nack(self) -> None:
        """Retry the message later (with the subscriber's backoff)."""
        await self._message.nack()

    async def reject(self) -> None:
        """Give up: the message goes to the dead-letter store."""
        await self._message.reject()

    def __repr__(self) -> str:
        return (
            f"MessageView(message_id={self.message_id!r}, "
            f"correlation_id={self.correlation_id!r}, attempt={self.attempt})"
        )


def _view(message: Annotated[StreamMessage[Any], Context("message")]) -> MessageView:
    return MessageView(message)


Message = Annotated[MessageView, Depends(_view)]
"""Handler parameter type: ``async def handle(order: Order, msg: Message)``."""
