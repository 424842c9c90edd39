"""The worker side of job tracking.

Every handler declared on a ``msgcore.Router`` records the life of the job whose id
rides in its message (``x-msgcore-job-id``): ``running`` when an attempt starts, then
``completed`` with the result, ``retrying`` with the error, or ``dead``. The record is
written before the transport settles the message, so a worker that dies in between
leaves a record the redelivery finds: a completed job is not run again (its stored
result is published onward instead) and a running one simply starts its next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, HandlerException, NackMessage, RejectMessage
from opentelemetry import trace

from msgcore.cache.keys import body_value, cache_key
from msgcore.cache.policy import ChannelCache
from msgcore.constants import DEFAULT_GROUP, HEADER_CACHE_BYPASS, HEADER_JOB_ID
from msgcore.exceptions import CacheKeyError, LockTimeoutError
from msgcore.failures import INVALID_PAYLOAD, ErrorRecorder, RecordError
from msgcore.jobs.codec import decode_result, encode_result
from msgcore.jobs.outages import through_store_outage
from msgcore.locks.lock import acquire
from msgcore.locks.policy import ChannelLock
from msgcore.message import MessageView
from msgcore.store import JobStatus, Store, store_for
from msgcore.store.base import AttemptOutcome, completed_outcome
from msgcore.store.cache import CacheCheck, CacheFill
from msgcore.telemetry.naming import (
    ATTR_ATTEMPT,
    ATTR_CACHE,
    ATTR_CHANNEL,
    ATTR_JOB_ID,
    ATTR_LOCK_KEY,
    ATTR_LOCK_WAIT,
    EVENT_DEAD_LETTER,
    LOCK_WAIT_DURATION,
)

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from opentelemetry.trace import Tracer

    from msgcore.router import SubscriberDeclaration
    from msgcore.settings import Settings
    from msgcore.telemetry.setup import Telemetry

__all__ = ["JobTracker", "worker_id"]

logger = logging.getLogger("msgcore.jobs")
cache_logger = logging.getLogger("msgcore.cache")

_ERROR_TEXT_LIMIT = 4000
# Expired records are deleted by a worker at most this often (Redis expires by itself).
_PURGE_EVERY = 600.0
# Lock waits in seconds: from a free key (a store round trip) to a long wait's timeout.
_LOCK_WAIT_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0, 10.0, 30.0, 60.0, 300.0)


_WORKER_ID: list[tuple[int, str]] = []


def worker_id() -> str:
    """``host:pid`` of this process, as job records name their worker."""
    pid = os.getpid()
    if not _WORKER_ID or _WORKER_ID[0][0] != pid:  # first call, or a forked child
        _WORKER_ID[:] = [(pid, f"{socket.gethostname()}:{pid}")]
    return _WORKER_ID[0][1]


class _Metrics:
    """msgcore's counters beside FastStream's messaging metrics."""

    def __init__(self, telemetry: Telemetry) -> None:
        meter = telemetry.meter_provider.get_meter("msgcore")
        self.cache_hits = meter.create_counter(
            "msgcore.cache.hits", unit="{message}", description="Results given from the cache"
        )
        self.cache_misses = meter.create_counter(
            "msgcore.cache.misses", unit="{message}", description="Handler runs that filled it"
        )
        self.dead_letters = meter.create_counter(
            "msgcore.dead_letters", unit="{message}", description="Jobs dead-lettered"
        )
        self.lock_wait = meter.create_histogram(
            LOCK_WAIT_DURATION,
            unit="s",
            description="Time a locked handler's message waited for its key",
            explicit_bucket_boundaries_advisory=_LOCK_WAIT_BUCKETS,
        )

    def cache(self, channel: str, outcome: str) -> None:
        if outcome == "hit":
            self.cache_hits.add(1, {ATTR_CHANNEL: channel})
        elif outcome == "miss":
            self.cache_misses.add(1, {ATTR_CHANNEL: channel})


@dataclass(frozen=True)
class _Tracked:
    decl: SubscriberDeclaration
    channel: str
    cache: ChannelCache | None
    """The channel's cache policy (None: no cache, or MSGCORE_CACHE__ENABLED=false)."""
    lock: ChannelLock | None = None
    """The channel's per-key lock (None: not locked)."""


