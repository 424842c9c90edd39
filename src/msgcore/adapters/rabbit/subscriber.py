"""The subscriber of one msgcore group queue on RabbitMQ."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

from faststream._internal.broker.registrator import Registrator
from faststream._internal.endpoint.subscriber.call_item import CallsCollection
from faststream.middlewares import AckPolicy
from faststream.rabbit.schemas import Channel, QueueType, RabbitQueue
from faststream.rabbit.subscriber.config import (
    RabbitSubscriberConfig,
    RabbitSubscriberSpecificationConfig,
)
from faststream.rabbit.subscriber.specification import RabbitSubscriberSpecification
from faststream.rabbit.subscriber.usecase import RabbitSubscriber
from typing_extensions import override

from msgcore.adapters.rabbit.message import MsgcoreParser, attempt_of, due_of
from msgcore.adapters.rabbit.settlement import CURRENT_DELIVERY, Delivery, Settler
from msgcore.adapters.rabbit.topology import (
    WaitQueues,
    dead_queue_arguments,
    group_queue_arguments,
    topic_exchange,
)
from msgcore.adapters.rabbit.unrouted import adopt
from msgcore.failures import ErrorRecording
from msgcore.naming import rabbit_dead_letter_queue, rabbit_group_queue, rabbit_routing_key

if TYPE_CHECKING:
    from aio_pika import IncomingMessage
    from fast_depends.dependencies import Dependant
    from faststream._internal.types import BrokerMiddleware
    from faststream.rabbit.broker.router import RabbitRouter
    from faststream.rabbit.configs import RabbitBrokerConfig

    from msgcore.retry import RetryPolicy

__all__ = ["GroupPlan", "MsgcoreRabbitSubscriber", "create_group_subscriber"]


@dataclass(frozen=True)
class GroupPlan:
    """What msgcore consumes: one channel as one group."""

    channel: str
    group: str
    exchange: str
    retry: RetryPolicy
    max_workers: int
    prefetch: int
    lease_seconds: float = 30.0
    """How long the worker may go silent: the connection's AMQP heartbeat (see broker)."""

    @property
    def queue(self) -> str:
        return rabbit_group_queue(self.channel, self.group)

    @property
    def dead_queue(self) -> str:
        return rabbit_dead_letter_queue(self.channel, self.group)


def _record_error(msg: Any, exc: BaseException) -> None:
    """Keeps the handler's exception on the delivery, for the retry decision and the
    dead letter's error text."""
    delivery = CURRENT_DELIVERY.get()
    if delivery is not None and delivery.raw is msg:
        delivery.error = exc


