"""What msgcore keeps on RabbitMQ besides the channel exchange, and how it is declared.

Every name comes from ``msgcore.naming``; this module adds the queue arguments, the
ladder of wait times, and the per-broker cache of declared wait queues.

Layout, for exchange ``E``, channel ``C`` and group ``G``:

- ``E``: durable topic exchange. Publishes to ``C`` use routing key ``C``.
- ``C.G`` (quorum): the group's queue, bound to ``E`` with key ``C``. Every group gets
  every message; consumers of one group compete. RabbitMQ's own dead-lettering of it
  (a reject without requeue by some other client) lands in ``C.G.dead``.
- ``C.G.dead`` (quorum): the group's dead letters, with msgcore's reason headers.
- ``C.G.wait.N`` (quorum): a retry of group ``G`` waits here ``N`` ms (queue TTL), then
  RabbitMQ dead-letters it (at least once) through the default exchange back into
  ``C.G`` only.
- ``E.delay.N.C`` (quorum): a delayed publish waits here ``N`` ms, then is dead-lettered
  into ``E`` with key ``C``, so every group gets it.
- ``E.unrouted`` (topic exchange, ``E``'s alternate exchange) and ``E.unrouted.C``
  (quorum): what was published to ``C`` before any group existed, kept for the first
  group that starts (``unrouted.py``).

``N`` is a power of two, so a queue holds messages of one TTL only and never blocks a
short wait behind a long one. A wait that is not a power of two takes several hops: the
message carries its due time (``x-msgcore-due``) and a consumer that receives it early
parks it again for what is left (each hop at least halves it).
"""

from __future__ import annotations

import math
import time
from typing import Any
from urllib.parse import urlsplit

from aio_pika.abc import AbstractChannel
from faststream.rabbit.schemas import ExchangeType, RabbitExchange

from msgcore.exceptions import ConfigurationError
from msgcore.naming import (
    rabbit_dead_letter_queue,
    rabbit_delay_queue,
    rabbit_group_queue,
    rabbit_routing_key,
    rabbit_unrouted_exchange,
    rabbit_unrouted_queue,
    rabbit_wait_queue,
)
from msgcore.urls import redact_url

__all__ = [
    "MAX_WAIT_MS",
    "WaitQueues",
    "bucket_ms",
    "check_exchange",
    "check_names",
    "dead_queue_arguments",
    "group_queue_arguments",
    "topic_exchange",
    "wait_queue_arguments",
]

MAX_WAIT_MS = 1 << 31
"""The longest single wait (~24.8 days); longer delays hop through it again."""

WAIT_QUEUE_IDLE_MS = 10 * 60 * 1000
"""A wait queue nobody declared for this long after its TTL is deleted by RabbitMQ."""

REDECLARE_SECONDS = 60.0
"""Publishers re-declare a wait queue this often, which keeps it from expiring."""

MAX_NAME_BYTES = 255
"""AMQP's limit on queue and exchange names and routing keys."""

_WILDCARDS = ("*", "#", "{", "}")


def bucket_ms(seconds: float) -> int | None:
    """The wait queue TTL for a wait of ``seconds``: the largest power of two (ms) not
    above it, or ``None`` when the wait is over."""
    ms = math.ceil(seconds * 1000)
    if ms <= 0:
        return None
    return min(1 << (ms.bit_length() - 1), MAX_WAIT_MS)


def topic_exchange(name: str) -> RabbitExchange:
    """msgcore's durable topic exchange (equal objects everywhere: FastStream caches
    declarations by equality)."""
    return RabbitExchange(
        name,
        type=ExchangeType.TOPIC,
        durable=True,
        arguments={"alternate-exchange": rabbit_unrouted_exchange(name)},
    )


def group_queue_arguments(channel: str, group: str | None) -> dict[str, Any]:
    return {
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": rabbit_dead_letter_queue(channel, group),
    }


def dead_queue_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


