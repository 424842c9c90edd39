"""How a msgcore channel is named on each transport. One place, so tools agree."""

from __future__ import annotations

import re

from msgcore.constants import (
    DEFAULT_GROUP,
    REDIS_CACHE_KEY_PREFIX,
    REDIS_JOB_KEY,
    REDIS_JOBS_INDEX_KEY,
    REDIS_KV_KEY,
    REDIS_LOCK_KEY,
)
from msgcore.exceptions import ConfigurationError

__all__ = [
    "MAX_CHANNEL_BYTES",
    "MAX_GROUP_BYTES",
    "check_channel_name",
    "check_group_name",
    "rabbit_dead_letter_queue",
    "rabbit_delay_queue",
    "rabbit_group_queue",
    "rabbit_routing_key",
    "rabbit_unrouted_exchange",
    "rabbit_unrouted_queue",
    "rabbit_wait_queue",
    "redis_dead_letter_index",
    "redis_dead_letter_stream",
    "redis_delayed_set",
    "redis_retry_set",
    "redis_retry_stream",
    "redis_stream",
    "sqlite_queue",
]

# Redis keys msgcore keeps beside a channel's stream. Their names start with the stream
# prefix and an underscore, so a channel named like one of them is refused at bind time
# (``REDIS_RESERVED_CHANNEL_PREFIXES``).
REDIS_RESERVED_CHANNEL_PREFIXES = (
    "_dead:",
    "_dead-channels",
    "_delayed:",
    "_retry:",
    "_retry-due:",
    # the job store's keys (msgcore.store.redis), when it shares the prefix
    REDIS_JOB_KEY,
    REDIS_JOBS_INDEX_KEY,
    REDIS_KV_KEY,
    REDIS_CACHE_KEY_PREFIX,
    REDIS_LOCK_KEY,
)


# A name every transport carries the same way, checked when a router is bound, whatever
# the transport: a router that runs on a SQLite file must not fail on RabbitMQ later.
# RabbitMQ (pamqp) takes ASCII letters, digits and "-_.:@,/+ #" in queue names, and "#"
# (with "*") is a topic wildcard there; Redis keeps its own keys under names starting
# with "_"; a dot in a group would let RabbitMQ queue names of two (channel, group)
# pairs meet ("a" + "b.c" and "a.b" + "c" are both "a.b.c").
_CHANNEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:@,/+ -]*\Z")
_GROUP_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_:@,/+ -]*\Z")
MAX_CHANNEL_BYTES = 180
MAX_GROUP_BYTES = 40
"""Longest names: RabbitMQ derives queue names (``channel.group.wait.<ms>``) that must
stay within AMQP's 255 bytes."""


def check_channel_name(channel: str) -> None:
    if not isinstance(channel, str) or not _CHANNEL_NAME.match(channel):
        raise ConfigurationError(
            f"Channel {channel!r} cannot be carried the same way by every transport: use "
            "ASCII letters and digits, then also - _ . : @ , / + or spaces (it must start "
            "with a letter or digit), e.g. 'orders.created'."
        )
    if len(channel) > MAX_CHANNEL_BYTES:
        raise ConfigurationError(
            f"Channel {channel[:40]!r}... is {len(channel)} characters long, over "
            f"{MAX_CHANNEL_BYTES}: RabbitMQ's queue names built from it would pass AMQP's "
            "255 bytes. Shorten it (or the router's prefix)."
        )


def check_group_name(group: str | None) -> None:
    if group is None:
        return
    if not isinstance(group, str) or not _GROUP_NAME.match(group) or len(group) > MAX_GROUP_BYTES:
        raise ConfigurationError(
            f"Group {group!r} cannot be carried the same way by every transport: use at most "
            f"{MAX_GROUP_BYTES} ASCII letters and digits, then also - _ : @ , / + or spaces "
            "(no dot: on RabbitMQ two channel and group pairs would share a queue)."
        )


def sqlite_queue(channel: str) -> str:
    return channel


def redis_stream(channel: str, prefix: str = "msgcore:") -> str:
    return f"{prefix}{channel}"


def redis_delayed_set(channel: str, prefix: str = "msgcore:") -> str:
    """Sorted set of messages published to ``channel`` with a delay, scored by due time."""
    return f"{prefix}_delayed:{channel}"


def redis_retry_stream(channel: str, group: str | None, prefix: str = "msgcore:") -> str:
    """Stream of redeliveries of ``channel`` for one consumer group only."""
    return f"{prefix}_retry:{group or DEFAULT_GROUP}@{channel}"


def redis_retry_set(channel: str, group: str | None, prefix: str = "msgcore:") -> str:
    """Sorted set of one group's retries of ``channel`` waiting for their backoff."""
    return f"{prefix}_retry-due:{group or DEFAULT_GROUP}@{channel}"


def redis_dead_letter_stream(channel: str, prefix: str = "msgcore:") -> str:
    """Stream of the dead-letter records of ``channel`` (every group)."""
    return f"{prefix}_dead:{channel}"


def redis_dead_letter_index(prefix: str = "msgcore:") -> str:
    """Set of the channels that have a dead-letter stream."""
    return f"{prefix}_dead-channels"


def rabbit_routing_key(channel: str) -> str:
    return channel


def rabbit_group_queue(channel: str, group: str | None) -> str:
    return f"{channel}.{group or DEFAULT_GROUP}"


def rabbit_dead_letter_queue(channel: str, group: str | None) -> str:
    return f"{rabbit_group_queue(channel, group)}.dead"


def rabbit_wait_queue(queue: str, ttl_ms: int) -> str:
    """Where a message waits ``ttl_ms`` before it returns to ``queue`` (one group) only."""
    return f"{queue}.wait.{ttl_ms}"


def rabbit_delay_queue(channel: str, ttl_ms: int, exchange: str = "msgcore") -> str:
    """Where a delayed publish to ``channel`` waits ``ttl_ms`` before every group gets it."""
    return f"{exchange}.delay.{ttl_ms}.{channel}"


def rabbit_unrouted_exchange(exchange: str = "msgcore") -> str:
    """The alternate exchange of ``exchange``: gets what no group queue is bound for."""
    return f"{exchange}.unrouted"


def rabbit_unrouted_queue(channel: str, exchange: str = "msgcore") -> str:
    """Messages to ``channel`` published before any group existed, kept for the first."""
    return f"{exchange}.unrouted.{channel}"