class JobTracker:
    """Holds the store of one broker's workers and the declarations it tracks."""

    def __init__(self, settings: Settings, *, telemetry: Telemetry | None = None) -> None:
        self.settings = settings
        self.telemetry = telemetry
        self.tracer = None if telemetry is None else telemetry.tracer_provider.get_tracer("msgcore")
        self.metrics = None if telemetry is None else _Metrics(telemetry)
        self.retention = settings.jobs.result_ttl
        self._store: Store | None = None
        self._opening: asyncio.Lock | None = None
        self.track_jobs = settings.jobs.track
        self.use_cache = settings.cache.enabled
        self._declarations: dict[int, _Tracked] = {}
        self.running = 0
        """Jobs whose attempt is under way in this process (their store writes of one
        may be committed together)."""
        self._purged_at = time.monotonic()
        self._purging: asyncio.Task[None] | None = None
        self.middleware = _JobMiddlewares(self)
        """The router middleware factory FastStream calls once per message."""

    def track(self, subscriber: Any, decl: SubscriberDeclaration, channel: str) -> None:
        cache = None
        if decl.cache is not None and self.use_cache:
            cache = decl.cache.resolve(channel, self.settings)
        lock = None if decl.lock is None else decl.lock.resolve(channel, self.settings)
        self._declarations[id(subscriber)] = _Tracked(decl, channel, cache, lock)
        # the transports' subscribers report crash loops through this attribute
        subscriber.msgcore_jobs = self

    async def crash_loop(self, headers: Mapping[str, Any], *, attempt: int, reason: str) -> None:
        """A transport dead-lettered a message without running its handler (it crashed
        its workers ``attempt - 1`` times): the job is ``dead``, not ``running`` forever."""
        job_id = headers.get(HEADER_JOB_ID)
        if not job_id:
            return
        try:
            store = await self.store()
            await store.finish_attempt(
                str(job_id),
                AttemptOutcome(
                    status=JobStatus.DEAD,
                    attempt=attempt,
                    now=time.time(),
                    retention=self.retention,
                    error_type="CrashLoop",
                    error_message=reason,
                ),
            )
        except Exception as exc:  # the message is dead-lettered either way
            logger.error(
                "job %s: recording the crash loop failed: %r",
                job_id,
                exc,
                extra={"job_id": job_id},
            )

    @property
    def caches(self) -> bool:
        """Some tracked handler caches its results."""
        return any(t.cache is not None for t in self._declarations.values())

    @property
    def locks(self) -> bool:
        """Some tracked handler takes a per-key lock."""
        return any(t.lock is not None for t in self._declarations.values())

    def declaration_of(self, subscriber: Any) -> _Tracked | None:
        return self._declarations.get(id(subscriber))

    async def store(self, broker: Any = None) -> Store:
        if self._store is not None:
            return self._store
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._store is None:
                store = store_for(self.settings, broker=broker)
                await store.open()
                try:
                    await self._register(store)
                except BaseException:
                    await store.close()
                    raise
                self._store = store
        return self._store

    async def _register(self, store: Store) -> None:
        """Publish the cached channels' policies: clients key their submits with them.
        Record every tracked subscriber, for tools that cannot list queues (msgcore.ops)."""
        declared = self._declarations.values()
        await store.register_subscribers(
            sorted({(t.channel, t.decl.group or DEFAULT_GROUP) for t in declared})
        )
        registered: set[str] = set()
        for tracked in self._declarations.values():
            if tracked.cache is not None and tracked.channel not in registered:
                await store.cache_register(tracked.channel, tracked.cache.to_json())
                registered.add(tracked.channel)

    async def open(self, broker: Any = None) -> None:
        """Open the store now (a connected ``broker`` may share its SQLite connection)
        and register the cached channels' policies for clients."""
        if self._declarations and (self.track_jobs or self.caches or self.locks):
            await self.store(broker)

    async def close(self) -> None:
        purging, self._purging = self._purging, None
        if purging is not None:
            purging.cancel()
            await asyncio.gather(purging, return_exceptions=True)
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    def maybe_purge(self, store: Store) -> None:
        """Delete expired records in the background, at most every ``_PURGE_EVERY`` s."""
        now = time.monotonic()
        if now - self._purged_at < _PURGE_EVERY or (
            self._purging is not None and not self._purging.done()
        ):
            return
        self._purged_at = now
        self._purging = asyncio.create_task(self._purge(store), name="msgcore-jobs-purge")

    async def _purge(self, store: Store) -> None:
        try:
            deleted = await store.purge_expired(now=time.time())
        except Exception as exc:  # the next round tries again
            logger.warning("deleting expired job records failed: %r", exc)
        else:
            if deleted:
                logger.info("deleted %d expired job record(s) and key(s)", deleted)


