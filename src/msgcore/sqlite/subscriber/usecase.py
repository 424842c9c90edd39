"""The SQLite subscriber: claims leased rows and runs handlers on them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING, Any

from faststream._internal.endpoint.subscriber import SubscriberUsecase
from faststream._internal.endpoint.utils import process_msg
from typing_extensions import override

from msgcore.exceptions import StorageError
from msgcore.failures import ErrorRecording
from msgcore.sqlite.client.base import StoredMessage
from msgcore.sqlite.parser import SqliteParser
from msgcore.sqlite.publisher.fake import SqliteFakePublisher
from msgcore.sqlite.subscriber.settlement import CURRENT_DELIVERY, Settlement

if TYPE_CHECKING:
    from faststream._internal.endpoint.publisher import PublisherProto
    from faststream._internal.endpoint.subscriber import SubscriberSpecification
    from faststream._internal.endpoint.subscriber.call_item import CallsCollection
    from faststream._internal.types import BrokerMiddleware
    from faststream.message import StreamMessage

    from msgcore.sqlite.broker.config import SqliteBrokerConfig
    from msgcore.sqlite.message import SqliteMessage
    from msgcore.sqlite.subscriber.config import SqliteSubscriberConfig


def _record_error(msg: Any, exc: BaseException) -> None:
    """Keeps the handler's exception on the row, for nack and the dead-letter table."""
    if isinstance(msg, StoredMessage):
        msg.error = exc


def _seconds_until(due: float | None) -> float | None:
    return None if due is None else max(due - time.time(), 0.0) + 0.001