class MsgcoreRabbitSubscriber(RabbitSubscriber):
    """Consumes a group's quorum queue with msgcore's settlement.

    - at most ``max_workers`` handlers at once, and ``prefetch`` deliveries unsettled
      in this process, running ones included (the channel's QoS; at least
      ``max_workers``);
    - a failure is retried after the backoff through a wait queue, for this group
      only; after ``max_attempts`` (or at once for an invalid payload, a reject) the
      message moves to the group's dead-letter queue;
    - a delivery the quorum queue counts as redelivered more than ``max_attempts``
      times (its worker died on it) is dead-lettered without running it again;
    - on stop, consuming is cancelled first, running handlers finish (up to
      ``graceful_timeout``, then they are cancelled and their messages go back, counted)
      and deliveries not started go back uncounted.
    """

    def __init__(
        self,
        config: RabbitSubscriberConfig,
        specification: RabbitSubscriberSpecification,
        calls: CallsCollection[IncomingMessage],
        *,
        plan: GroupPlan,
    ) -> None:
        super().__init__(config, specification=specification, calls=calls)
        self._parser = MsgcoreParser(pattern=config.queue.path_regex).parse_message
        self.plan = plan
        self._settler: Settler | None = None
        self._slots: asyncio.Condition | None = None
        self._cancelled = asyncio.Event()
        self._active = 0
        self._tasks: set[asyncio.Task[Any]] = set()
        self._recording = ErrorRecording(_record_error)

    @property
    def _broker_middlewares(self) -> Sequence[BrokerMiddleware[IncomingMessage]]:
        return self._recording.around(self._outer_config.broker_middlewares)

    def get_log_context(self, message: Any) -> dict[str, str]:
        context = super().get_log_context(message)
        context["group"] = self.plan.group
        return context

    def _log_line(self, text: str, level: int) -> None:
        self._outer_config.logger.log(text, level, extra=self.get_log_context(None))

    # -- lifecycle ----------------------------------------------------------------------

    @override
    async def start(self) -> None:
        if self.running:
            return
        config = self._outer_config
        broker = config.extra_context.get("broker")
        waits = getattr(getattr(broker, "msgcore", None), "waits", None)
        if not isinstance(waits, WaitQueues):
            waits = WaitQueues()
        await config.declarer.declare_queue(
            RabbitQueue(
                self.plan.dead_queue,
                QueueType.QUORUM,
                durable=True,
                arguments=cast("Any", dead_queue_arguments()),
            ),
            channel=self.channel,
        )
        self._settler = Settler(
            get_channel=config.channel_manager.get_channel,
            waits=waits,
            queue=self.plan.queue,
            dead_queue=self.plan.dead_queue,
            channel=self.plan.channel,
            group=self.plan.group,
            retry=self.plan.retry,
            log=self._log_line,
        )
        self._slots = asyncio.Condition()
        self._cancelled = asyncio.Event()
        self._active = 0
        await super().start()
        # bound now: what was published before any group existed comes to this one
        connection = getattr(broker, "_connection", None)
        if connection is not None:
            moved = await adopt(
                connection,
                exchange=self.plan.exchange,
                channel=self.plan.channel,
                queue=self.plan.queue,
            )
            if moved:
                self._log_line(
                    f"took {moved} message(s) published to {self.plan.channel!r} before any "
                    "group existed",
                    logging.INFO,
                )

    @override
    async def stop(self) -> None:
        began = time.monotonic()
        self.running = False
        # No new deliveries while running handlers finish: without this, every ack would
        # let RabbitMQ deliver another message that would only be handed back.
        queue, tag = self._queue_obj, self._consumer_tag
        if queue is not None and tag is not None:
            self._consumer_tag = None
            if not queue.channel.is_closed:
                with contextlib.suppress(Exception):
                    await queue.cancel(tag)
        # Deliveries that arrived before the cancel was confirmed start their tasks now
        # (aio-pika starts each in a task of its own): let them register in _tasks.
        for _ in range(3):
            await asyncio.sleep(0)
        self._cancelled.set()
        if self._slots is not None:
            async with self._slots:
                self._slots.notify_all()
        await super().stop()  # waits up to graceful_timeout for running handlers
        if self._tasks:
            # hand-backs still publishing, and handlers past graceful_timeout: those are
            # cancelled and their messages go back to the queue (counted as an attempt)
            graceful = self._outer_config.graceful_timeout
            left = None if graceful is None else max(graceful - (time.monotonic() - began), 0.1)
            _, late = await asyncio.wait(set(self._tasks), timeout=left)
            for task in late:
                task.cancel()
            if late:
                await asyncio.wait(late, timeout=5.0)
        self._settler = None

    # -- consuming ------------------------------------------------------------------------

    @override
    async def consume(self, msg: IncomingMessage) -> Any:
        settler = self._settler
        if settler is None:  # not started by us: FastStream's behaviour
            return await super().consume(msg)
        task = asyncio.current_task()
        if task is not None:
            self._tasks.add(task)
        try:
            return await self._consume(settler, msg)
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _consume(self, settler: Settler, msg: IncomingMessage) -> Any:
        delivery = Delivery(msg, attempt_of(msg.headers), settler)
        due = due_of(msg.headers)
        if due is not None and due > time.time():
            await settler.park(delivery, due)
            return None
        limit = self.plan.retry.max_attempts
        if delivery.attempt > limit:
            # Delivered again and again without ever being settled: its handler kills or
            # hangs the worker. Stop the crash loop.
            reason = (
                f"delivered {delivery.attempt} times without being settled "
                f"(max_attempts={limit}): the worker crashed or lost its connection "
                "while handling it"
            )
            await settler.dead_letter(delivery, reason=reason)
            if (jobs := getattr(self, "msgcore_jobs", None)) is not None:
                await jobs.crash_loop(msg.headers, attempt=delivery.attempt, reason=reason)
            return None
        if not await self._acquire():
            await self._hand_back(settler, delivery)
            return None
        try:
            if not self.running:
                await self._hand_back(settler, delivery)
                return None
            delivery.started = True
            token = CURRENT_DELIVERY.set(delivery)
            try:
                result = await super().consume(msg)
            except asyncio.CancelledError:
                # cancelled past graceful_timeout or by a closing channel: back to the
                # queue now (counted as an attempt, as a crash would be)
                await asyncio.shield(settler.release(delivery))
                raise
            finally:
                CURRENT_DELIVERY.reset(token)
            if delivery.open:
                # FastStream returned without settling (it stopped meanwhile)
                await self._hand_back(settler, delivery)
            return result
        finally:
            await self._release()

    async def _hand_back(self, settler: Settler, delivery: Delivery) -> None:
        # The copy goes to this very queue: publish it only once RabbitMQ has stopped
        # delivering to this consumer, or it could come straight back here and be
        # returned (and counted) when the channel closes.
        await self._cancelled.wait()
        await settler.hand_back(delivery)

    async def _acquire(self) -> bool:
        slots = self._slots
        if slots is None:
            return False
        async with slots:
            await slots.wait_for(lambda: not self.running or self._active < self.plan.max_workers)
            if not self.running:
                return False
            self._active += 1
            return True

    async def _release(self) -> None:
        slots = self._slots
        if slots is None:
            return
        async with slots:
            self._active -= 1
            slots.notify()


