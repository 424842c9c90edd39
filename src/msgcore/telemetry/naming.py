"""Span names and attributes that are the same on every transport.

FastStream's ``TelemetryMiddleware`` names spans ``"{destination} {action}"`` with the
transport's own destination: a Redis stream with its prefix, a RabbitMQ routing key or
a retry queue, a SQLite queue. msgcore hands it a settings provider that reports the
msgcore *channel* instead, so a trace reads the same on SQLite, Redis and RabbitMQ;
only ``messaging.system`` differs.
"""

from __future__ import annotations

from typing import Any, Final

from faststream.opentelemetry import TelemetrySettingsProvider
from faststream.opentelemetry.consts import MESSAGING_DESTINATION_PUBLISH_NAME
from opentelemetry.semconv.trace import SpanAttributes

from msgcore.constants import DEFAULT_GROUP, REPLY_QUEUE_PREFIX

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_CACHE",
    "ATTR_CHANNEL",
    "ATTR_JOB_ID",
    "ATTR_LOCK_KEY",
    "ATTR_LOCK_WAIT",
    "EVENT_DEAD_LETTER",
    "LOCK_WAIT_DURATION",
    "REPLY_DESTINATION",
    "ChannelNames",
    "MsgcoreTelemetryProvider",
]

ATTR_CHANNEL: Final = "msgcore.channel"
ATTR_JOB_ID: Final = "msgcore.job_id"
ATTR_ATTEMPT: Final = "msgcore.attempt"
ATTR_CACHE: Final = "msgcore.cache"
"""``hit``, ``miss``, ``joined`` (single-flight) or ``bypass``."""
ATTR_LOCK_KEY: Final = "msgcore.lock.key"
"""The per-key lock a locked handler's attempt held (``scope:value``)."""
ATTR_LOCK_WAIT: Final = "msgcore.lock.wait"
"""Seconds the attempt waited for its lock (0.0: it was free)."""
LOCK_WAIT_DURATION: Final = "msgcore.lock.wait.duration"
"""Histogram of lock waits in seconds, per ``msgcore.channel`` (a timeout counts too)."""
EVENT_DEAD_LETTER: Final = "msgcore.dead_letter"
REPLY_DESTINATION: Final = "(reply)"
"""The destination of a request's reply: reply queues are private and random."""

SYSTEMS: Final = {"sqlite": "sqlite", "redis": "redis", "rabbit": "rabbitmq"}


class ChannelNames:
    """Maps a transport's destination names back to msgcore channels."""

    def __init__(self, transport: str, *, redis_prefix: str = "msgcore:") -> None:
        self.transport = transport
        self.redis_prefix = redis_prefix
        self._known: dict[str, str] = {}

    def declare(self, channel: str, group: str | None = None) -> None:
        """A channel the broker subscribes or publishes to (RabbitMQ: and its queue)."""
        self._known[channel] = channel
        if self.transport == "rabbit":
            self._known[f"{channel}.{group or DEFAULT_GROUP}"] = channel

    def channel(self, destination: str) -> str:
        # a reply: a private reply queue, or (test brokers) no destination at all
        if not destination or destination.startswith(REPLY_QUEUE_PREFIX):
            return REPLY_DESTINATION
        if self.transport == "redis":
            if not destination.startswith(self.redis_prefix):
                # every channel is a stream under the prefix; what is not is a
                # requester's private reply channel
                return REPLY_DESTINATION
            destination = destination[len(self.redis_prefix) :]
            if destination.startswith("_retry:") and "@" in destination:
                # a group's redelivery stream: _retry:{group}@{channel}
                destination = destination.split("@", 1)[1]
        return self._known.get(destination, destination)


class MsgcoreTelemetryProvider(TelemetrySettingsProvider[Any, Any]):
    """One provider for the three transports: channel names, the transport's system."""

    __slots__ = ("messaging_system", "names")

    def __init__(self, names: ChannelNames) -> None:
        self.names = names
        self.messaging_system = SYSTEMS[names.transport]

    def _raw_destination(self, raw: Any) -> str:
        if isinstance(raw, dict):  # Redis: the parsed stream entry
            name = raw.get("channel") or raw.get("stream") or raw.get("list") or ""
            return name.decode() if isinstance(name, bytes) else str(name)
        queue = getattr(raw, "queue", None)  # SQLite: StoredMessage
        if isinstance(queue, str):
            return queue
        return str(getattr(raw, "routing_key", "") or "")  # RabbitMQ: IncomingMessage

    def get_consume_destination_name(self, msg: Any) -> str:
        return self.names.channel(self._raw_destination(msg.raw_message))

    def get_consume_attrs_from_message(self, msg: Any) -> dict[str, Any]:
        channel = self.get_consume_destination_name(msg)
        return {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            SpanAttributes.MESSAGING_MESSAGE_ID: msg.message_id,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: msg.correlation_id,
            SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES: len(msg.body),
            MESSAGING_DESTINATION_PUBLISH_NAME: channel,
            ATTR_CHANNEL: channel,
        }

    def get_publish_destination_name(self, cmd: Any) -> str:
        return self.names.channel(str(cmd.destination or ""))

    def get_publish_attrs_from_cmd(self, cmd: Any) -> dict[str, Any]:
        channel = self.get_publish_destination_name(cmd)
        return {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            SpanAttributes.MESSAGING_DESTINATION_NAME: channel,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: cmd.correlation_id,
            ATTR_CHANNEL: channel,
        }
