"""``msgcore.Client``: submit jobs, wait for them, read their results, make requests.

The client publishes through the transport ``Settings.url`` picks (it only connects a
broker, it never consumes) and reads job state from the store ``store_for(settings)``
picks, so ``Client()`` with no arguments talks to what the services of the same
environment use.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar

from faststream._internal.basic_types import SendableMessage
from faststream.message.utils import encode_message
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Tracer
from pydantic_core import PydanticSerializationError

from msgcore.adapters import adapter_for
from msgcore.cache.keys import cache_key, payload_value
from msgcore.cache.policy import ChannelCache
from msgcore.constants import HEADER_CACHE_BYPASS, HEADER_JOB_ID
from msgcore.exceptions import (
    ConfigurationError,
    JobNotFoundError,
    JobTimeoutError,
)
from msgcore.ids import new_message_id
from msgcore.jobs.codec import decode_result
from msgcore.jobs.job import Job, ReturnWhen, WaitResult
from msgcore.jobs.outages import through_store_outage
from msgcore.jobs.progress import WaitProgress
from msgcore.jobs.tracking import worker_id
from msgcore.locks.lock import HeldLock, acquire
from msgcore.naming import check_channel_name
from msgcore.publish_args import check_publish, check_request
from msgcore.router import PublisherHandle, Router, unencodable
from msgcore.settings import Settings, transport_of
from msgcore.store import JobRecord, Store, store_for
from msgcore.store.base import new_record
from msgcore.store.cache import CacheStats, CacheSubmit, ClaimKind
from msgcore.store.locks import LockHolder
from msgcore.telemetry.instrument import channel_names, instrument
from msgcore.telemetry.naming import ATTR_CACHE, ATTR_CHANNEL, ATTR_JOB_ID
from msgcore.telemetry.setup import active
from msgcore.timespans import seconds
from msgcore.urls import redact_url

__all__ = ["Client"]

T = TypeVar("T")

cache_logger = logging.getLogger("msgcore.cache")

# Jobs whose records a waiter re-reads in one batch when the feed is quiet: covers a
# feed that was trimmed or a waiter that started after the event.
_RECHECK_EVERY = 5.0
# While many jobs are pending, a waiter lets completions gather for up to this long
# between feed reads: one read (and one batched record read) then covers many jobs,
# and the waiting process leaves the CPU to the workers. A single job is not delayed.
_COALESCE_PER_JOB = 0.0005
_COALESCE_MAX = 0.05
# A channel without a registered cache policy is asked again after this long (a worker
# may start and register it); a known policy is kept until the store says it is stale.
_POLICY_RECHECK = 5.0


def _coalesce(pending: int, finished: int, elapsed: float) -> float:
    """How long a waiter lets completions gather before its next feed read.

    Up to ``_COALESCE_PER_JOB`` per pending job (``_COALESCE_MAX`` at most), but no
    longer than half the time the pending jobs take at the rate they have been
    finishing, so the last read comes soon after the last job: a fixed pause left the
    waiter asleep for up to ``_COALESCE_MAX`` after the end of a batch (10-15 % of a
    2,000-job batch's time on SQLite). Halving costs a few more reads near the end.
    """
    pause = min(_COALESCE_PER_JOB * pending, _COALESCE_MAX)
    if finished > 0 and elapsed > 0:
        pause = min(pause, pending * elapsed / finished / 2)
    return pause


_JOB_ID_MAX_BYTES = 255
"""AMQP's short string, which RabbitMQ's correlation id is: the same limit everywhere, so
that ids work on every transport."""


def _check_job_id(job_id: Any) -> None:
    """A caller's job id: a non-empty str of at most 255 bytes. An empty one used to
    get a generated id, which silently defeated the idempotent submit it was meant for."""
    if not isinstance(job_id, str) or not job_id:
        raise ConfigurationError(f"job_id must be a non-empty str (or None), got {job_id!r}.")
    size = len(job_id.encode())
    if size > _JOB_ID_MAX_BYTES:
        raise ConfigurationError(
            f"job_id is {size} bytes; at most {_JOB_ID_MAX_BYTES} work on every transport "
            "(RabbitMQ carries it as the correlation id). Use a hash of a longer key."
        )


class Client:
    """Submit work and track it. ``async with Client() as client: ...``"""

    def __init__(
        self,
        url: str | None = None,
        *,
        store_url: str | None = None,
        settings: Settings | None = None,
        broker: Any = None,
    ) -> None:
        """``broker``: publish through this (connected) broker instead of connecting one
        of the client's own, e.g. inside a service or under ``msgcore.testing.TestClient``;
        the client then neither connects nor stops it. A running SQLite broker of the
        same file also lends the client its connection: one writer in the process, and
        a job's record commits with its message."""
        base = settings or Settings()
        update: dict[str, Any] = {}
        if url is not None:
            transport_of(url)  # a clear InvalidURLError before anything connects
            update["url"] = url
        if store_url is not None:
            transport_of(store_url)
            update["store_url"] = store_url
        self.settings = base.model_copy(update=update) if update else base
        self._adapter = adapter_for(self.settings)
        if broker is not None:
            _check_broker(broker, self.settings)
        self._given_broker = broker
        self._entered = 0
        self._broker: Any = None
        self._store: Store | None = None
        self._router = Router()
        self._publishers: dict[str, PublisherHandle] = {}
        self._policies: dict[str, tuple[ChannelCache | None, float]] = {}
        self._tracer: Tracer | None = None
        self._warned_keys: set[str] = set()

    # -- lifecycle ------------------------------------------------------------------------

    async def connect(self) -> None:
        if self._broker is not None:
            return
        owned = self._given_broker is None
        broker = self._adapter.broker() if owned else self._given_broker
        store: Store | None = None
        try:
            if owned:
                telemetry = active(self.settings)
                if telemetry is not None:
                    instrument(broker, telemetry, channel_names(self.settings))
                await broker.connect()
            else:  # traced already if create_broker instrumented it
                telemetry = getattr(broker, "msgcore_telemetry", None)
            if telemetry is not None:
                self._tracer = telemetry.tracer_provider.get_tracer("msgcore")
            # A broker the client connected itself may share its connection with the
            # store. A given one may be a test double that runs handlers inline: only a
            # SQLite broker is asked, whose connection store_for uses only when it is
            # a live one to the same file (a worker's, inside a service).
            shared = owned or self.settings.transport == "sqlite"
            store = store_for(self.settings, broker=broker if shared else None)
            await store.open()
        except BaseException:
            if owned:
                with contextlib.suppress(Exception):
                    await broker.stop()
            if store is not None:
                with contextlib.suppress(Exception):
                    await store.close()
            raise
        self._broker, self._store = broker, store

    async def close(self) -> None:
        broker, store = self._broker, self._store
        self._broker = self._store = None
        self._publishers.clear()
        try:
            if broker is not None and self._given_broker is None:
                await broker.stop()
        finally:
            if store is not None:
                await store.close()

    async def __aenter__(self) -> Self:
        await self.connect()
        self._entered += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # a nested `async with client:` (a helper given the caller's client) leaves it
        # connected for the outer block
        self._entered -= 1
        if self._entered <= 0:
            self._entered = 0
            await self.close()

    @property
    def store(self) -> Store:
        if self._store is None:
            raise ConfigurationError(
                "The client is not connected: use `async with Client() as client:` "
                "(or `await client.connect()`)."
            )
        return self._store

    def _publisher(self, channel: str) -> PublisherHandle:
        handle = self._publishers.get(channel)
        if handle is None:
            if self._broker is None:
                raise ConfigurationError(
                    "The client is not connected: use `async with Client() as client:`."
                )
            handle = PublisherHandle(self._router, channel)
            check_channel_name(channel)
            native = self._adapter.publisher(self._broker, channel, handle)
            handle._bind(self._adapter.bind(self._broker, native))
            self._publishers[channel] = handle
        return handle

    # -- jobs -----------------------------------------------------------------------------

    async def submit(
        self,
        channel: str,
        payload: SendableMessage = None,
        *,
        job_id: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> Job:
        """Queue ``payload`` on ``channel`` as a job and return its handle.

        With an existing ``job_id`` nothing is queued: the existing job is returned
        (idempotent submit). On a channel whose handler caches its results, a payload
        whose result is cached returns a completed job (``job.cached``) and publishes
        nothing, and a payload being computed right now returns that job
        (single-flight); ``cache=False`` runs the handler anyway (and refreshes the
        entry). A ``job_id`` is a non-empty str of at most 255 bytes (UTF-8), on every
        transport: RabbitMQ carries it as the message's correlation id.
        """
        if job_id is not None:
            _check_job_id(job_id)
        jobs = await self._submit(
            channel,
            [(payload, job_id)],
            delay=delay,
            priority=priority,
            headers=headers,
            cache=cache,
        )
        return jobs[0]

    async def submit_many(
        self,
        channel: str,
        payloads: Iterable[SendableMessage],
        *,
        batch_size: int = 500,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> list[Job]:
        """Submit many jobs: one store transaction and one concurrent publish per batch
        (the result cache applies as in ``submit``)."""
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigurationError(
                f"submit_many(batch_size={batch_size!r}): batch_size is the number of jobs "
                "per store transaction and publish round, an int of at least 1 (default 500)."
            )
        jobs: list[Job] = []
        batch: list[tuple[SendableMessage, str | None]] = []
        for payload in payloads:
            batch.append((payload, None))
            if len(batch) >= batch_size:
                jobs += await self._submit(channel, batch, headers=headers, cache=cache)
                batch = []
        if batch:
            jobs += await self._submit(channel, batch, headers=headers, cache=cache)
        return jobs

    async def _submit(
        self,
        channel: str,
        items: Sequence[tuple[SendableMessage, str | None]],
        *,
        delay: float | None = None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> list[Job]:
        publisher = self._publisher(channel)
        # the caller's arguments, before any record exists: the publishes below add
        # msgcore's own headers and skip the publisher's checks
        check_publish(channel, headers, delay, priority)
        now = time.time()
        records = [
            new_record(job_id or new_message_id(), channel, created_at=now) for _, job_id in items
        ]
        if not cache:
            headers = {**(headers or {}), HEADER_CACHE_BYPASS: "1"}
        elif self.settings.cache.enabled and (policy := await self._cache_policy(channel)):
            cached = await self._submit_cached(
                policy, items, records, delay=delay, priority=priority, headers=headers
            )
            if cached is not None:
                return cached

        def send(payload: SendableMessage, job_id: str) -> Awaitable[None]:
            return self._traced(
                channel,
                job_id,
                lambda: publisher._publish(
                    payload,
                    headers={**(headers or {}), HEADER_JOB_ID: job_id},
                    correlation_id=job_id,
                    delay=delay,
                    priority=priority,
                ),
            )

        async def send_all() -> None:
            if len(items) == 1:  # no task per publish for a single submit
                await send(items[0][0], records[0].job_id)
                return
            await asyncio.gather(
                *(send(p, r.job_id) for (p, _), r in zip(items, records, strict=True))
            )

        # On the SQLite transport's own file the records and their messages commit in
        # one transaction (only the messages of records that did not exist yet).
        fresh = all(job_id is None for _, job_id in items)
        together = await self.store.create_jobs_publishing(records, send_all, fresh=fresh)
        if together is not None:
            return [Job(self, record) for record, _ in together]
        if len(items) > 1:
            # Here each message goes out on its own: a payload that cannot be encoded
            # must stop the batch before any of it is sent.
            self._check_encodable(channel, items)
        if fresh:
            # Fresh ids: no earlier job can hold them, so record and message go out at
            # once. A worker that is faster than the record creates it (start_attempt),
            # and create_jobs then keeps the worker's record.
            stored = await self._create_while(records, send_all)
            return [Job(self, record) for record, _ in stored]
        # A caller's ids: the record exists before the message, so that a second submit
        # of the same id finds it and publishes nothing, even while the first publishes.
        stored = await self.store.create_jobs(records)
        sends = [
            send(payload, record.job_id)
            for (payload, _), (record, created) in zip(items, stored, strict=True)
            if created
        ]
        if sends:
            try:
                await asyncio.gather(*sends)
            except BaseException:
                made = [r.job_id for r, created in stored if created]
                with contextlib.suppress(Exception):
                    await self.store.delete_jobs(made)
                raise
        return [Job(self, record) for record, _ in stored]

    def _check_encodable(
        self, channel: str, items: Sequence[tuple[SendableMessage, str | None]]
    ) -> None:
        """``PayloadError`` if the broker's serializer cannot encode a payload."""
        config = getattr(self._broker, "config", None)
        serializer = getattr(getattr(config, "fd_config", None), "_serializer", None)
        if serializer is None:  # not FastStream's layout: the publishes will tell
            return
        for payload, _ in items:
            try:
                encode_message(payload, serializer)
            except (PydanticSerializationError, UnicodeEncodeError) as exc:
                raise unencodable(channel, exc) from exc

    async def _create_while(
        self, records: Sequence[JobRecord], send_all: Callable[[], Awaitable[None]]
    ) -> list[tuple[JobRecord, bool]]:
        """Create ``records`` while ``send_all()`` publishes, in this task.

        The publish is the round trip a submit waits for (RabbitMQ's publisher confirm),
        so it starts first and without a task of its own: started by ``gather()`` it
        waited a loop iteration behind whatever else was ready, ~0.35 ms per submit
        with a worker in the process (docs/benchmarks.md, "Job tracking").
        """
        creating = asyncio.ensure_future(self.store.create_jobs(records))
        try:
            await send_all()
            return await creating
        except BaseException:
            # the record may be written after a failed publish: wait for it, then delete
            await asyncio.wait([creating])
            if not creating.cancelled():
                creating.exception()  # retrieved: the publish's error is the one raised
            with contextlib.suppress(Exception):
                await self.store.delete_jobs([r.job_id for r in records])
            raise

    # -- result cache ---------------------------------------------------------------------

    async def _cache_policy(self, channel: str, *, reload: bool = False) -> ChannelCache | None:
        """The channel's registered policy, if this client can key submits with it."""
        known = self._policies.get(channel)
        now = time.monotonic()
        if reload or known is None or (known[0] is None and now - known[1] >= _POLICY_RECHECK):
            text = await self.store.cache_policy(channel)
            policy = None if text is None else ChannelCache.from_json(channel, text)
            self._policies[channel] = known = (policy, now)
        policy = known[0]
        if policy is not None and policy.key_missing:
            if channel not in self._warned_keys:
                self._warned_keys.add(channel)
                cache_logger.warning(
                    "channel %s keys its cache with %s, which cannot be imported here: "
                    "submits go to the workers, which still answer cached payloads",
                    channel,
                    policy.key_path,
                )
            return None
        return policy

    async def _submit_cached(
        self,
        policy: ChannelCache,
        items: Sequence[tuple[SendableMessage, str | None]],
        records: list[JobRecord],
        *,
        delay: float | None,
        priority: int | None,
        headers: dict[str, Any] | None,
    ) -> list[Job] | None:
        """Submit through the cache: hits and joins publish nothing. None: the channel
        has no cache any more (submit the plain way)."""
        if len(items) > 1:
            # the misses go out one by one below: a payload that cannot be encoded must
            # stop the batch before any of it is claimed or sent
            self._check_encodable(policy.channel, items)
        for _ in range(2):
            requests = [
                CacheSubmit(
                    key=cache_key(policy.channel, policy.version, payload_value(p), policy.key),
                    record=r,
                    version=policy.version,
                    lease=policy.lease,
                    retention=self.settings.jobs.result_ttl,
                )
                for (p, _), r in zip(items, records, strict=True)
            ]
            claims = await self.store.cache_submit(requests, now=time.time())
            if all(c.kind is not ClaimKind.STALE for c in claims):
                break
            # a worker registered another version since: key again with it
            reloaded = await self._cache_policy(policy.channel, reload=True)
            if reloaded is None:
                return None
            policy = reloaded
        else:
            return None
        publisher = self._publisher(policy.channel)
        sends = []
        for (payload, _), request, found in zip(items, requests, claims, strict=True):
            if found.kind is ClaimKind.CLAIMED:
                job_id = request.record.job_id
                sends.append(
                    self._traced(
                        policy.channel,
                        job_id,
                        partial(
                            publisher._publish,
                            payload,
                            headers={**(headers or {}), HEADER_JOB_ID: job_id},
                            correlation_id=job_id,
                            delay=delay,
                            priority=priority,
                        ),
                        cache="miss",
                    )
                )
                continue
            if found.record is not None and found.kind in (ClaimKind.HIT, ClaimKind.JOINED):
                self._traced_instant(policy.channel, found.record.job_id, found.kind.value)
            if found.kind is ClaimKind.HIT and found.record is not None:
                cache_logger.info(
                    "job %s: cache hit on %s, completed without publishing",
                    found.record.job_id,
                    policy.channel,
                    extra={"job_id": found.record.job_id},
                )
        if sends:
            try:
                await asyncio.gather(*sends)
            except BaseException:
                fresh = [
                    (r.key, r.record.job_id)
                    for r, c in zip(requests, claims, strict=True)
                    if c.kind is ClaimKind.CLAIMED
                ]
                with contextlib.suppress(Exception):
                    await self.store.delete_jobs([job_id for _, job_id in fresh])
                    await self.store.cache_release(fresh)
                raise
        jobs = []
        for found in claims:
            assert found.record is not None
            jobs.append(Job(self, found.record))
        return jobs

    def _traced(
        self,
        channel: str,
        job_id: str,
        publish: Callable[[], Awaitable[None]],
        *,
        cache: str | None = None,
    ) -> Awaitable[None]:
        """Run ``publish`` inside a ``"{channel} submit"`` span: the root of the job's
        trace (or a child of the caller's current span); the transport's publish span
        and everything the workers do follow from it."""
        tracer = self._tracer
        if tracer is None:
            return publish()
        attributes: dict[str, str] = {ATTR_CHANNEL: channel, ATTR_JOB_ID: job_id}
        if cache is not None:
            attributes[ATTR_CACHE] = cache
        span = tracer.start_span(
            f"{channel} submit", kind=trace.SpanKind.PRODUCER, attributes=attributes
        )
        return _in_span(span, publish)

    def _traced_instant(self, channel: str, job_id: str, cache: str) -> None:
        """A submit answered by the store (a hit, or joining a running job)."""
        if self._tracer is None:
            return
        attributes = {ATTR_CHANNEL: channel, ATTR_JOB_ID: job_id, ATTR_CACHE: cache}
        self._tracer.start_span(
            f"{channel} submit", kind=trace.SpanKind.PRODUCER, attributes=attributes
        ).end()

    async def cache_stats(self, channel: str | None = None) -> list[CacheStats]:
        """Hits, misses, joins, entries and size per cached channel (or one channel)."""
        return await self.store.cache_stats(channel=_channel_arg("cache_stats", channel))

    async def cache_clear(self, channel: str | None = None) -> int:
        """Delete cached results (of one channel) and zero the counters; how many."""
        return await self.store.cache_clear(channel=_channel_arg("cache_clear", channel))

    def lock(
        self, key: str, *, wait: float | None = None, lease: float | None = None
    ) -> _LockContext:
        """``async with client.lock("nightly-report") as held:``: hold ``key`` (across
        every process on this store) for the block.

        Waits up to ``wait`` seconds for a held key (default ``MSGCORE_LOCKS__WAIT``;
        0: do not wait), then raises ``LockTimeoutError``. The lock is refreshed while
        held; ``lease`` (default ``MSGCORE_LOCKS__LEASE``) is how long it outlives this
        process if it dies. A handler's ``LockPolicy`` locks ``"{scope}:{value}"`` (the
        scope defaults to the channel): lock that key to exclude the handler.
        """
        if not isinstance(key, str) or not key:
            raise ConfigurationError(
                f"client.lock() needs a key, a non-empty str, got {key!r}: every process "
                "that locks the same str excludes the others."
            )
        locks = self.settings.locks
        return _LockContext(
            self,
            key,
            wait=locks.wait if wait is None else wait,
            lease=locks.lease if lease is None else lease,
        )

    async def locks(self, prefix: str = "") -> list[LockHolder]:
        """The locks held now (whose key starts with ``prefix``), with holder and expiry."""
        if not isinstance(prefix, str):
            raise ConfigurationError(f"client.locks(prefix) takes a str, got {prefix!r}")
        return await self.store.list_locks(now=time.time(), prefix=prefix)

    async def get_job(self, job_id: str) -> Job:
        """The job ``job_id`` as recorded now, from any process."""
        _check_job_id(job_id)
        record = await self.store.get_job(job_id)
        if record is None:
            raise self._not_found(job_id)
        return Job(self, record)

    def _not_found(self, job_id: str) -> JobNotFoundError:
        store_url = self.settings.store_url
        where = redact_url(store_url) if store_url else "beside " + self.settings.safe_url
        return JobNotFoundError(
            f"No job {job_id!r}: it was never submitted to this store ({where}) or "
            "expired after its retention (MSGCORE_JOBS__RESULT_TTL).",
            job_id=job_id,
        )

    async def cancel(self, job_id: str) -> bool:
        """Cancel a job no worker has started; False if it started or finished already,
        ``JobNotFoundError`` if the store has no record of it (a mistyped or expired id).

        The handler never runs. The message stays queued and the worker that receives it
        acknowledges it without running the handler; with the store on the transport
        (SQLite file, Redis server) the message is deleted instead, and a job whose message
        a worker has claimed already (running, or waiting in its read-ahead for a free
        slot) is not cancelled.
        """
        _check_job_id(job_id)
        store = self.store
        if await store.cancel_job(job_id, now=time.time(), retention=self.settings.jobs.result_ttl):
            return True
        # only a refusal pays for the read that tells "too late" from "no such job"
        if await store.get_job(job_id) is None:
            raise self._not_found(job_id)
        return False

    async def wait(
        self,
        jobs: Iterable[Job],
        *,
        timeout: float | None = None,
        return_when: ReturnWhen | str = ReturnWhen.ALL,
        progress: bool = False,
        raise_on_timeout: bool = False,
    ) -> WaitResult:
        """Wait until every job (or the first, ``return_when="first"``) has finished.

        Reads the store's completion feed (one query per wake-up, whatever the number
        of jobs) and re-reads the pending records in batches every few seconds. At
        ``timeout`` it returns what finished so far, or raises ``JobTimeoutError`` with
        ``raise_on_timeout=True``. ``progress=True`` draws a rich progress bar.
        """
        mode, handles = _wait_args(jobs, timeout, return_when)
        by_id: dict[str, list[Job]] = {}
        for job in handles:
            by_id.setdefault(job.id, []).append(job)
        store = self.store
        deadline = None if timeout is None else time.monotonic() + timeout
        doing = f"waiting for {len(by_id)} job(s)"

        def patient(call: Callable[[], Awaitable[T]]) -> Awaitable[T]:
            # a store outage within the timeout is waited out, not raised
            return through_store_outage(call, doing=doing, deadline=deadline)

        position = await patient(store.feed_position)
        pending = set(by_id)
        done: set[str] = set()

        async def recheck(ids: Iterable[str]) -> None:
            ids = list(ids)
            records = await patient(lambda: store.get_jobs(ids))
            for job_id in ids:
                record = records.get(job_id)
                if record is None:
                    continue
                for job in by_id[job_id]:
                    job.record = record
                if record.done:
                    pending.discard(job_id)
                    done.add(job_id)

        def finished() -> bool:
            return not pending or (mode is ReturnWhen.FIRST and bool(done))

        with WaitProgress(len(by_id), enabled=progress) as bar:
            await recheck(list(pending))
            bar.update(len(done))
            done_before, began = len(done), time.monotonic()
            last_check = time.monotonic()
            while not finished():
                now = time.monotonic()
                if deadline is not None and now >= deadline:
                    break
                wake = _RECHECK_EVERY if deadline is None else min(_RECHECK_EVERY, deadline - now)
                position, events = await patient(
                    partial(store.read_feed, position, timeout=max(wake, 0.0))
                )
                finished_ids = {e.job_id for e in events if e.job_id in pending}
                if finished_ids:
                    await recheck(finished_ids)
                if time.monotonic() - last_check >= _RECHECK_EVERY:
                    await recheck(list(pending))
                    last_check = time.monotonic()
                bar.update(len(done))
                if events and not finished():
                    pause = _coalesce(
                        len(pending), len(done) - done_before, time.monotonic() - began
                    )
                    if deadline is not None:
                        pause = min(pause, max(deadline - time.monotonic(), 0.0))
                    await asyncio.sleep(pause)
        result = WaitResult(
            done=[j for j in handles if j.id in done],
            pending=[j for j in handles if j.id not in done],
        )
        if raise_on_timeout and not finished():
            first = result.pending[0]
            raise JobTimeoutError(
                f"{len(result.pending)} job(s) not finished within {timeout}s "
                f"(first: {first.id!r}, {first.record.status.value}); they are still "
                "queued or running: wait again, or check the workers.",
                job_id=first.id,
            )
        return result

    # -- request/reply --------------------------------------------------------------------

    async def request(
        self,
        channel: str,
        payload: SendableMessage = None,
        *,
        timeout: float | None = None,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> Any:
        """Publish ``payload`` and wait for the handler's reply (correlation id; no job
        is stored). Raises ``RequestTimeoutError`` after ``timeout`` (default
        ``MSGCORE_REQUEST_TIMEOUT``). On a cached channel a cached result is returned
        without publishing (``cache=False``: ask the handler anyway)."""
        check_request(channel, headers, timeout)
        if not cache:
            headers = {**(headers or {}), HEADER_CACHE_BYPASS: "1"}
        elif self.settings.cache.enabled and (policy := await self._cache_policy(channel)):
            key = cache_key(channel, policy.version, payload_value(payload), policy.key)
            found = await self.store.cache_lookup(key, now=time.time())
            if found is not None:
                cache_logger.info("cache hit on %s: answered without publishing", channel)
                return decode_result(found.result)
        return await self._publisher(channel)._request(payload, headers=headers, timeout=timeout)

    def __repr__(self) -> str:
        return f"Client({self.settings.safe_url!r})"


def _check_broker(broker: Any, settings: Settings) -> None:
    """``ConfigurationError`` when ``broker`` is not of the transport ``settings`` name:
    the publishes failed later with a transport's bare TypeError."""
    from faststream.rabbit import RabbitBroker
    from faststream.redis import RedisBroker

    from msgcore.sqlite import SqliteBroker

    kinds = {"sqlite": SqliteBroker, "redis": RedisBroker, "rabbit": RabbitBroker}
    if not isinstance(broker, kinds[settings.transport]):
        raise ConfigurationError(
            f"Client(broker=...) got a {type(broker).__name__}, but its settings name the "
            f"{settings.transport} transport ({settings.safe_url}): pass the settings the "
            "broker was made with (create_broker(..., settings=settings))."
        )


def _wait_args(jobs: Any, timeout: Any, return_when: Any) -> tuple[ReturnWhen, list[Job]]:
    """``wait``'s arguments checked: the mode and the jobs as a list."""
    try:
        mode = ReturnWhen(return_when)
    except ValueError:
        raise ConfigurationError(
            f"wait(return_when={return_when!r}): pass 'all' (msgcore.ALL) or 'first' "
            "(msgcore.FIRST)."
        ) from None
    if timeout is not None and (
        not isinstance(timeout, int | float)
        or isinstance(timeout, bool)
        or math.isnan(timeout)
        or timeout < 0
    ):
        raise ConfigurationError(
            f"wait(timeout={timeout!r}): a timeout is a number of seconds, 0 or more (None: "
            "no limit)."
        )
    if isinstance(jobs, Job | str) or not isinstance(jobs, Iterable):
        raise ConfigurationError(
            f"wait() takes an iterable of Job handles (from submit or get_job), got "
            f"{type(jobs).__name__}: wait([job]) for one job."
        )
    handles = list(jobs)
    for job in handles:
        if not isinstance(job, Job):
            raise ConfigurationError(
                f"wait() takes Job handles (from submit or get_job), got {job!r}: "
                "client.get_job(job_id) makes one from an id."
            )
    return mode, handles


def _channel_arg(method: str, channel: Any) -> str | None:
    if channel is None or (isinstance(channel, str) and channel):
        return channel
    raise ConfigurationError(
        f"client.{method}(channel) takes a channel name or None (every channel), got {channel!r}"
    )


class _LockContext:
    """What ``Client.lock`` returns: takes the lock on enter, releases it on exit."""

    def __init__(self, client: Client, key: str, *, wait: float, lease: float) -> None:
        # the same checks (and messages) as LockPolicy's
        checked_wait = seconds(
            wait, f"client.lock({key!r}, wait=...)", allow_zero=True, allow_forever=True
        )
        checked_lease = seconds(lease, f"client.lock({key!r}, lease=...)")
        assert checked_wait is not None and checked_lease is not None
        self.client, self.key = client, key
        self.wait, self.lease = checked_wait, checked_lease
        self._held: HeldLock | None = None

    async def __aenter__(self) -> HeldLock:
        self._held = await acquire(
            self.client.store,
            self.key,
            holder=f"client on {worker_id()}",
            lease=self.lease,
            wait=self.wait,
        )
        return self._held

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        held, self._held = self._held, None
        if held is not None:
            await held.release()


async def _in_span(span: trace.Span, publish: Callable[[], Awaitable[None]]) -> None:
    """``publish()`` with ``span`` current, in the awaiting task (a single submit's
    publish then starts at once, not a loop iteration later in a task of its own)."""
    token = otel_context.attach(trace.set_span_in_context(span))
    try:
        await publish()
    except BaseException as exc:
        if not isinstance(exc, asyncio.CancelledError):
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, str(exc)))
        raise
    finally:
        otel_context.detach(token)
        span.end()
