"""Publishing with a delay: FastStream's Redis producer, plus a scheduled form of XADD.

A ``ScheduledPublishCommand`` travels through the publisher's middlewares like any
publish (telemetry sees it); the producer then encodes it exactly as an immediate
publish and adds it to the channel's delayed set instead of its stream.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

from faststream.redis.message import DATA_KEY
from faststream.redis.publisher.producer import RedisFastProducer
from faststream.redis.response import DestinationType, RedisPublishCommand
from typing_extensions import override

from msgcore.adapters.redis import scripts

__all__ = [
    "CAPTURED",
    "CapturedPublish",
    "MsgcoreRedisProducer",
    "Schedule",
    "ScheduledPublishCommand",
]


@dataclass(frozen=True)
class CapturedPublish:
    """A stream publish encoded but not sent: its caller adds it in a script of its own."""

    stream: str
    data: bytes
    maxlen: int | None
    correlation_id: str | None


CAPTURED: ContextVar[list[CapturedPublish] | None] = ContextVar(
    "msgcore_redis_captured_publishes", default=None
)
"""While set, immediate stream publishes are encoded into this list instead of sent:
the job store adds each message in the same script as its job's record."""


@dataclass(frozen=True)
class Schedule:
    """When a delayed message is due: ``delay`` seconds from now or at ``at`` (epoch s)."""

    due_set: str
    delay: float | None = None
    at: float | None = None


class ScheduledPublishCommand(RedisPublishCommand):
    """A stream publish that waits in a delayed set until it is due."""

    def __init__(self, *args: Any, schedule: Schedule | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.schedule = schedule


class MsgcoreRedisProducer(RedisFastProducer):
    """FastStream's producer; schedules ``ScheduledPublishCommand``s on the server clock."""

    on_schedule: Callable[[float], None] | None = None

    @override
    async def publish(self, cmd: RedisPublishCommand) -> int | bytes:
        schedule = getattr(cmd, "schedule", None)
        captured = CAPTURED.get()
        if captured is not None:
            if schedule is not None or cmd.destination_type is not DestinationType.Stream:
                # Not a plain stream publish: nothing is sent, and the marker tells the
                # capturing caller to publish the usual way instead.
                captured.append(CapturedPublish("", b"", None, None))
                return b""
            data = await cmd.message_format.encode(
                message=cmd.body,
                reply_to=cmd.reply_to,
                headers=cmd.headers,
                correlation_id=cmd.correlation_id or "",
                serializer=self.serializer,
                codec=self.codec,
            )
            captured.append(CapturedPublish(cmd.destination, data, cmd.maxlen, cmd.correlation_id))
            return b""
        if not isinstance(schedule, Schedule):
            return await super().publish(cmd)
        data = await cmd.message_format.encode(
            message=cmd.body,
            reply_to=cmd.reply_to,
            headers=cmd.headers,
            correlation_id=cmd.correlation_id or "",
            serializer=self.serializer,
            codec=self.codec,
        )
        uid = uuid.uuid4().hex
        if schedule.at is not None:
            mode, value = "at", int(schedule.at * 1000)
        else:
            mode, value = "in", max(int((schedule.delay or 0.0) * 1000), 0)
        await scripts.SCHEDULE(
            self._connection.client, [schedule.due_set], [uid, mode, value, DATA_KEY, data]
        )
        if self.on_schedule is not None:
            self.on_schedule(schedule.delay or 0.0)
        return uid.encode()

    @override
    def _build_child(self, **kwargs: Any) -> Any:
        child = super()._build_child(**kwargs)
        if isinstance(child, MsgcoreRedisProducer):
            child.on_schedule = self.on_schedule
        return child
