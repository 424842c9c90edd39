"""How a msgcore channel is named on each transport. One place, so tools agree."""

from __future__ import annotations

from msgcore.constants import DEFAULT_GROUP

__all__ = [
    "rabbit_dead_letter_queue",
    "rabbit_group_queue",
    "rabbit_routing_key",
    "redis_stream",
    "sqlite_queue",
]


def sqlite_queue(channel: str) -> str:
    return channel


def redis_stream(channel: str, prefix: str = "msgcore:") -> str:
    return f"{prefix}{channel}"


def rabbit_routing_key(channel: str) -> str:
    return channel


def rabbit_group_queue(channel: str, group: str | None) -> str:
    return f"{channel}.{group or DEFAULT_GROUP}"


def rabbit_dead_letter_queue(channel: str, group: str | None) -> str:
    return f"{rabbit_group_queue(channel, group)}.dead"
