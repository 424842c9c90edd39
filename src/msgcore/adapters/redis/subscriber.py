"""msgcore's Redis stream subscriber: FastStream's, plus retries, leases and shutdown.

On top of ``faststream.redis``'s consumer-group subscriber it

- creates its group the msgcore way (the first group of a stream starts at ``0``);
- reads the group's retry stream beside the channel's stream in one ``XREADGROUP``;
- holds what it read until settled: a heartbeat renews those entries every
  ``lease_seconds / 3``, a reclaimer hands entries of silent workers back to the group;
- dead-letters an entry delivered more than ``max_attempts`` times without being
  settled (it kills its workers), and hands back what it holds when it stops.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from faststream._internal.broker.registrator import Registrator
from faststream._internal.endpoint.subscriber.call_item import CallsCollection
from faststream._internal.endpoint.subscriber.mixins import ConcurrentMixin
from faststream.middlewares import AckPolicy
from faststream.redis.schemas import StreamSub
from faststream.redis.subscriber.config import (
    RedisSubscriberConfig,
    RedisSubscriberSpecificationConfig,
)
from faststream.redis.subscriber.specification import StreamSubscriberSpecification
from faststream.redis.subscriber.usecases.stream_subscriber import StreamSubscriber
from typing_extensions import override

from msgcore.adapters.redis import scripts
from msgcore.adapters.redis.broker import MsgcoreRedisBroker
from msgcore.adapters.redis.keys import ChannelKeys
from msgcore.adapters.redis.message import MsgcoreStreamParser
from msgcore.adapters.redis.settlement import CURRENT_DELIVERY, Settlement
from msgcore.exceptions import ConfigurationError
from msgcore.failures import ErrorRecording
from msgcore.retry import RetryPolicy
from msgcore.tasks import cancel_and_wait, wait_event

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.endpoint.subscriber import SubscriberSpecification
    from faststream._internal.types import BrokerMiddleware
    from faststream.redis.broker.router import RedisRouter
    from faststream.redis.message import UnifyRedisDict
    from faststream.redis.subscriber.usecases.stream_subscriber import ReadResponse
    from redis.asyncio import Redis

__all__ = [
    "DeliveryOptions",
    "MsgcoreConcurrentStreamSubscriber",
    "MsgcoreStreamSubscriber",
    "create_subscriber",
]


@dataclass(frozen=True)
class DeliveryOptions:
    """What msgcore adds to a stream subscriber."""

    keys: ChannelKeys
    retry: RetryPolicy
    lease_seconds: float
    maxlen: int | None
    """Cap of the channel's stream, applied when delayed messages are moved into it."""
    max_workers: int = 1
    prefetch: int | None = None
    """Entries held beyond the free handler slots (None: one read of ``max_records``
    whenever the reader is free, FastStream's way)."""


def _record_error(msg: Any, exc: BaseException) -> None:
    """Keeps the handler's exception on the entry, for retries and the dead letters."""
    if (delivery := CURRENT_DELIVERY.get()) is not None:
        delivery.error = exc