def create_group_subscriber(
    router: RabbitRouter,
    *,
    plan: GroupPlan,
    no_reply: bool,
    dependencies: Sequence[Dependant],
    title: str | None,
    description: str | None,
    include_in_schema: bool,
) -> MsgcoreRabbitSubscriber:
    """Declare the subscriber of ``plan`` on ``router`` (as ``router.subscriber()`` does
    for FastStream's own)."""
    queue = RabbitQueue(
        plan.queue,
        QueueType.QUORUM,
        durable=True,
        routing_key=rabbit_routing_key(plan.channel),
        arguments=cast("Any", group_queue_arguments(plan.channel, plan.group)),
    )
    exchange = topic_exchange(plan.exchange)
    config = cast("RabbitBrokerConfig", router.config)
    subscriber_config = RabbitSubscriberConfig(
        no_reply=no_reply,
        consume_args=None,
        # One channel per subscriber: its QoS (prefetch) is this subscriber's alone.
        channel=Channel(prefetch_count=max(plan.prefetch, plan.max_workers)),
        queue=queue,
        exchange=exchange,
        _ack_policy=AckPolicy.NACK_ON_ERROR,
        _outer_config=config,
    )
    calls = CallsCollection[Any]()
    specification = RabbitSubscriberSpecification(
        _outer_config=config,
        specification_config=RabbitSubscriberSpecificationConfig(
            title_=title,
            description_=description,
            include_in_schema=include_in_schema,
            queue=queue,
            exchange=exchange,
        ),
        calls=calls,
    )
    subscriber = MsgcoreRabbitSubscriber(
        subscriber_config, specification=specification, calls=calls, plan=plan
    )
    Registrator.subscriber(router, subscriber, persistent=True)
    subscriber.add_call(parser_=None, decoder_=None, dependencies_=dependencies)
    return subscriber
