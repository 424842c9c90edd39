"""Reading a group's dead-letter queue without taking anything out of it.

Messages are fetched with ``basic.get`` (no auto-ack) on a channel of their own, held
unacked while up to ``limit`` are read, then all handed back at once by closing that
channel: RabbitMQ returns unacked messages to the queue in their order. A reader that
crashes midway hands them back the same way. Two readers at the same moment each see
part of the queue.
"""

from __future__ import annotations

import contextlib
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiormq

from msgcore.adapters.base import DeadLetterRecord
from msgcore.adapters.rabbit.message import (
    HEADER_CHANNEL,
    HEADER_ERROR,
    HEADER_FAILED_AT,
    HEADER_GROUP,
    HEADER_REASON,
    attempt_of,
    user_headers,
)
from msgcore.constants import HEADER_ATTEMPT

if TYPE_CHECKING:
    from aio_pika.abc import AbstractConnection, AbstractIncomingMessage

__all__ = ["read_dead_letters", "record_of"]


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode(errors="replace")
    return str(value)


def _native_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return deaths[0]
    return {}


def record_of(message: AbstractIncomingMessage, *, channel: str, group: str) -> DeadLetterRecord:
    headers: dict[str, Any] = dict(message.headers or {})
    reason = _text(headers.get(HEADER_REASON))
    failed_at: float | None = None
    if isinstance(at := headers.get(HEADER_FAILED_AT), int | float):
        failed_at = float(at) / 1000
    if reason is None:
        # dead-lettered by RabbitMQ itself (another client rejected it without requeue)
        death = _native_death(headers)
        why = _text(death.get("reason") or headers.get("x-first-death-reason")) or "unknown"
        reason = f"dead-lettered by RabbitMQ: {why}"
        if isinstance(when := death.get("time"), datetime):
            failed_at = when.timestamp()
    if failed_at is None:
        stamp = message.timestamp
        failed_at = stamp.timestamp() if isinstance(stamp, datetime) else 0.0
    attempts = headers.get(HEADER_ATTEMPT)
    return DeadLetterRecord(
        channel=_text(headers.get(HEADER_CHANNEL)) or channel,
        group=_text(headers.get(HEADER_GROUP)) or group,
        body=message.body,
        headers=user_headers(headers),
        correlation_id=message.correlation_id,
        message_id=message.message_id,
        attempts=int(attempts) if isinstance(attempts, int) else attempt_of(headers),
        reason=reason,
        error=_text(headers.get(HEADER_ERROR)),
        failed_at=failed_at,
    )


async def read_dead_letters(
    connection: AbstractConnection, queue: str, *, channel: str, group: str, limit: int
) -> list[DeadLetterRecord]:
    """Up to ``limit`` dead letters of ``queue``, oldest first, left in the queue.

    ``LookupError`` if the queue does not exist (its group never started).
    """
    amqp = await connection.channel(publisher_confirms=False)
    try:
        try:
            dead = await amqp.declare_queue(queue, passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            raise LookupError(queue) from None
        records: list[DeadLetterRecord] = []
        while len(records) < limit:
            message = await dead.get(no_ack=False, fail=False)
            if message is None:
                break
            records.append(record_of(message, channel=channel, group=group))
        return records
    finally:
        with contextlib.suppress(Exception):
            await amqp.close()
