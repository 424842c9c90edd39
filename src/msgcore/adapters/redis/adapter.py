"""Binding msgcore declarations to Redis streams with consumer groups."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

from faststream._internal.producer import ProducerProto, ProducerUnset
from faststream.redis import RedisRouter
from faststream.redis.publisher.usecase import StreamPublisher
from faststream.redis.schemas import StreamSub
from faststream.response.publish_type import PublishType
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msgcore.adapters.base import BoundPublisher, DeadLetterRecord, TransportAdapter
from msgcore.adapters.redis.broker import MsgcoreRedisBroker
from msgcore.adapters.redis.dead_letters import read_dead_letters
from msgcore.adapters.redis.keys import ChannelKeys, check_channel, consumer_name
from msgcore.adapters.redis.producer import Schedule, ScheduledPublishCommand
from msgcore.adapters.redis.subscriber import (
    DeliveryOptions,
    MsgcoreStreamSubscriber,
    create_subscriber,
)
from msgcore.constants import DEFAULT_GROUP
from msgcore.exceptions import ConfigurationError, RequestTimeoutError
from msgcore.router import SubscriberDeclaration

if TYPE_CHECKING:
    from faststream._internal.basic_types import SendableMessage

    from msgcore.router import PublisherHandle
    from msgcore.settings import Settings

__all__ = ["RedisAdapter"]

# Every SubscriberDeclaration field this adapter honours. A field added to the
# declaration later is refused (unless left at its default) until it is handled here.
_HANDLED = frozenset(
    {
        "channel",
        "call",
        "group",
        "max_workers",
        "prefetch",
        "retry",
        "lease_seconds",
        "no_reply",
        "dependencies",
        "title",
        "description",
        "include_in_schema",
        "publishers",
        "cache",  # transport-neutral: the job middleware handles it
        "lock",  # the same
    }
)


def _check_declaration(decl: SubscriberDeclaration) -> None:
    for f in dataclasses.fields(decl):
        if f.name in _HANDLED:
            continue
        default = f.default_factory() if f.default_factory is not dataclasses.MISSING else f.default
        if getattr(decl, f.name) != default:
            raise ConfigurationError(
                f"Subscriber option {f.name}= of {decl.channel!r} is not supported on Redis."
            )
    if decl.lease_seconds <= 0:
        raise ConfigurationError(
            f"lease_seconds must be positive, got {decl.lease_seconds} ({decl.channel!r})"
        )


def _schedule(due_set: str, delay: float | None, not_before: datetime | None) -> Schedule | None:
    """When to deliver; None: now. Mirrors SQLite: the later of ``delay`` and ``not_before``."""
    if not_before is None:
        return Schedule(due_set, delay=delay) if delay and delay > 0 else None
    at = not_before.timestamp()
    now = time.time()
    if delay and delay > 0:
        at = max(at, now + delay)
    return Schedule(due_set, at=at) if at > now else None


class RedisBoundPublisher(BoundPublisher):
    """A ``PublisherHandle`` bound to one broker's stream publisher."""

    connection_errors = (RedisConnectionError, RedisTimeoutError, ConnectionError)

    def __init__(
        self,
        broker: MsgcoreRedisBroker,
        publisher: StreamPublisher,
        keys: ChannelKeys,
        request_timeout: float,
    ) -> None:
        self.broker = broker
        self.publisher = publisher
        self.keys = keys
        self.request_timeout = request_timeout
        self._stream: tuple[str, StreamSub] | None = None

    def _target(self) -> StreamSub:
        # ``StreamPublisher.stream`` deep-copies on every access; cache by prefix.
        prefix = self.publisher._outer_config.prefix
        cached = self._stream
        if cached is None or cached[0] != prefix:
            cached = self._stream = (prefix, self.publisher.stream)
        return cached[1]

    def _producer(self) -> ProducerProto[Any]:
        # A publisher gets its producer when the broker starts; before that (a broker
        # only connected) the broker's own producer publishes for it.
        producer = self.publisher.producer
        if isinstance(producer, ProducerUnset):
            return self.broker.config.producer
        return producer

    def _command(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        publish_type: PublishType,
        timeout: float | None = None,
        schedule: Schedule | None = None,
    ) -> ScheduledPublishCommand:
        stream = self._target()
        return ScheduledPublishCommand(
            message,
            stream=stream.name,
            headers=self.publisher.headers | headers,
            correlation_id=correlation_id or self.broker.config.id_generator(),
            maxlen=stream.maxlen,
            timeout=timeout,
            _publish_type=publish_type,
            message_format=self.publisher.config.message_format,
            schedule=schedule,
        )

    async def publish(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        delay: float | None,
        not_before: datetime | None,
        priority: int | None,
    ) -> None:
        if priority:
            raise ConfigurationError(
                f"priority={priority} is not supported on Redis (streams deliver in "
                f"order): publish to {self.keys.channel!r} without a priority, or use "
                "the SQLite transport for priorities."
            )
        cmd = self._command(
            message,
            headers=headers,
            correlation_id=correlation_id,
            publish_type=PublishType.PUBLISH,
            schedule=_schedule(self.keys.delayed, delay, not_before),
        )
        await self.publisher._basic_publish(cmd, producer=self._producer(), _extra_middlewares=())

    async def request(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        timeout: float | None,
    ) -> Any:
        wait = timeout or self.request_timeout
        cmd = self._command(
            message,
            headers=headers,
            correlation_id=correlation_id,
            publish_type=PublishType.REQUEST,
            timeout=wait,
        )
        try:
            reply = await self.publisher._basic_request(cmd, producer=self._producer())
        except TimeoutError as exc:
            raise RequestTimeoutError(
                f"No reply from {self.keys.channel!r} within {wait}s: is a subscriber "
                "running, and does it return a value?"
            ) from exc
        return await reply.decode()


