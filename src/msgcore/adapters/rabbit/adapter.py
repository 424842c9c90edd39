"""Binding msgcore declarations to RabbitMQ: a topic exchange, a quorum queue per group."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, cast

from aiormq.exceptions import AMQPConnectionError, ChannelInvalidStateError
from faststream.rabbit import RabbitRouter
from faststream.rabbit.schemas import RabbitExchange

from msgcore.adapters.base import BoundPublisher, DeadLetterRecord, TransportAdapter
from msgcore.adapters.rabbit.broker import MsgcoreRabbitBroker, url_heartbeat
from msgcore.adapters.rabbit.dead_letters import read_dead_letters
from msgcore.adapters.rabbit.message import HEADER_DUE
from msgcore.adapters.rabbit.publisher import MsgcoreRabbitPublisher, create_channel_publisher
from msgcore.adapters.rabbit.subscriber import (
    GroupPlan,
    MsgcoreRabbitSubscriber,
    create_group_subscriber,
)
from msgcore.adapters.rabbit.topology import (
    bucket_ms,
    check_exchange,
    check_names,
    wait_queue_arguments,
)
from msgcore.constants import DEFAULT_GROUP
from msgcore.exceptions import ConfigurationError, PayloadError, RequestTimeoutError
from msgcore.naming import rabbit_dead_letter_queue, rabbit_delay_queue, rabbit_routing_key

if TYPE_CHECKING:
    from faststream._internal.basic_types import SendableMessage

    from msgcore.router import PublisherHandle, SubscriberDeclaration

__all__ = ["RabbitAdapter"]


def _due(delay: float | None, not_before: datetime | float | None) -> float | None:
    """Epoch seconds before which the message must not be delivered (as SQLite's)."""
    if delay is None and not_before is None:
        return None
    at = time.time() + float(delay or 0.0)
    if not_before is not None:
        nb = not_before.timestamp() if isinstance(not_before, datetime) else float(not_before)
        at = max(at, nb)
    return at


_ENCODE_ERRORS = (TypeError, ValueError, AttributeError)
"""What pamqp's table encoder raises for a header it cannot carry (by key and value)."""


def _raised_by_pamqp(exc: BaseException) -> bool:
    """Whether ``exc`` came from pamqp's encoder: a header value AMQP cannot carry."""
    tb = exc.__traceback__
    if tb is None:
        return False
    while tb.tb_next is not None:
        tb = tb.tb_next
    return str(tb.tb_frame.f_globals.get("__name__", "")).startswith("pamqp")


class _EncodeErrors:
    """``with`` around a publish or request: pamqp's error for a header or property AMQP
    cannot carry becomes ``PayloadError``. One object per publisher, reused: nothing is
    made or checked on the success path."""

    __slots__ = ("channel",)

    def __init__(self, channel: str) -> None:
        self.channel = channel

    def __enter__(self) -> None:
        return None

    def __exit__(self, kind: Any, exc: BaseException | None, tb: Any) -> None:
        if isinstance(exc, _ENCODE_ERRORS) and _raised_by_pamqp(exc):
            raise PayloadError(
                f"Cannot send a message for channel {self.channel!r} on RabbitMQ: a header or "
                f"property cannot be encoded ({exc}). AMQP header keys are strings and values "
                "str, int, float, bool, None, datetime, Decimal, or lists and dicts of them; a "
                "correlation id is at most 255 bytes. Nothing was sent."
            ) from exc


class _RabbitPublisher(BoundPublisher):
    # ChannelInvalidStateError: the channel closed with its connection and is not
    # reopened yet (aio-pika reconnects every few seconds)
    connection_errors = (AMQPConnectionError, ChannelInvalidStateError, ConnectionError)

    def __init__(self, broker: MsgcoreRabbitBroker, publisher: MsgcoreRabbitPublisher) -> None:
        self.broker = broker
        self.publisher = publisher
        self.channel = publisher.msgcore_channel
        self._encoding = _EncodeErrors(self.channel)

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
        if priority:  # 0 is every message's priority: the same on every transport
            raise ConfigurationError(
                f"priority={priority} cannot be honoured on RabbitMQ: msgcore's group queues "
                "are quorum queues, which have no message priorities before RabbitMQ 4.0 "
                "(x-max-priority exists on classic queues only). Publish without priority, "
                "or use a separate channel for urgent messages."
            )
        with self._encoding:  # a header pamqp cannot encode: PayloadError
            body = cast("Any", message)
            due = _due(delay, not_before)
            ttl = None if due is None else bucket_ms(due - time.time())
            if ttl is None or not self.broker.is_live:
                # due now (or in memory under TestClient, where nothing waits)
                await self.publisher.publish(body, headers=headers, correlation_id=correlation_id)
                return
            assert due is not None
            state = self.broker.msgcore
            name = rabbit_delay_queue(self.channel, ttl, state.exchange)
            args = wait_queue_arguments(
                ttl, exchange=state.exchange, routing_key=rabbit_routing_key(self.channel)
            )
            channel = await self.broker.config.channel_manager.get_channel()
            if self.channel not in state.held:
                # if no group exists when it is due, it waits for the first one
                await self.publisher.hold()
                state.held.add(self.channel)
            await state.waits.ensure(channel, name, args)
            # Through the channel's publisher, so that middlewares and telemetry see it; the
            # wait queue then dead-letters it into the exchange with the channel's key.
            await self.publisher.publish(
                body,
                exchange=RabbitExchange(),
                routing_key=name,
                headers={**headers, HEADER_DUE: int(due * 1000)},
                correlation_id=correlation_id,
            )

    async def request(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        timeout: float | None,
    ) -> Any:
        timeout = timeout or self.broker.msgcore.request_timeout
        if self.broker.is_live:
            with self._encoding:
                return await self.broker.requester().request(
                    self.publisher,
                    message,
                    headers=headers,
                    correlation_id=correlation_id,
                    timeout=timeout,
                )
        try:  # TestClient: FastStream's in-memory request
            reply = await self.publisher.request(
                cast("Any", message),
                headers=headers,
                correlation_id=correlation_id,
                timeout=timeout,
            )
        except TimeoutError:
            raise RequestTimeoutError(
                f"No reply from channel {self.channel!r} within {timeout}s."
            ) from None
        return await reply.decode()


class RabbitAdapter(TransportAdapter):
    """RabbitMQ: one durable topic exchange, a quorum queue per (channel, group)."""

    name = "rabbit"

    def broker(self) -> MsgcoreRabbitBroker:
        check_exchange(self.settings.rabbit.exchange)
        return MsgcoreRabbitBroker(
            self.settings.url,
            exchange=self.settings.rabbit.exchange,
            request_timeout=self.settings.request_timeout,
            timeout=self.settings.rabbit.connect_timeout,
            **self.log_kwargs,
        )

    def native_router(
        self, *, dependencies: Sequence[Any], middlewares: Sequence[Any]
    ) -> RabbitRouter:
        return RabbitRouter(dependencies=dependencies, middlewares=middlewares)

    def publisher(
        self, native_router: RabbitRouter, channel: str, handle: PublisherHandle
    ) -> MsgcoreRabbitPublisher:
        check_names(self.settings.rabbit.exchange, channel)
        return create_channel_publisher(
            native_router, channel=channel, exchange=self.settings.rabbit.exchange, handle=handle
        )

    def bind_publisher(
        self, broker: Any, native_publisher: MsgcoreRabbitPublisher
    ) -> BoundPublisher:
        if not isinstance(broker, MsgcoreRabbitBroker):
            raise ConfigurationError(
                f"RabbitAdapter binds to the broker it built, not {type(broker).__name__}."
            )
        return _RabbitPublisher(broker, native_publisher)

    def subscribe(
        self,
        native_router: RabbitRouter,
        decl: SubscriberDeclaration,
        channel: str,
    ) -> MsgcoreRabbitSubscriber:
        check_names(self.settings.rabbit.exchange, channel, groups=(decl.group,))
        self._check_lease(channel, decl.lease_seconds)
        plan = GroupPlan(
            channel=channel,
            group=decl.group or DEFAULT_GROUP,
            exchange=self.settings.rabbit.exchange,
            retry=decl.retry,
            max_workers=decl.max_workers,
            # the channel's QoS counts the deliveries being handled too
            prefetch=(
                self.settings.rabbit.prefetch
                if decl.prefetch is None
                else decl.max_workers + decl.prefetch
            ),
            lease_seconds=decl.lease_seconds,
        )
        subscriber = create_group_subscriber(
            native_router,
            plan=plan,
            **decl.endpoint_options,
        )
        return subscriber

    def _check_lease(self, channel: str, lease_seconds: float) -> None:
        """RabbitMQ has no per-message lease: a consumer keeps its unacked messages until
        its connection closes. A worker that goes silent (frozen, its event loop blocked)
        loses them when RabbitMQ misses its heartbeats, so ``lease_seconds`` sets the
        connection's heartbeat (the smallest lease of the broker's subscribers)."""
        if not lease_seconds > 0:
            raise ConfigurationError(
                f"lease_seconds={lease_seconds} on {channel!r}: it must be positive."
            )
        heartbeat = url_heartbeat(self.settings.url)
        if heartbeat is not None and (heartbeat == 0 or heartbeat > math.ceil(lease_seconds)):
            raise ConfigurationError(
                f"lease_seconds={lease_seconds} on {channel!r} cannot hold: the amqp:// URL "
                f"sets heartbeat={heartbeat}, and on RabbitMQ a silent worker loses its "
                "messages only when the server misses its heartbeats. Drop ?heartbeat= "
                "from the URL (msgcore then derives it from lease_seconds) or lower it."
            )

    async def dead_letters(
        self, broker: Any, channel: str | None = None, *, limit: int = 100
    ) -> list[DeadLetterRecord]:
        """Dead letters of the groups this broker subscribes (of ``channel``, or all),
        oldest first. Reading leaves them in place (see ``dead_letters.py``)."""
        targets: dict[str, tuple[str, str]] = {}
        for sub in getattr(broker, "subscribers", ()):
            if isinstance(sub, MsgcoreRabbitSubscriber):
                plan = sub.plan
                if channel is None or plan.channel == channel:
                    targets[plan.dead_queue] = (plan.channel, plan.group)
        if channel is not None:
            # a group declared elsewhere cannot be listed without the management API;
            # the default group's queue is looked at anyway
            targets.setdefault(rabbit_dead_letter_queue(channel, None), (channel, DEFAULT_GROUP))
        connection = getattr(broker, "_connection", None)
        if connection is None:
            raise ConfigurationError(
                "The broker is not connected: read dead letters inside `async with broker:`."
            )
        records: list[DeadLetterRecord] = []
        for queue, (chan, group) in sorted(targets.items()):
            with contextlib.suppress(LookupError):
                records += await read_dead_letters(
                    connection, queue, channel=chan, group=group, limit=limit
                )
        records.sort(key=lambda r: r.failed_at)
        return records[:limit]