def wait_queue_arguments(ttl_ms: int, *, exchange: str, routing_key: str) -> dict[str, Any]:
    return {
        "x-queue-type": "quorum",
        "x-message-ttl": ttl_ms,
        "x-dead-letter-exchange": exchange,
        "x-dead-letter-routing-key": routing_key,
        # at-least-once dead-lettering needs reject-publish; no length limit is set
        "x-dead-letter-strategy": "at-least-once",
        "x-overflow": "reject-publish",
        "x-expires": ttl_ms + WAIT_QUEUE_IDLE_MS,
    }


def check_exchange(exchange: str) -> None:
    if not exchange or exchange.startswith("amq.") or len(exchange.encode()) > MAX_NAME_BYTES:
        raise ConfigurationError(
            f"RabbitSettings.exchange={exchange!r} cannot be msgcore's exchange: it needs a "
            "name of its own (not empty, not amq.*, at most 255 bytes); set "
            "MSGCORE_RABBIT__EXCHANGE (default 'msgcore')."
        )


def check_names(exchange: str, channel: str, *, groups: tuple[str | None, ...] = ()) -> None:
    """``ConfigurationError`` unless every name msgcore derives for ``channel`` (and the
    queues of ``groups``) is valid on RabbitMQ."""
    check_exchange(exchange)
    if any(c in channel for c in _WILDCARDS):
        raise ConfigurationError(
            f"Channel {channel!r} contains one of {' '.join(_WILDCARDS)}: on RabbitMQ these "
            "make a binding a pattern, so the channel would not mean the same thing as on "
            "the other transports. Rename the channel."
        )
    names = [
        rabbit_routing_key(channel),
        rabbit_delay_queue(channel, MAX_WAIT_MS, exchange),
        rabbit_unrouted_queue(channel, exchange),
    ]
    for group in groups:
        queue = rabbit_group_queue(channel, group)
        names += [rabbit_dead_letter_queue(channel, group), rabbit_wait_queue(queue, MAX_WAIT_MS)]
    for name in names:
        if len(name.encode()) > MAX_NAME_BYTES:
            raise ConfigurationError(
                f"Channel {channel!r} is too long for RabbitMQ: msgcore names a queue "
                f"{name!r}, over AMQP's {MAX_NAME_BYTES} bytes. Shorten the channel or group."
            )


class WaitQueues:
    """Wait queues one broker has declared, re-declared often enough never to expire
    under a message (``x-expires`` is the TTL plus ten idle minutes)."""

    def __init__(self) -> None:
        self._declared: dict[str, float] = {}

    async def ensure(self, channel: AbstractChannel, name: str, arguments: dict[str, Any]) -> None:
        now = time.monotonic()
        if now - self._declared.get(name, -math.inf) < REDECLARE_SECONDS:
            return
        await channel.declare_queue(name, durable=True, arguments=arguments)
        self._declared[name] = now

    @property
    def names(self) -> list[str]:
        """Every wait queue this broker declared (for tools and tests)."""
        return sorted(self._declared)

    def forget(self, name: str | None = None) -> None:
        if name is None:
            self._declared.clear()
        else:
            self._declared.pop(name, None)


def handshake_refused(url: str, exc: BaseException) -> str | None:
    """Advice when RabbitMQ closed the connection during its handshake (aiormq reports it
    as an unexpected ``Connection.Close`` frame): most often the URL's virtual host does
    not exist, or the user may not use it. None for other errors."""
    text = str(exc)
    if "Connection.OpenOk" not in text and "Connection.Close" not in text:
        return None
    vhost = urlsplit(url).path[1:] or "/"
    return (
        f"RabbitMQ at {redact_url(url)} closed the connection during the handshake: the "
        f"virtual host {vhost!r} may not exist, or the user may not be allowed on it "
        "(`rabbitmqctl list_vhosts`, `rabbitmqctl list_permissions -p <vhost>`)."
    )