class SqliteSubscriber(SubscriberUsecase[StoredMessage]):
    """Consumes one queue as one group: workers in a group compete, groups fan out."""

    _outer_config: SqliteBrokerConfig

    def __init__(
        self,
        config: SqliteSubscriberConfig,
        specification: SubscriberSpecification[Any, Any],
        calls: CallsCollection[StoredMessage],
    ) -> None:
        parser = SqliteParser()
        config.parser = parser.parse_message
        config.decoder = parser.decode_message
        super().__init__(config, specification, calls)
        self._queue = config.queue
        self.group = config.group
        self.max_workers = config.max_workers
        self.prefetch = config.prefetch
        self.lease_seconds = config.lease_seconds
        self.retry = config.retry

        self._buffer: deque[StoredMessage] = deque()
        self._handlers: set[asyncio.Task[None]] = set()
        self._limiter = asyncio.Semaphore(self.max_workers)
        self._loop_task: asyncio.Task[None] | None = None
        self._heartbeat_task: asyncio.Task[None] | None = None
        self._event: asyncio.Event | None = None
        self._settlement: Settlement | None = None
        self._group_registered = False
        self._recording = ErrorRecording(_record_error)

    @property
    def queue(self) -> str:
        return f"{self._outer_config.prefix}{self._queue}"

    @property
    def _broker_middlewares(self) -> Sequence[BrokerMiddleware[StoredMessage]]:
        return self._recording.around(self._outer_config.broker_middlewares)

    @override
    def _make_response_publisher(
        self, message: StreamMessage[StoredMessage]
    ) -> Sequence[PublisherProto]:
        return (SqliteFakePublisher(self._outer_config.producer, queue=message.reply_to),)

    @staticmethod
    def build_log_context(
        message: StreamMessage[Any] | None, queue: str = "", group: str = ""
    ) -> dict[str, str]:
        return {
            "queue": queue,
            "group": group,
            "message_id": getattr(message, "message_id", "") or "",
        }

    @override
    def get_log_context(self, message: StreamMessage[Any] | None) -> dict[str, str]:
        return self.build_log_context(message, self.queue, self.group)

    # -- lifecycle ------------------------------------------------------------------

    async def _setup_consumer(self) -> Settlement:
        if self._settlement is None:
            transport = self._outer_config.transport
            self._settlement = Settlement(
                transport, retry=self.retry, lease_seconds=self.lease_seconds, log=self._log_line
            )
        if not self._group_registered:
            await self._outer_config.transport.register_group(self.queue, self.group)
            self._group_registered = True
        return self._settlement

    def _log_line(self, message: str, level: int, extra: dict[str, str]) -> None:
        self._outer_config.logger.log(message, level, extra=extra)

    @override
    async def start(self) -> None:
        await super().start()
        # Registered for handler-less subscribers too (get_one, iteration): messages
        # published from now on are kept for this group.
        await self._setup_consumer()
        self._heartbeat_task = asyncio.create_task(
            self._heartbeat_loop(), name=f"msgcore-sqlite-heartbeat:{self.queue}"
        )
        if self.calls:
            self._event = self._outer_config.notifier.watch(self.queue)
            self._loop_task = asyncio.create_task(
                self._consume_loop(), name=f"msgcore-sqlite-consume:{self.queue}/{self.group}"
            )
        self._post_start()

    @override
    async def stop(self) -> None:
        self.running = False
        if self._event is not None:
            self._event.set()
        if self._settlement is not None and self._buffer:
            # Claimed but not started: another worker can take them now rather than
            # after this worker's grace period.
            leftovers = list(self._buffer)
            self._buffer.clear()
            await self._settlement.release(leftovers, started=False)
        # Waits up to graceful_timeout for running handlers; the heartbeat keeps
        # their leases alive meanwhile.
        await super().stop()

        if self._loop_task is not None:
            # The loop ends by itself once it sees running=False; cancelling it inside
            # a claim would leave freshly leased rows without an owner until they expire.
            _, pending = await asyncio.wait({self._loop_task}, timeout=2.0)
            for task in pending:
                task.cancel()
            await asyncio.gather(self._loop_task, return_exceptions=True)
            self._loop_task = None
        for task in list(self._handlers):
            task.cancel()
        await asyncio.gather(*self._handlers, return_exceptions=True)

        if self._settlement is not None:
            await self._settlement.release(list(self._buffer), started=False)
            self._buffer.clear()
            await self._settlement.wait_settled()
        if self._heartbeat_task is not None:
            self._heartbeat_task.cancel()
            await asyncio.gather(self._heartbeat_task, return_exceptions=True)
            self._heartbeat_task = None
        if self._event is not None:
            with contextlib.suppress(Exception):
                self._outer_config.notifier.unwatch(self.queue, self._event)
            self._event = None

    # -- consuming --------------------------------------------------------------------

    async def _consume_loop(self) -> None:
        assert self._settlement is not None
        assert self._event is not None
        settlement, event = self._settlement, self._event
        transport = self._outer_config.transport
        notifier = self._outer_config.notifier
        failures = 0
        drained, next_due = False, None
        try:
            while self.running:
                if not self._buffer:
                    if drained and not event.is_set():
                        # The last claim emptied the queue; anything new sets the event
                        # (local commits at once, other processes via the notifier's poll).
                        await notifier.wait(event, _seconds_until(next_due))
                        if not self.running:
                            break
                    limit = await self._room()
                    if not self.running:
                        break
                    event.clear()
                    try:
                        claim = await transport.claim(
                            self.queue,
                            self.group,
                            limit=limit,
                            lease_seconds=self.lease_seconds,
                            worker_id=self._outer_config.worker_id,
                        )
                    except StorageError as exc:
                        failures += 1
                        self._log_line(
                            f"claiming failed (try {failures}), retrying: {exc}",
                            logging.WARNING,
                            self.get_log_context(None),
                        )
                        await asyncio.sleep(min(0.05 * 2**failures, 2.0))
                        continue
                    failures = 0
                    drained, next_due = claim.drained, claim.next_due
                    if not claim.messages:
                        continue
                    settlement.hold(claim.messages)
                    self._buffer.extend(claim.messages)
                    if not self.running:
                        break

                msg = self._buffer.popleft()
                if self.max_workers == 1:
                    await self._consume_guarded(msg)
                    if not self._buffer:
                        # Let the ack's commit reach the database thread before the next
                        # claim probe does: replies and onward messages go out sooner.
                        await asyncio.sleep(0)
                    continue
                await self._limiter.acquire()
                if not self.running:
                    self._limiter.release()
                    self._buffer.appendleft(msg)
                    break
                task = asyncio.create_task(self._consume_one(msg))
                self._handlers.add(task)
                task.add_done_callback(self._handlers.discard)
        finally:
            leftovers = list(self._buffer)
            self._buffer.clear()
            if leftovers:
                await asyncio.shield(settlement.release(leftovers, started=False))

    async def _room(self) -> int:
        """Rows to claim now: free handler slots plus ``prefetch``, so that this worker
        holds at most ``max_workers + prefetch`` rows. With no room (``prefetch=0`` and
        every slot busy) it waits for a handler to finish: a row nobody holds stays
        with the queue, for another worker or a cancel."""
        while True:
            room = self.max_workers - len(self._handlers) + self.prefetch
            if room > 0 or not self._handlers or not self.running:
                return max(room, 1)
            await asyncio.wait(set(self._handlers), return_when=asyncio.FIRST_COMPLETED)

    async def _consume_one(self, msg: StoredMessage) -> None:
        try:
            await self._consume_guarded(msg)
        finally:
            self._limiter.release()

    async def _consume_guarded(self, msg: StoredMessage) -> None:
        # Handler errors never get here (FastStream settles and logs them); this catches
        # our own settlement failing, so that one bad moment never ends the subscriber.
        try:
            await self.consume(msg)
        except Exception as exc:
            self._log_line(
                f"settling failed; the message is delivered again after its lease: {exc!r}",
                logging.ERROR,
                self.get_log_context(None),
            )

    @override
    async def consume(self, msg: StoredMessage) -> Any:
        settlement = self._settlement
        if settlement is None:  # test broker: nothing to settle
            return await super().consume(msg)
        if not self.running:
            await settlement.release([msg], started=False)
            return None
        msg.settlement = settlement
        if msg.attempts > self.retry.max_attempts:
            # Delivered again and again without ever being settled: its handler kills
            # or hangs the worker. Stop the crash loop.
            reason = (
                f"delivered {msg.attempts} times without being settled (max_attempts="
                f"{self.retry.max_attempts}): the worker crashed or lost its lease "
                "while handling it"
            )
            with contextlib.suppress(StorageError):  # else: back after its lease, retried then
                await settlement.dead_letter(msg, reason=reason)
                if (jobs := getattr(self, "msgcore_jobs", None)) is not None:
                    await jobs.crash_loop(msg.headers, attempt=msg.attempts, reason=reason)
            return None
        msg.started = True
        if self._outer_config.producer.transactional:
            msg.outbox = []
        token = CURRENT_DELIVERY.set(msg)
        try:
            return await super().consume(msg)
        except asyncio.CancelledError:
            # Shutdown cancelled the handler after graceful_timeout: hand the row back now
            # instead of leaving it leased until the lease expires.
            if not msg.settled:
                await asyncio.shield(settlement.release([msg], started=True))
            raise
        finally:
            CURRENT_DELIVERY.reset(token)

    async def _heartbeat_loop(self) -> None:
        assert self._settlement is not None
        while True:
            await asyncio.sleep(self.lease_seconds / 3)
            try:
                await self._settlement.renew()
            except Exception as exc:  # next beat retries; the lease has slack for two misses
                self._log_line(
                    f"renewing leases failed, retrying: {exc}",
                    logging.WARNING,
                    self.get_log_context(None),
                )

    # -- pulling ----------------------------------------------------------------------

    async def _pull(self, seconds: float) -> StoredMessage | None:
        settlement = await self._setup_consumer()
        transport = self._outer_config.transport
        notifier = self._outer_config.notifier
        event = notifier.watch(self.queue)
        deadline = time.monotonic() + seconds
        try:
            while True:
                event.clear()
                claim = await transport.claim(
                    self.queue,
                    self.group,
                    limit=1,
                    lease_seconds=self.lease_seconds,
                    worker_id=self._outer_config.worker_id,
                )
                if claim.messages:
                    msg = claim.messages[0]
                    settlement.hold([msg])
                    msg.settlement = settlement
                    return msg
                left = deadline - time.monotonic()
                if left <= 0:
                    return None
                due = _seconds_until(claim.next_due)
                await notifier.wait(event, left if due is None else min(left, due))
        finally:
            notifier.unwatch(self.queue, event)

    async def _parse(self, raw: StoredMessage) -> SqliteMessage:
        context = self._outer_config.context
        async_parser, async_decoder = self._get_parser_and_decoder()
        msg: SqliteMessage = await process_msg(  # type: ignore[assignment]
            msg=raw,
            middlewares=(m(raw, context=context) for m in self._broker_middlewares),
            parser=async_parser,
            decoder=async_decoder,
        )
        return msg

    @override
    async def get_one(self, *, timeout: float = 5.0) -> SqliteMessage | None:
        """Claim one message, or ``None`` after ``timeout`` seconds.

        The message is leased to you: ``ack()`` it when done, ``nack()`` to retry it
        later; if you do neither it is delivered again once its lease expires.
        """
        assert not self.calls, (
            "You can't use `get_one` method if subscriber has registered handlers."
        )
        raw = await self._pull(timeout)
        return None if raw is None else await self._parse(raw)

    @override
    async def __aiter__(self) -> AsyncIterator[SqliteMessage]:
        assert not self.calls, "You can't use iterator if subscriber has registered handlers."
        while True:
            raw = await self._pull(3600.0)
            if raw is not None:
                yield await self._parse(raw)
