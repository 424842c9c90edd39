"""Publish commands and handler responses of the SQLite transport."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any, Self

from faststream.response.publish_type import PublishType
from faststream.response.response import BatchPublishCommand, PublishCommand, Response
from typing_extensions import override

if TYPE_CHECKING:
    from faststream._internal.basic_types import SendableMessage


class SqliteResponse(Response):
    """Return this from a handler to set headers, priority or a delay on the reply."""

    def __init__(
        self,
        body: SendableMessage,
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        priority: int = 0,
        delay: float | None = None,
    ) -> None:
        super().__init__(body=body, headers=headers, correlation_id=correlation_id)
        self.priority = priority
        self.delay = delay

    @override
    def as_publish_command(self) -> SqlitePublishCommand:
        return SqlitePublishCommand(
            self.body,
            headers=self.headers,
            correlation_id=self.correlation_id,
            priority=self.priority,
            delay=self.delay,
            _publish_type=PublishType.PUBLISH,
        )


class SqlitePublishCommand(BatchPublishCommand):
    def __init__(
        self,
        message: SendableMessage,
        /,
        *messages: SendableMessage,
        queue: str = "",
        _publish_type: PublishType,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        reply_to: str = "",
        priority: int = 0,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        message_id: str | None = None,
        timeout: float | None = 30.0,
    ) -> None:
        super().__init__(
            message,
            *messages,
            destination=queue,
            correlation_id=correlation_id,
            headers=headers,
            reply_to=reply_to,
            _publish_type=_publish_type,
        )
        self.priority = priority
        self.delay = delay
        self.not_before = not_before
        self.message_id = message_id
        self.timeout = timeout

    def visible_at(self, now: float) -> float:
        """When the message may first be delivered."""
        at = now
        if self.delay:
            at = now + float(self.delay)
        if self.not_before is not None:
            nb = (
                self.not_before.timestamp()
                if isinstance(self.not_before, datetime)
                else float(self.not_before)
            )
            at = max(at, nb)
        return at

    @classmethod
    def from_cmd(cls, cmd: PublishCommand | Self, *, batch: bool = False) -> Self:
        if isinstance(cmd, cls):
            return cmd
        body, extra = cls._parse_bodies(cmd.body, batch=batch)
        return cls(
            body,
            *extra,
            queue=cmd.destination,
            correlation_id=cmd.correlation_id,
            headers=cmd.headers,
            reply_to=cmd.reply_to,
            priority=getattr(cmd, "priority", 0),
            delay=getattr(cmd, "delay", None),
            timeout=getattr(cmd, "timeout", 30.0),
            _publish_type=cmd.publish_type,
        )

    def __repr__(self) -> str:
        parts = [f"queue='{self.destination}'", f"body={self.body!r}"]
        if self.extra_bodies:
            parts.append(f"extra_bodies={self.extra_bodies!r}")
        if self.reply_to:
            parts.append(f"reply_to='{self.reply_to}'")
        if self.priority:
            parts.append(f"priority={self.priority}")
        if self.delay:
            parts.append(f"delay={self.delay}")
        parts += [f"headers={self.headers}", f"correlation_id='{self.correlation_id}'"]
        return f"{self.__class__.__name__}({', '.join(parts)})"
