"""Dead-letter records on Redis: one stream per channel, one entry per message given up.

An entry of ``{prefix}_dead:{channel}`` holds the fields of ``DeadLetterRecord``; the
set ``{prefix}_dead-channels`` lists the channels that have such a stream, so that all
dead letters can be read without scanning the keyspace.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, cast

from redis.asyncio import Redis

from msgcore.adapters.base import DeadLetterRecord
from msgcore.adapters.redis.keys import ChannelKeys
from msgcore.naming import redis_dead_letter_index

__all__ = ["DeadLetterEntry", "read_dead_letters"]


@dataclass(frozen=True)
class DeadLetterEntry:
    """What is written for a message given up on (``DeadLetterRecord`` minus the channel)."""

    group: str
    body: bytes
    headers: dict[str, Any]
    correlation_id: str | None
    message_id: str | None
    attempts: int
    reason: str
    error: str | None
    failed_at: float

    def fields(self, channel: str) -> list[str | bytes]:
        """Field/value pairs for ``XADD``; absent optional values are left out."""
        pairs: list[str | bytes] = [
            "channel",
            channel,
            "group",
            self.group,
            "body",
            self.body,
            "headers",
            json.dumps(self.headers, default=str),
            "attempts",
            str(self.attempts),
            "reason",
            self.reason,
            "failed_at",
            repr(self.failed_at),
        ]
        for name, value in (
            ("correlation_id", self.correlation_id),
            ("message_id", self.message_id),
            ("error", self.error),
        ):
            if value is not None:
                pairs += [name, value]
        return pairs


def _text(fields: dict[bytes, bytes], name: str) -> str | None:
    value = fields.get(name.encode())
    return None if value is None else value.decode(errors="replace")


def parse_record(fields: dict[bytes, bytes]) -> DeadLetterRecord:
    try:
        headers = json.loads(fields.get(b"headers", b"{}"))
    except ValueError:
        headers = {}
    return DeadLetterRecord(
        channel=_text(fields, "channel") or "",
        group=_text(fields, "group") or "",
        body=fields.get(b"body", b""),
        headers=headers if isinstance(headers, dict) else {},
        correlation_id=_text(fields, "correlation_id"),
        message_id=_text(fields, "message_id"),
        attempts=int(fields.get(b"attempts", b"0")),
        reason=_text(fields, "reason") or "",
        error=_text(fields, "error"),
        failed_at=float(fields.get(b"failed_at", b"0")),
    )


async def _read_stream(client: Redis, key: str, limit: int) -> list[tuple[bytes, DeadLetterRecord]]:
    entries = cast("list[tuple[bytes, dict[bytes, bytes]]]", await client.xrange(key, count=limit))
    return [(entry_id, parse_record(fields)) for entry_id, fields in entries]


def _order(item: tuple[bytes, DeadLetterRecord]) -> tuple[float, int, int]:
    ms, _, seq = item[0].partition(b"-")
    return (item[1].failed_at, int(ms), int(seq or 0))


async def read_dead_letters(
    client: Redis, prefix: str, channel: str | None, limit: int
) -> list[DeadLetterRecord]:
    """The ``limit`` oldest dead letters of ``channel``, or of every channel if None."""
    if limit <= 0:
        return []
    if channel is not None:
        return [
            record
            for _, record in await _read_stream(client, ChannelKeys(channel, prefix).dead, limit)
        ]
    members = cast("set[bytes]", await client.smembers(redis_dead_letter_index(prefix)))
    channels = sorted(member.decode() for member in members)
    per_channel = [
        await _read_stream(client, ChannelKeys(name, prefix).dead, limit) for name in channels
    ]
    merged = sorted((item for items in per_channel for item in items), key=_order)
    return [record for _, record in merged[:limit]]