class MsgcoreStreamSubscriber(StreamSubscriber):
    """Consumes one channel as one consumer group, with msgcore's delivery guarantees."""

    def __init__(
        self,
        config: RedisSubscriberConfig,
        specification: SubscriberSpecification[Any, Any],
        calls: CallsCollection[Any],
        *,
        options: DeliveryOptions,
    ) -> None:
        super().__init__(config, specification, calls)
        self.parser = self._msgcore_parser = MsgcoreStreamParser(config)
        config.parser = self._parser = self._msgcore_parser.parse_message
        self.options = options
        self._settlement: Settlement | None = None
        self._lease_tasks: list[asyncio.Task[None]] = []
        self._reader_done: asyncio.Event | None = None
        self._started = False
        self._prefixed: tuple[str, StreamSub] | None = None
        self._recording = ErrorRecording(_record_error)
        self._freed = asyncio.Event()
        """Set when a held entry is settled: a reader waiting for room looks again."""

    @property
    def stream_sub(self) -> StreamSub:
        # FastStream deep-copies the StreamSub on every access (twice per message);
        # the prefix only changes while routers are being included, so cache by it.
        prefix = self._outer_config.prefix
        cached = self._prefixed
        if cached is None or cached[0] != prefix:
            cached = self._prefixed = (prefix, self._stream_sub.add_prefix(prefix))
        return cached[1]

    # -- plumbing -------------------------------------------------------------------------

    @property
    def _broker_middlewares(self) -> Sequence[BrokerMiddleware[UnifyRedisDict]]:
        return self._recording.around(self._outer_config.broker_middlewares)

    def _msgcore_broker(self) -> MsgcoreRedisBroker:
        broker = self._outer_config.extra_context.get("broker")
        if not isinstance(broker, MsgcoreRedisBroker):
            raise ConfigurationError(
                "A msgcore Redis subscriber runs on the broker create_broker() returns, "
                f"not on {type(broker).__name__}."
            )
        return broker

    def _log_line(self, message: str, level: int, extra: dict[str, str]) -> None:
        self._outer_config.logger.log(message, level, extra=extra)

    def _settlement_for(self, broker: MsgcoreRedisBroker) -> Settlement:
        if self._settlement is None:
            stream = self.stream_sub
            assert stream.group is not None
            assert stream.consumer is not None
            self._settlement = Settlement(
                client=lambda: self._client,
                keys=self.options.keys,
                group=stream.group,
                consumer=stream.consumer,
                retry=self.options.retry,
                lease_seconds=self.options.lease_seconds,
                message_format=self.config.message_format,
                log=self._log_line,
                on_schedule=broker.mover.wake,
            )
            self._msgcore_parser.settlement = self._settlement
        return self._settlement

    # -- lifecycle ------------------------------------------------------------------------

    @override
    async def start(self) -> None:
        if self.running:
            return
        broker = self._msgcore_broker()
        settlement = self._settlement_for(broker)
        keys = self.options.keys
        await scripts.ENSURE_GROUPS(
            self._client, [keys.stream, settlement.retry_stream], [settlement.group]
        )
        self._reader_done = asyncio.Event()
        await super().start()
        self._started = True
        broker.mover.watch(keys.delayed, keys.stream, self.options.maxlen)
        broker.mover.watch(settlement.retry_set, settlement.retry_stream, None)
        lease = self.options.lease_seconds
        self._lease_tasks = [
            asyncio.create_task(
                self._every(lease / 3, settlement.heartbeat, "renewing leases"),
                name=f"msgcore-redis-heartbeat:{keys.stream}/{settlement.group}",
            ),
            asyncio.create_task(
                self._every(min(lease / 4, 5.0), settlement.reclaim, "reclaiming"),
                name=f"msgcore-redis-reclaim:{keys.stream}/{settlement.group}",
            ),
        ]

    @override
    async def stop(self) -> None:
        self.running = False
        reader_done = self._reader_done
        if reader_done is not None and self.tasks and asyncio.current_task() not in self.tasks:
            # The read loop sees running=False within one XREADGROUP block; what it
            # read by then is held and handed back below instead of being cut off.
            await wait_event(reader_done, self.stream_sub.polling_interval / 1000 + 0.5)
        # Waits up to graceful_timeout for running handlers (the heartbeat keeps their
        # entries), then cancels the read loop and what still runs ...
        fs_tasks = list(self.tasks)
        await super().stop()
        # ... without waiting for them: do, so that nothing settles behind our back.
        await cancel_and_wait(fs_tasks)
        if not self._started:
            return
        self._started = False
        settlement = self._settlement
        assert settlement is not None
        try:
            await settlement.release()
        finally:
            tasks, self._lease_tasks = self._lease_tasks, []
            await cancel_and_wait(tasks)
        with contextlib.suppress(Exception):
            broker = self._msgcore_broker()
            broker.mover.unwatch(self.options.keys.delayed)
            broker.mover.unwatch(settlement.retry_set)
        with contextlib.suppress(Exception):
            await scripts.DROP_CONSUMER(
                self._client,
                [self.options.keys.stream, settlement.retry_stream],
                [settlement.group, settlement.consumer],
            )

    async def _every(
        self, seconds: float, action: Callable[[], Awaitable[object]], what: str
    ) -> None:
        while self._started:
            await asyncio.sleep(seconds)
            if not self._started:
                return
            try:
                await action()
            except Exception as exc:  # the next round retries; leases have slack for it
                self._log_line(
                    f"{what} failed, retrying: {exc!r}",
                    logging.WARNING,
                    self.get_log_context(None),
                )

    # -- reading --------------------------------------------------------------------------

    @override
    async def _consume(self, *args: Any, start_signal: Any) -> None:
        try:
            await super()._consume(*args, start_signal=start_signal)
        finally:
            if self._reader_done is not None and not self.running:
                self._reader_done.set()

    @override
    async def _xreadgroup(
        self,
        *,
        count: int | None,
        block: int | None,
        noack: bool = False,
    ) -> ReadResponse:
        settlement = self._settlement
        if settlement is None or not self.calls:
            return await super()._xreadgroup(count=count, block=block, noack=noack)
        stream = self.stream_sub
        assert stream.group is not None
        assert stream.consumer is not None
        if self.options.prefetch is not None:
            count = await self._room(settlement)
            if not self.running:
                return cast("ReadResponse", ())
        client: Redis = self._client
        response: Any = await client.xreadgroup(
            groupname=stream.group,
            consumername=stream.consumer,
            streams={stream.name: self.read_id, settlement.retry_stream: ">"},
            count=count,
            block=block,
        )
        for name, entries in response or ():
            settlement.hold(name.decode() if isinstance(name, bytes) else name, entries)
        return cast("ReadResponse", response or ())

    async def _room(self, settlement: Settlement) -> int:
        """Entries to read now: free handler slots plus ``prefetch``, so that this
        consumer holds at most ``max_workers + prefetch``. With no room it waits for a
        handler to finish: an entry nobody read stays in the stream, for another
        worker or a cancel. (The retry stream is read beside the channel's: COUNT
        applies to each, so a read may bring one retried entry more.)"""
        limit = self.options.max_workers + (self.options.prefetch or 0)
        while self.running:
            room = limit - settlement.holding
            if room > 0:
                return room
            self._freed.clear()
            # settled entries set the event; the timeout also catches a release or a
            # reclaim that shrank what is held
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.stream_sub.polling_interval / 1000):
                    await self._freed.wait()
        return 1

    @override
    async def consume(self, msg: Any) -> Any:
        settlement = self._settlement
        ids = msg.get("message_ids") if isinstance(msg, dict) else None
        delivery = settlement.find(msg["channel"], ids[0]) if settlement and ids else None
        if settlement is None or delivery is None:
            return await super().consume(msg)
        if not self.running:
            return None  # still held: handed back to the group by stop()
        retry = self.options.retry
        if delivery.attempt > retry.max_attempts:
            # Delivered again and again without ever being settled: its handler kills
            # or hangs the worker. Stop the crash loop.
            reason = (
                f"delivered {delivery.attempt} times without being settled "
                f"(max_attempts={retry.max_attempts}): the worker crashed or lost "
                "its lease while handling it"
            )
            try:
                await settlement.dead_letter(delivery, reason=reason)
                if (jobs := getattr(self, "msgcore_jobs", None)) is not None:
                    _, headers = self.config.message_format.parse(delivery.envelope())
                    await jobs.crash_loop(headers, attempt=delivery.attempt, reason=reason)
            except Exception as exc:
                settlement.forget(delivery)
                self._log_line(
                    f"dead-lettering failed; the message comes back after its lease: {exc!r}",
                    logging.ERROR,
                    self.get_log_context(None),
                )
            return None
        delivery.started = True
        token = CURRENT_DELIVERY.set(delivery)
        cancelled = False
        try:
            return await super().consume(msg)
        except asyncio.CancelledError:
            cancelled = True  # stop() hands it back, counted as a delivery
            raise
        finally:
            CURRENT_DELIVERY.reset(token)
            if not cancelled:
                # Settled, or settling failed (Redis unreachable): either way stop
                # renewing it, so that an unsettled entry is reclaimed after its lease.
                settlement.forget(delivery)
                self._freed.set()