class RedisAdapter(TransportAdapter):
    """Channels are Redis streams; groups are consumer groups.

    See ``docs/redis.md`` for the guarantees and the keys msgcore keeps in Redis.
    """

    name = "redis"

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.consumer = consumer_name()
        """This broker's consumer name in every group it joins."""

    @property
    def prefix(self) -> str:
        return self.settings.redis.stream_prefix

    def broker(self) -> MsgcoreRedisBroker:
        return MsgcoreRedisBroker(
            self.settings.url,
            polling_interval_ms=self.settings.redis.polling_interval_ms,
            **self.log_kwargs,
        )

    def native_router(
        self, *, dependencies: Sequence[Any], middlewares: Sequence[Any]
    ) -> RedisRouter:
        return RedisRouter(dependencies=dependencies, middlewares=middlewares)

    def publisher(
        self, native_router: RedisRouter, channel: str, handle: PublisherHandle
    ) -> StreamPublisher:
        check_channel(channel)
        keys = ChannelKeys(channel, self.prefix)
        return native_router.publisher(
            stream=StreamSub(keys.stream, maxlen=self.settings.redis.maxlen),
            headers=handle.headers or None,
            title=handle.title,
            description=handle.description,
            schema=handle.schema,
            include_in_schema=handle.include_in_schema,
        )

    def bind_publisher(
        self, broker: MsgcoreRedisBroker, native_publisher: StreamPublisher
    ) -> BoundPublisher:
        keys = ChannelKeys.of_stream(native_publisher.stream.name, self.prefix)
        return RedisBoundPublisher(broker, native_publisher, keys, self.settings.request_timeout)

    def subscribe(
        self,
        native_router: RedisRouter,
        decl: SubscriberDeclaration,
        channel: str,
    ) -> MsgcoreStreamSubscriber:
        check_channel(channel)
        _check_declaration(decl)
        keys = ChannelKeys(channel, self.prefix)
        redis = self.settings.redis
        subscriber = create_subscriber(
            native_router,
            stream=StreamSub(
                keys.stream,
                group=decl.group or DEFAULT_GROUP,
                consumer=self.consumer,
                polling_interval=redis.polling_interval_ms,
                # Read ahead like SQLite's prefetch: enough to keep the workers busy,
                # few enough that other workers of the group still get a share.
                max_records=(
                    max(16, 2 * decl.max_workers)
                    if decl.prefetch is None
                    else decl.max_workers + decl.prefetch
                ),
            ),
            options=DeliveryOptions(
                keys=keys,
                retry=decl.retry,
                lease_seconds=decl.lease_seconds,
                maxlen=redis.maxlen,
                max_workers=decl.max_workers,
                prefetch=decl.prefetch,
            ),
            max_workers=decl.max_workers,
            **decl.endpoint_options,
        )
        return subscriber

    async def dead_letters(
        self, broker: MsgcoreRedisBroker, channel: str | None = None, *, limit: int = 100
    ) -> list[DeadLetterRecord]:
        return await read_dead_letters(broker.redis_client(), self.prefix, channel, limit)
