"""The message a SQLite subscriber hands to handlers and middlewares."""

from __future__ import annotations

from typing import Any

from faststream.message import StreamMessage

from msgcore.sqlite.client.base import StoredMessage


class SqliteMessage(StreamMessage[StoredMessage]):
    """A consumed SQLite row. ``ack``/``nack``/``reject`` are fenced by its lease."""

    @property
    def attempt(self) -> int:
        """Which delivery of this message this is (1 for the first)."""
        return self.raw_message.attempts

    async def ack(self, **kwargs: Any) -> None:
        if self.committed is None and (s := self.raw_message.settlement) is not None:
            await s.ack(self.raw_message)
        await super().ack()

    async def nack(self, delay: float | None = None, **kwargs: Any) -> None:
        """Retry later: after ``delay`` seconds, or the subscriber's backoff.

        After the last allowed attempt the message goes to the dead-letter table.
        """
        if self.committed is None and (s := self.raw_message.settlement) is not None:
            await s.nack(self.raw_message, delay=delay)
        await super().nack()

    async def reject(self, **kwargs: Any) -> None:
        """Give up on the message: it moves to the dead-letter table, never dropped."""
        if self.committed is None and (s := self.raw_message.settlement) is not None:
            await s.reject(self.raw_message)
        await super().reject()