def _late_duplicate(job_id: str, attempt: int) -> None:
    # another delivery of the same job finished first (its lease ran out while this
    # one worked): the one completed record it wrote stays
    logger.warning(
        "job %s: attempt %d finished after the job was already settled; its result was discarded",
        job_id,
        attempt,
        extra={"job_id": job_id},
    )


def _check_recorded(job_id: str, attempt: int, future: asyncio.Future[bool]) -> None:
    if future.cancelled():
        return
    if (exc := future.exception()) is not None:
        # the ack was in the same transaction and failed with it: redelivered later
        logger.error(
            "job %s: recording attempt %d as completed failed: %r",
            job_id,
            attempt,
            exc,
            extra={"job_id": job_id},
        )
    elif not future.result():
        _late_duplicate(job_id, attempt)


class _LeaseKeeper:
    """Refreshes a running job's in-flight claim on its cache key every half lease, so
    that only a dead worker's claim runs out (and a duplicate submit may run again)."""

    def __init__(self, store: Store, key: str, job_id: str, lease: float) -> None:
        self.store, self.key, self.job_id, self.lease = store, key, job_id, lease
        self._handle: asyncio.TimerHandle | None = None
        self._task: asyncio.Task[None] | None = None
        self._schedule()

    def _schedule(self) -> None:
        loop = asyncio.get_running_loop()
        self._handle = loop.call_later(self.lease / 2, self._fire)

    def _fire(self) -> None:
        self._task = asyncio.create_task(self._extend())

    async def _extend(self) -> None:
        try:
            await self.store.cache_extend(self.key, self.job_id, lease=self.lease, now=time.time())
        except Exception as exc:  # the next round tries again
            cache_logger.warning(
                "job %s: refreshing its cache claim failed: %r",
                self.job_id,
                exc,
                extra={"job_id": self.job_id},
            )
        self._schedule()

    def stop(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
        if self._task is not None:
            self._task.cancel()


class _JobMiddlewares:
    """Makes a ``_JobMiddleware`` per message; ``recording`` folds the transport's
    error recording into it (``msgcore.failures.ErrorRecording``)."""

    __slots__ = ("tracker",)

    def __init__(self, tracker: JobTracker) -> None:
        self.tracker = tracker

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> BaseMiddleware:
        return _JobMiddleware(msg, context=context, tracker=self.tracker)

    def recording(self, record: ErrorRecorder) -> Callable[..., BaseMiddleware]:
        return partial(_JobMiddleware, tracker=self.tracker, record=record)


class _JobMiddleware(RecordError):
    __slots__ = ("_body", "tracker")

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: ContextRepo,
        tracker: JobTracker,
        record: ErrorRecorder | None = None,
    ) -> None:
        self.msg, self.context, self.record = msg, context, record
        self.tracker = tracker
        self._body: tuple[str, Any] | None = None

    def _body_value(self, msg: StreamMessage[Any]) -> tuple[str, Any]:
        """The decoded body, for the cache key and the lock key: decoded once when a
        handler has both."""
        if self._body is None:
            self._body = body_value(msg.body, msg.content_type)
        return self._body

    async def consume_scope(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        msg: StreamMessage[Any],
    ) -> Any:
        tracked = self.tracker.declaration_of(self.context.get_local("handler_"))
        if tracked is None:
            return await call_next(msg)
        job_id = msg.headers.get(HEADER_JOB_ID) if self.tracker.track_jobs else None
        if tracked.lock is not None:
            # the lock wraps the handler alone: a cancelled, completed or cached job never
            # waits for it
            call_next = partial(self._locked, call_next, tracked.lock, job_id)
        if job_id:
            # inside the transport's process span (the tracing middleware is outermost
            # and sets the channel and attempt)
            span = trace.get_current_span()
            if span.is_recording():
                span.set_attribute(ATTR_JOB_ID, str(job_id))
        key = self._cache_key(tracked, msg)
        if job_id:
            self.tracker.running += 1
            try:
                return await self._job(call_next, msg, tracked, str(job_id), key)
            finally:
                self.tracker.running -= 1
        if key is not None:
            return await self._cached_call(call_next, msg, tracked, key)
        return await call_next(msg)

    async def _locked(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        lock: ChannelLock,
        job_id: Any,
        msg: StreamMessage[Any],
    ) -> Any:
        """Run the handler holding its message's key (``LockKeyError``: none; dead at once)."""
        key = lock.lock_key(self._body_value(msg))
        store = await self.tracker.store()
        holder = f"job {job_id} on {worker_id()}" if job_id else f"message on {worker_id()}"
        span = trace.get_current_span()
        try:
            held = await acquire(store, key, holder=holder, lease=lock.lease, wait=lock.wait)
        except LockTimeoutError as exc:
            self._lock_waited(span, lock, key, exc.waited)
            raise
        self._lock_waited(span, lock, key, held.waited)
        if held.waited >= 1.0:
            logger.info(
                "%s waited %.1f s for the lock %r",
                f"job {job_id}" if job_id else "a message",
                held.waited,
                key,
                extra={"job_id": job_id, "correlation_id": msg.correlation_id},
            )
        try:
            return await call_next(msg)
        finally:
            await held.release(with_settlement=True)

    def _lock_waited(self, span: Any, lock: ChannelLock, key: str, waited: float) -> None:
        if span.is_recording():
            span.set_attribute(ATTR_LOCK_KEY, key)
            span.set_attribute(ATTR_LOCK_WAIT, waited)
        if self.tracker.metrics is not None:
            self.tracker.metrics.lock_wait.record(waited, {ATTR_CHANNEL: lock.channel})

    def _cache_key(self, tracked: _Tracked, msg: StreamMessage[Any]) -> str | None:
        cache = tracked.cache
        if cache is None:
            return None
        try:
            return cache_key(
                tracked.channel,
                cache.version,
                self._body_value(msg),
                cache.key,
            )
        except CacheKeyError as exc:
            # the handler still runs: its own validation decides about the payload
            cache_logger.error("%s; running the handler without the cache", exc)
            return None

    async def _cached_call(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        msg: StreamMessage[Any],
        tracked: _Tracked,
        key: str,
    ) -> Any:
        """A message without a job (a request, a plain publish) on a cached channel."""
        assert tracked.cache is not None
        store = await self.tracker.store()
        bypass = bool(msg.headers.get(HEADER_CACHE_BYPASS))
        span = trace.get_current_span()
        if not bypass:
            found = await store.cache_lookup(key, now=time.time())
            if found is not None:
                span.set_attribute(ATTR_CACHE, "hit")
                self._count_cache(tracked.channel, "hit")
                cache_logger.info(
                    "cache hit on %s (key %s): replied without running the handler",
                    tracked.channel,
                    key[:12],
                    extra={"correlation_id": msg.correlation_id},
                )
                return decode_result(found.result)
        span.set_attribute(ATTR_CACHE, "bypass" if bypass else "miss")
        self._count_cache(tracked.channel, "bypass" if bypass else "miss")
        result = await call_next(msg)
        fill = CacheFill(key, tracked.channel, tracked.cache.ttl, tracked.cache.max_entries)
        try:
            await store.cache_fill(fill, encode_result(result), job_id=None, now=time.time())
        except Exception as exc:  # the reply matters more than the cache
            cache_logger.error("caching a result of %s failed: %r", tracked.channel, exc)
        return result

    async def _job(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        msg: StreamMessage[Any],
        tracked: _Tracked,
        job_id: str,
        key: str | None,
    ) -> Any:
        tracker = self.tracker
        store = await tracker.store()
        attempt = MessageView(msg).attempt
        started = time.time()
        cache = tracked.cache
        check = None
        if cache is not None and key is not None:
            check = CacheCheck(
                key,
                cache.lease,
                tracker.retention,
                read=not msg.headers.get(HEADER_CACHE_BYPASS),
            )
        record = await through_store_outage(
            lambda: store.start_attempt(
                job_id,
                channel=tracked.channel,
                attempt=attempt,
                worker_id=worker_id(),
                now=started,
                cache=check,
            ),
            job_id=job_id,
            doing="starting its attempt",
        )
        span = trace.get_current_span()
        if record.done:
            if record.cached:
                span.set_attribute(ATTR_CACHE, "hit")
                self._count_cache(tracked.channel, "hit")
            return self._already_done(record.status, record.result, job_id, record.cached)
        if check is not None:
            span.set_attribute(ATTR_CACHE, "miss" if check.read else "bypass")
            self._count_cache(tracked.channel, "miss" if check.read else "bypass")
        fill = None
        keeper = None
        if cache is not None and check is not None:
            fill = CacheFill(check.key, tracked.channel, cache.ttl, cache.max_entries)
            keeper = _LeaseKeeper(store, check.key, job_id, cache.lease)
        try:
            result = await call_next(msg)
        except HandlerException as exc:
            await self._settled_by_handler(exc, store, job_id, attempt, tracked.decl, fill=fill)
            raise
        except Exception as exc:
            final = isinstance(exc, INVALID_PAYLOAD) or tracked.decl.retry.exhausted(attempt)
            await self._failed(exc, store, job_id, attempt, dead=final, fill=fill)
            raise
        finally:
            if keeper is not None:
                keeper.stop()
        finished = time.time()
        tracker.maybe_purge(store)
        completion = completed_outcome(
            attempt, finished, tracker.retention, encode_result(result), fill
        )
        if logger.isEnabledFor(logging.DEBUG):  # its extra dict is built per job otherwise
            logger.debug(
                "job %s completed on attempt %d in %.1f ms",
                job_id,
                attempt,
                (finished - started) * 1000,
                extra={"job_id": job_id, "correlation_id": msg.correlation_id},
            )
        tracer = tracker.tracer
        if tracer is None:
            await self._record_completion(store, tracked, job_id, attempt, completion)
        else:
            with self._complete_span(tracer, tracked.channel, job_id, attempt):
                await self._record_completion(store, tracked, job_id, attempt, completion)
        return result

    async def _record_completion(
        self, store: Store, tracked: _Tracked, job_id: str, attempt: int, done: AttemptOutcome
    ) -> None:
        # On the SQLite transport's own file the record joins the transaction of the
        # ack that follows (never a later one): atomic with the settlement.
        queued = store.queue_finish_attempt(job_id, done)
        if queued is not None:
            queued.add_done_callback(partial(_check_recorded, job_id, attempt))
        elif not await through_store_outage(
            lambda: store.finish_attempt(job_id, done, alone=self._alone(tracked)),
            job_id=job_id,
            doing="recording its result",
        ):
            _late_duplicate(job_id, attempt)

    def _alone(self, tracked: _Tracked) -> bool:
        """No other job can have a write to commit with this one's: this is the only
        attempt under way here, and its handler takes one message at a time (with more
        slots, the next messages start while this one's write waits, and join it)."""
        return self.tracker.running == 1 and tracked.decl.max_workers == 1

    def _count_cache(self, channel: str, outcome: str) -> None:
        if self.tracker.metrics is not None:
            self.tracker.metrics.cache(channel, outcome)

    def _complete_span(self, tracer: Tracer, channel: str, job_id: str, attempt: int) -> Any:
        """``"{channel} complete"``: the job's result recorded (its end in the trace)."""
        return tracer.start_as_current_span(
            f"{channel} complete",
            kind=trace.SpanKind.INTERNAL,
            attributes={ATTR_CHANNEL: channel, ATTR_JOB_ID: job_id, ATTR_ATTEMPT: attempt},
        )

    def _already_done(
        self, status: JobStatus, result: bytes | None, job_id: str, cached: bool
    ) -> Any:
        if cached and status is JobStatus.COMPLETED:
            cache_logger.info(
                "job %s: cache hit, completed with the cached result without running the handler",
                job_id,
                extra={"job_id": job_id},
            )
        else:
            logger.info(
                "job %s is %s already: acknowledged without running the handler",
                job_id,
                status.value,
                extra={"job_id": job_id},
            )
        if status is JobStatus.COMPLETED:
            # A worker died between recording the result and settling the message (or
            # the result was cached): publish the recorded result onward instead of
            # running the handler.
            return decode_result(result)
        raise AckMessage

    async def _settled_by_handler(
        self,
        exc: HandlerException,
        store: Store,
        job_id: str,
        attempt: int,
        decl: SubscriberDeclaration,
        *,
        fill: CacheFill | None,
    ) -> None:
        if isinstance(exc, AckMessage):
            outcome = AttemptOutcome(
                status=JobStatus.COMPLETED,
                attempt=attempt,
                now=time.time(),
                retention=self.tracker.retention,
            )
            await through_store_outage(
                lambda: store.finish_attempt(job_id, outcome),
                job_id=job_id,
                doing="recording its result",
            )
            if fill is not None:  # no result to cache; the key is free again
                await store.cache_release([(fill.key, job_id)])
        elif isinstance(exc, RejectMessage):
            await self._failed(exc, store, job_id, attempt, dead=True, fill=fill)
        elif isinstance(exc, NackMessage):
            dead = decl.retry.exhausted(attempt)
            await self._failed(exc, store, job_id, attempt, dead=dead, fill=fill)

    async def _failed(
        self,
        exc: BaseException,
        store: Store,
        job_id: str,
        attempt: int,
        *,
        dead: bool,
        fill: CacheFill | None,
    ) -> None:
        status = JobStatus.DEAD if dead else JobStatus.RETRYING
        span = trace.get_current_span()
        if dead and self.tracker.metrics is not None:
            self.tracker.metrics.dead_letters.add(1)
        if dead and span.is_recording():
            span.add_event(
                EVENT_DEAD_LETTER,
                {
                    "reason": f"{type(exc).__name__}: {exc}"[:_ERROR_TEXT_LIMIT],
                    ATTR_JOB_ID: job_id,
                    ATTR_ATTEMPT: attempt,
                },
            )
        outcome = AttemptOutcome(
            status=status,
            attempt=attempt,
            now=time.time(),
            retention=self.tracker.retention if dead else None,
            error_type=type(exc).__name__,
            error_message=str(exc)[:_ERROR_TEXT_LIMIT],
            # a dead job releases its key's claim: failures are never cached
            cache=fill,
        )
        try:
            # a dead job's record would otherwise stay "running" for good
            await through_store_outage(
                lambda: store.finish_attempt(job_id, outcome),
                job_id=job_id,
                doing=f"recording attempt {attempt} as {status.value}",
            )
        except Exception as store_exc:  # the handler's error is the one to report
            logger.error(
                "job %s: recording attempt %d as %s failed: %r",
                job_id,
                attempt,
                status.value,
                store_exc,
                extra={"job_id": job_id},
            )
        else:
            logger.log(
                logging.WARNING if dead else logging.INFO,
                "job %s attempt %d failed (%s: %s); %s",
                job_id,
                attempt,
                type(exc).__name__,
                exc,
                "dead-lettered" if dead else "will be retried",
                extra={"job_id": job_id},
            )