class MsgcoreConcurrentStreamSubscriber(ConcurrentMixin[Any], MsgcoreStreamSubscriber):
    """``max_workers`` handlers at once, as FastStream's ``StreamConcurrentSubscriber``."""

    @override
    async def start(self) -> None:
        if self.running:
            return
        await super().start()
        self.start_consume_task()

    @override
    async def consume_one(self, msg: Any) -> None:
        await self._put_msg(msg)


def create_subscriber(
    router: RedisRouter,
    *,
    stream: StreamSub,
    options: DeliveryOptions,
    max_workers: int,
    no_reply: bool,
    title: str | None,
    description: str | None,
    include_in_schema: bool,
    dependencies: Sequence[Dependant],
) -> MsgcoreStreamSubscriber:
    """Register a msgcore stream subscriber on ``router``, as ``router.subscriber(stream=…)``."""
    outer = cast("Any", router.config)
    config = RedisSubscriberConfig(
        stream_sub=stream,
        no_reply=no_reply,
        _outer_config=outer,
        # failures are retried, then dead-lettered: never dropped
        _ack_policy=AckPolicy.NACK_ON_ERROR,
    )
    specification = StreamSubscriberSpecification(
        outer,
        RedisSubscriberSpecificationConfig(
            title_=title, description_=description, include_in_schema=include_in_schema
        ),
        calls := CallsCollection[Any](),
        stream_sub=stream,
    )
    subscriber: MsgcoreStreamSubscriber
    if max_workers > 1:
        subscriber = MsgcoreConcurrentStreamSubscriber(
            config, specification, calls, options=options, max_workers=max_workers
        )
    else:
        subscriber = MsgcoreStreamSubscriber(config, specification, calls, options=options)
    # The generic registration: RedisRegistrator.subscriber builds FastStream's own kinds.
    Registrator.subscriber(router, subscriber, persistent=True)
    subscriber.add_call(parser_=None, decoder_=None, dependencies_=dependencies)
    return subscriber
