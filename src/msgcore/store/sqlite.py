"""``SqliteStore``: job records, the completion feed and state in a SQLite file.

By default the file is the SQLite transport's own, so the store runs on the transport's
connection machinery (``SqliteClient``): WAL, error mapping, short statements inline on
the event loop and a group-commit writer. Writes from many handlers (``finish_attempt``
of concurrent jobs) therefore commit together in one transaction.

``queries`` counts SQL statements this object executed (an ``executemany`` is one; the
``BEGIN``/``COMMIT`` of a group commit are not counted). ``feed_polls`` counts the
``PRAGMA data_version`` probes of waiting ``read_feed`` calls, which are queries too.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
import weakref
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from typing import Any, cast

from msgcore.constants import HEADER_JOB_ID
from msgcore.exceptions import StorageError
from msgcore.sqlite.client.base import OutgoingMessage, StoredMessage
from msgcore.sqlite.client.connection import SqliteClient
from msgcore.sqlite.publisher.producer import CAPTURED
from msgcore.sqlite.subscriber.settlement import CURRENT_DELIVERY
from msgcore.store import queries as q
from msgcore.store import sqlite_cache as sqlc
from msgcore.store.base import (
    AttemptOutcome,
    FeedEvent,
    JobRecord,
    JobStatus,
    Store,
    new_record,
)
from msgcore.store.cache import (
    CacheCheck,
    CacheClaim,
    CacheEntry,
    CacheFill,
    CacheStats,
    CacheSubmit,
)
from msgcore.store.deferred import DueLater
from msgcore.store.kv_args import key_arg, mapping_arg, ttl_arg, value_arg, wrong_kind
from msgcore.store.locks import LockHolder
from msgcore.store.sqlite_rows import (
    HEAVY_ROWS,
    Op,
    T,
    alive,
    chunks,
    create_schema,
    job_from_row,
    job_row,
    select,
)
from msgcore.urls import parse_sqlite_url, redact_url

__all__ = ["SqliteStore"]

logger = logging.getLogger("msgcore.jobs")

_FEED_BATCH = 1000
_POLL_MIN = 0.001
_POLL_MAX = 0.05


class _FeedSignal:
    """Wakes the feed readers of every store object on one connection."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.schema_ready = False

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


def _skip(sql: Op[None]) -> None:
    """A start write made redundant by its attempt's result write."""


def _done() -> asyncio.Future[None]:
    done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
    done.set_result(None)
    return done


START_AFTER = 0.05
"""Seconds an attempt the transport's row identifies as its job's runs before its
``running`` write is queued (``SqliteStore._start_queued``): how late another process
may see ``running``."""


class _Start:
    """An attempt's ``running`` write: waiting (``SqliteStore._waiting``), then queued
    (``op``, ``queued``) until it commits."""

    __slots__ = ("op", "params", "queued")

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.op: Op[None] | None = None
        self.queued: asyncio.Future[None] | None = None


_SIGNALS: weakref.WeakKeyDictionary[SqliteClient, _FeedSignal] = weakref.WeakKeyDictionary()


class SqliteStore(Store):
    """The SQLite :class:`Store`; tables ``msgcore_jobs``, ``msgcore_kv``, ``msgcore_hash``."""

    def __init__(
        self, url: str, *, busy_timeout: float = 5.0, client: SqliteClient | None = None
    ) -> None:
        """``client``: the SQLite transport's connected client for the same file, shared
        instead of opening a connection of its own (see ``shares_transport_writer``)."""
        self.url = url
        self.path = parse_sqlite_url(url).path
        self._owned = client is None
        self._db = (
            client if client is not None else SqliteClient(self.path, busy_timeout=busy_timeout)
        )
        self.queries = 0
        self.feed_polls = 0
        # attempts whose ``running`` write is deferred or queued, not committed
        # (``_start_queued``)
        self._starting: dict[str, _Start] = {}
        # the starts that wait START_AFTER before they are queued
        self._waiting = DueLater(START_AFTER, self._send_start)
        # Commits on this connection do not change the ``data_version`` its waiting
        # readers poll, so every store object on one connection shares one signal.
        self._signal = _SIGNALS.setdefault(self._db, _FeedSignal())

    @property
    def shares_transport_writer(self) -> bool:
        return not self._owned

    def __repr__(self) -> str:
        return f"SqliteStore({redact_url(self.url)!r})"

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if not self._owned:
            if not self._db.connected:
                raise StorageError(
                    f"The SQLite transport's connection to {self.path} is not open: "
                    "connect the broker before opening a store that shares it."
                )
            if not self._signal.schema_ready:
                await self._write(create_schema)
                self._signal.schema_ready = True
            return
        if self._db.connected:
            return
        await self._db.connect()
        try:
            await self._write(create_schema)
        except BaseException:
            await self._db.close()
            raise

    async def close(self) -> None:
        if self._owned:
            await self._db.close()

    # -- running statements --------------------------------------------------------------

    def _check_open(self) -> None:
        if not self._db.connected:
            raise StorageError(
                f"The job store {redact_url(self.url)} is not open: use `async with store:` "
                "or `await store.open()` first."
            )

    async def _read(self, fn: Callable[[Op[T]], T], *, heavy: bool = False) -> T:
        self._check_open()
        op = Op(fn)
        try:
            return await self._db._run(op, heavy=heavy)
        finally:
            self.queries += op.count

    async def _write(self, fn: Callable[[Op[T]], T], *, heavy: bool = False) -> T:
        """Run ``fn`` in the next group commit, with whatever other writes are queued."""
        self._check_open()
        op = Op(fn)
        if heavy:
            self._db._heavy.add(op)
        try:
            return cast(T, await self._db._write(op))
        finally:
            self.queries += op.count

    def _fed(self) -> None:
        self._signal.fire()

    # -- jobs ----------------------------------------------------------------------------

    async def create_jobs(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        if not records:
            return []
        return await self._write(self._create_op(records), heavy=len(records) > HEAVY_ROWS)

    def _create_op(
        self, records: Sequence[JobRecord], *, fresh: bool = False
    ) -> Callable[[Op[list[tuple[JobRecord, bool]]]], list[tuple[JobRecord, bool]]]:
        now = time.time()

        def work(sql: Op[list[tuple[JobRecord, bool]]]) -> list[tuple[JobRecord, bool]]:
            if fresh:
                sql.many(q.INSERT_JOB, [job_row(r) for r in records])
                return [(r, True) for r in records]
            # Inside the write transaction: nobody can insert between the read and ours.
            stored: dict[str, JobRecord] = {}
            ids = list(dict.fromkeys(r.job_id for r in records))
            if len(ids) == 1:  # a primary-key lookup, cheaper than json_each
                row = sql.row(q.GET_JOB, {"id": ids[0], "now": now})
                if row is not None:
                    stored[row[0]] = job_from_row(row)
            else:
                for chunk in chunks(ids):
                    for row in sql.rows(q.GET_JOBS, {"ids": json.dumps(chunk), "now": now}):
                        stored[row[0]] = job_from_row(row)
            out: list[tuple[JobRecord, bool]] = []
            new: list[tuple[Any, ...]] = []
            for r in records:
                if r.job_id in stored:
                    out.append((stored[r.job_id], False))
                else:
                    stored[r.job_id] = r
                    new.append(job_row(r))
                    out.append((r, True))
            if new:
                sql.many(q.INSERT_JOB, new)
            return out

        return work

    async def create_jobs_publishing(
        self,
        records: Sequence[JobRecord],
        publish: Callable[[], Awaitable[None]],
        *,
        fresh: bool = False,
    ) -> list[tuple[JobRecord, bool]] | None:
        if self._owned or not records:
            return None
        captured: list[OutgoingMessage] = []
        token = CAPTURED.set(captured)
        try:
            await publish()
        finally:
            CAPTURED.reset(token)
        create = self._create_op(records, fresh=fresh)

        def work(sql: Op[list[tuple[JobRecord, bool]]]) -> list[tuple[JobRecord, bool]]:
            stored = create(sql)
            fresh = {record.job_id for record, created in stored if created}
            keep = [m for m in captured if (m.headers or {}).get(HEADER_JOB_ID) in fresh]
            if keep:
                assert sql._conn is not None
                sql.count += 1
                self._db.insert_op(keep)(sql._conn)
            return stored

        return await self._write(work, heavy=len(records) > HEAVY_ROWS)

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        """Delete job records (a submit that failed to publish); how many existed."""
        ids = list(dict.fromkeys(job_ids))

        def work(sql: Op[int]) -> int:
            return sum(
                sql.change(q.DELETE_JOBS, {"ids": json.dumps(chunk)}) for chunk in chunks(ids)
            )

        return await self._write(work, heavy=len(ids) > HEAVY_ROWS) if ids else 0

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        ids = list(dict.fromkeys(job_ids))
        if self._starting and (
            starts := [self._send_start(i) for i in ids if i in self._starting]
        ):  # this process reads its own starts
            await asyncio.wait(starts)
        now = time.time()
        if len(ids) == 1:
            row = await self._read(lambda sql: sql.row(q.GET_JOB, {"id": ids[0], "now": now}))
            return {} if row is None else {ids[0]: job_from_row(row)}
        found: dict[str, JobRecord] = {}
        for chunk in chunks(ids):
            params = {"ids": json.dumps(chunk), "now": now}
            rows = await self._read(select(q.GET_JOBS, params), heavy=len(chunk) > HEAVY_ROWS)
            found.update((row[0], job_from_row(row)) for row in rows)
        return found

    async def start_attempt(
        self,
        job_id: str,
        *,
        channel: str,
        attempt: int,
        worker_id: str,
        now: float,
        cache: CacheCheck | None = None,
    ) -> JobRecord:
        params = {
            "id": job_id,
            "channel": channel,
            "attempt": attempt,
            "worker_id": worker_id,
            "now": now,
        }
        if cache is None:
            return await self._start_queued(job_id, params)
        hit = False

        def work(sql: Op[JobRecord]) -> JobRecord:
            nonlocal hit
            row = sql.row(q.START_ATTEMPT, params)
            if row is None:
                # Refused: terminal (return it as it is) or expired (start afresh).
                row = sql.row(q.GET_JOB, {"id": job_id, "now": now})
                if row is not None:
                    return job_from_row(row)
                sql.change(q.DELETE_JOB, (job_id,))
                row = sql.row(q.START_ATTEMPT, params)
            started = job_from_row(row)
            if cache is None:
                return started
            found = sqlc.start_check(sql, cache, now=now)
            if found is None:
                sqlc.claim(sql, cache.key, job_id, lease=cache.lease, now=now)
                return started
            # filled since the message was queued: complete it with the cached result
            outcome = AttemptOutcome(
                status=JobStatus.COMPLETED,
                attempt=attempt,
                now=now,
                retention=cache.retention,
                result=found.result,
                has_result=True,
                cached=True,
            )
            self._finish_work(job_id, outcome)(sql)
            sqlc.bump(sql, found.channel, hits=1)
            hit = True
            return job_from_row(sql.row(q.GET_JOB, {"id": job_id, "now": now}))

        started = await self._write(work)
        if hit:
            self._fed()
        return started

    async def _start_queued(self, job_id: str, params: dict[str, Any]) -> JobRecord:
        """Start an attempt with at most a read now, and the ``running`` write later,
        without waiting for it.

        A commit of its own per start was a third of a short job's cost. The write is
        queued before the attempt's result and its message's ack, so it commits with
        them or before them, never after; a write still waiting when the result comes is
        folded into the result's (one statement instead of two). When the row being
        handled is the job's message (``_job_message``), a cancel refuses the job once a
        worker has claimed it, so the write waits ``START_AFTER`` first and a short
        attempt writes its record once. On that message's first delivery no cancel can
        have taken it and no earlier attempt can have finished it, so the record is not
        read first either. A job terminal at the read (cancelled, or done by an earlier
        delivery) is returned as it is; one cancelled between the read and the write keeps
        its cancelled state (the write and the result are refused).
        """
        now = params["now"]
        current = None
        own = self._job_message(job_id)
        if own is None or params["attempt"] != 1 or own.attempts != 1:
            row = await self._read(lambda sql: sql.row(q.GET_JOB, {"id": job_id, "now": now}))
            current = None if row is None else job_from_row(row)
            if current is not None and current.done:
                return current
        self._starting[job_id] = _Start(params)  # an earlier attempt's entry ends here
        if own is not None:
            self._waiting.add(job_id)
        else:
            self._waiting.discard(job_id)
            # Written once the handler yields to the loop (an attempt that ends first
            # writes it with its result): as soon as a queued write would commit.
            asyncio.get_running_loop().call_soon(self._send_start, job_id)
        if current is None:
            return new_record(
                job_id,
                params["channel"],
                status=JobStatus.RUNNING,
                attempts=params["attempt"],
                worker_id=params["worker_id"],
                created_at=now,
                started_at=now,
            )
        return current.evolve(
            status=JobStatus.RUNNING,
            attempts=params["attempt"],
            worker_id=params["worker_id"],
            started_at=now,
        )

    def _send_start(self, job_id: str) -> asyncio.Future[None]:
        """Queue the ``running`` write of ``job_id``'s attempt (now, if it was waiting);
        the future of its commit."""
        start = self._starting.get(job_id)
        if start is None:  # written with its attempt's result meanwhile
            return _done()
        if start.queued is not None:
            return start.queued
        self._waiting.discard(job_id)
        params = start.params
        now = params["now"]

        def work(sql: Op[None]) -> None:
            if sql.row(q.START_ATTEMPT, params) is None and (
                sql.row(q.GET_JOB, {"id": job_id, "now": now}) is None
            ):  # expired since the read: start afresh
                sql.change(q.DELETE_JOB, (job_id,))
                sql.row(q.START_ATTEMPT, params)

        start.op = op = Op(work)
        try:
            start.queued = queued = self._queue(op)
        except StorageError:  # closed meanwhile: the attempt's result write reports it
            del self._starting[job_id]
            return _done()
        queued.add_done_callback(partial(self._started, start, job_id))
        return queued

    def _job_message(self, job_id: str) -> StoredMessage | None:
        """The row being handled, when it is on the transport's own file and is the job's
        message (its ``correlation_id`` is the job id); else None."""
        if self._owned:
            return None
        delivery = CURRENT_DELIVERY.get()
        if delivery is None or delivery.correlation_id != job_id:
            return None
        return delivery

    def _started(self, start: _Start, job_id: str, done: asyncio.Future[None]) -> None:
        if self._starting.get(job_id) is start:
            del self._starting[job_id]
        if done.cancelled() or done.exception() is None:
            return
        # the attempt's result write follows in the same queue and reports its own error
        logger.warning(
            "job %s: recording its start failed: %s",
            job_id,
            done.exception(),
            extra={"job_id": job_id},
        )

    async def finish_attempt(
        self, job_id: str, outcome: AttemptOutcome, *, alone: bool = False
    ) -> bool:
        op = Op(self._finish_work(job_id, outcome))
        self._check_open()
        committed, finished = False, False
        try:
            if alone and self._owned:
                # Nothing else to commit with (one handler at a time): commit it now.
                committed, finished = self._db.commit_now(op)
            if not committed:
                finished = await self._db._write(op)
        finally:
            self.queries += op.count
        if finished and outcome.terminal:
            self._fed()
        return bool(finished)

    def queue_finish_attempt(
        self, job_id: str, outcome: AttemptOutcome
    ) -> asyncio.Future[bool] | None:
        if self._owned:
            return None
        future = self._queue(Op(self._finish_work(job_id, outcome)))

        def fed(f: asyncio.Future[bool]) -> None:
            if not f.cancelled() and f.exception() is None and f.result() and outcome.terminal:
                self._fed()

        future.add_done_callback(fed)
        return future

    def _queue(self, op: Op[T]) -> asyncio.Future[T]:
        """``op`` in the shared writer's next commit, not waited for (counted when done)."""
        self._check_open()
        future: asyncio.Future[T] = self._db._write(op)

        def counted(_: asyncio.Future[T]) -> None:
            self.queries += op.count

        future.add_done_callback(counted)
        return future

    def _finish_work(self, job_id: str, outcome: AttemptOutcome) -> Callable[[Op[Any]], bool]:
        terminal = outcome.terminal
        now = outcome.now
        retention = outcome.retention
        channel = worker = started = None
        starting = self._starting.pop(job_id, None)
        if starting is not None:
            # The attempt ended before its start write committed (a short handler):
            # this write records the start too, one statement instead of two. If the
            # start is running on the database thread right now, both are written.
            self._waiting.discard(job_id)
            if starting.op is not None:
                starting.op.fn = _skip
            begun = starting.params
            channel, worker, started = begun["channel"], begun["worker_id"], begun["now"]
        update = (  # in q.FINISH_ORDER
            str(outcome.status),
            outcome.attempt,
            worker,
            started,
            now if terminal else None,
            outcome.result,
            int(outcome.has_result),
            outcome.error_type,
            outcome.error_message,
            int(outcome.cached),
            now + retention if terminal and retention is not None else None,
            int(terminal),
            job_id,
            now,
        )

        def work(sql: Op[Any]) -> bool:
            if sql.change(q.FINISH_UPDATE, update) == 0:
                row = sql.row(q.JOB_EXPIRES_AT, (job_id,))
                if row is not None and alive(row[0], now):
                    return False  # terminal already: a late duplicate
                # no record (expired and purged, or published without Client), or an
                # expired one: start it afresh
                sql.change(q.DELETE_JOB, (job_id,))
                named = dict(zip(q.FINISH_ORDER, update, strict=True), channel=channel)
                sql.change(q.FINISH_ATTEMPT, named)
            if terminal:
                sql.change(q.ADVANCE_FEED_SEQ)
            target = outcome.cache
            if target is not None:
                if outcome.status is JobStatus.COMPLETED:
                    sqlc.fill(sql, target, outcome.result, job_id=job_id, now=now)
                elif outcome.status is JobStatus.DEAD:
                    sqlc.release(sql, target.key, job_id)  # failures are never cached
            return True

        return work

    async def cancel_job(self, job_id: str, *, now: float, retention: float | None) -> bool:
        params = {
            "id": job_id,
            "now": now,
            "expires_at": None if retention is None else now + retention,
        }

        def work(sql: Op[bool]) -> bool:
            if not self._owned:
                # On the transport's file a worker runs a job's first delivery without
                # reading its record (see _start_queued): a cancel takes the message
                # out while no worker has it, and refuses once one has.
                current = sql.row(q.GET_JOB, {"id": job_id, "now": now})
                if current is None or current[2] != str(JobStatus.PENDING):
                    return False
                if sql.row(q.JOB_MESSAGE_TAKEN, (job_id,)) is not None:
                    return False
                sql.change(q.DELETE_JOB_MESSAGES, (job_id,))
            if sql.change(q.CANCEL_JOB, params) == 0:
                return False
            sql.change(q.ADVANCE_FEED_SEQ)
            return True

        if job_id in self._starting:
            self._send_start(job_id)  # an attempt this process started commits first
        cancelled = await self._write(work)
        if cancelled:
            self._fed()
        return cancelled

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        channel: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        if status is None:
            statement = q.LIST_JOBS if channel is None else q.LIST_JOBS_BY_CHANNEL
        else:
            by_status = q.LIST_JOBS_BY_STATUS, q.LIST_JOBS_BY_CHANNEL_STATUS
            statement = by_status[channel is not None]
        params = {
            "status": None if status is None else str(status),
            "channel": channel,
            "limit": limit,
            "now": time.time(),
        }
        rows = await self._read(select(statement, params), heavy=limit > HEAVY_ROWS)
        return [job_from_row(row) for row in rows]

    async def count_jobs(self, *, channel: str | None = None) -> dict[JobStatus, int]:
        statement = q.COUNT_JOBS if channel is None else q.COUNT_JOBS_BY_CHANNEL
        params = {"channel": channel, "now": time.time()}
        rows = await self._read(select(statement, params), heavy=True)
        counts = dict.fromkeys(JobStatus, 0)
        counts.update((JobStatus(s), n) for s, n in rows)
        return counts

    # -- result cache --------------------------------------------------------------------

    async def cache_register(self, channel: str, policy: str) -> None:
        await self._write(lambda sql: sql.change(q.REGISTER_POLICY, (channel, policy)))

    async def cache_policy(self, channel: str) -> str | None:
        row = await self._read(lambda sql: sql.row(q.CACHE_POLICY, (channel,)))
        return None if row is None else row[0]

    async def cache_submit(self, items: Sequence[CacheSubmit], *, now: float) -> list[CacheClaim]:
        if not items:
            return []
        claims = await self._write(
            lambda sql: sqlc.submit(sql, items, now), heavy=len(items) > HEAVY_ROWS
        )
        if any(c.kind == "hit" for c in claims):
            self._fed()
        return claims

    async def cache_lookup(self, key: str, *, now: float, count: bool = True) -> CacheEntry | None:
        if not count:
            return await self._read(lambda sql: sqlc.entry(sql, key, now))

        def work(sql: Op[CacheEntry | None]) -> CacheEntry | None:
            found = sqlc.entry(sql, key, now)
            if found is not None:
                sqlc.bump(sql, found.channel, hits=1)
            return found

        return await self._write(work)

    async def cache_fill(
        self, fill: CacheFill, result: bytes, *, job_id: str | None, now: float
    ) -> None:
        await self._write(lambda sql: sqlc.fill(sql, fill, result, job_id=job_id, now=now))

    async def cache_extend(self, key: str, job_id: str, *, lease: float, now: float) -> bool:
        params = {"key": key, "job_id": job_id, "expires_at": now + lease}
        return bool(await self._write(lambda sql: sql.change(q.EXTEND_CLAIM, params)))

    async def cache_release(self, claims: Sequence[tuple[str, str]]) -> None:
        if claims:
            await self._write(lambda sql: sql.many(q.RELEASE_CLAIM, list(claims)))

    async def cache_stats(self, *, channel: str | None = None) -> list[CacheStats]:
        now = time.time()
        return await self._read(lambda sql: sqlc.stats(sql, channel, now), heavy=True)

    async def cache_clear(self, *, channel: str | None = None) -> int:
        return await self._write(lambda sql: sqlc.clear(sql, channel), heavy=True)

    # -- per-key locks -------------------------------------------------------------------

    async def lock_acquire(
        self, key: str, token: str, *, holder: str, lease: float, now: float
    ) -> LockHolder | None:
        params = {
            "key": key,
            "token": token,
            "holder": holder,
            "expires_at": now + lease,
            "now": now,
        }

        def work(sql: Op[LockHolder | None]) -> LockHolder | None:
            if sql.change(q.ACQUIRE_LOCK, params):
                return None
            held_by, expires_at = sql.row(q.LOCK_HOLDER, (key,))
            return LockHolder(key, str(held_by), float(expires_at))

        return await self._write(work)

    async def lock_extend(self, key: str, token: str, *, lease: float, now: float) -> bool:
        params = {"key": key, "token": token, "expires_at": now + lease, "now": now}
        return bool(await self._write(lambda sql: sql.change(q.EXTEND_LOCK, params)))

    async def lock_release(self, key: str, token: str) -> bool:
        return bool(await self._write(lambda sql: sql.change(q.RELEASE_LOCK, (key, token))))

    def queue_lock_release(self, key: str, token: str) -> asyncio.Future[bool] | None:
        if self._owned:
            return None
        return self._queue(Op(lambda sql: bool(sql.change(q.RELEASE_LOCK, (key, token)))))

    async def list_locks(self, *, now: float, prefix: str = "") -> list[LockHolder]:
        params = {"now": now, "prefix": prefix}
        rows = await self._read(lambda sql: sql.rows(q.LIST_LOCKS, params), heavy=True)
        return [LockHolder(str(k), str(h), float(e)) for k, h, e in rows]

    # -- subscriber registry -------------------------------------------------------------

    async def register_subscribers(self, entries: Sequence[tuple[str, str]]) -> None:
        if entries:
            now = time.time()
            rows = [(channel, group, now) for channel, group in dict.fromkeys(entries)]
            await self._write(lambda sql: sql.many(q.REGISTER_SUBSCRIBER, rows))

    async def registered_subscribers(self) -> list[tuple[str, str]]:
        rows = await self._read(lambda sql: sql.rows(q.REGISTERED_SUBSCRIBERS))
        return [(channel, group) for channel, group in rows]

    # -- completion feed -----------------------------------------------------------------

    async def feed_position(self) -> str:
        return str(await self._read(lambda sql: sql.row(q.FEED_POSITION)[0]))

    async def read_feed(self, position: str, *, timeout: float) -> tuple[str, list[FeedEvent]]:
        after = int(position)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def query(sql: Op[tuple[int, list[Any]]]) -> tuple[int, list[Any]]:
            # The version first: a commit landing between the two shows up as a change.
            version = sql.row(q.DATA_VERSION)[0]
            return version, sql.rows(q.READ_FEED, (after, _FEED_BATCH))

        while True:
            written = self._signal.event
            version, rows = await self._read(query)
            if rows:
                events = [FeedEvent(job_id, JobStatus(status)) for job_id, status, _ in rows]
                return str(rows[-1][2]), events
            if not await self._wait_for_change(written, version, deadline):
                return position, []

    async def _wait_for_change(self, written: asyncio.Event, version: int, deadline: float) -> bool:
        """Wait until this object or another connection committed; False at ``deadline``.

        Polls ``data_version`` every millisecond at first, backing off to ``_POLL_MAX``
        while nothing is committed. Each wait starts fast again: a commit elsewhere
        means jobs are being worked on, and completions tend to follow.
        """
        loop = asyncio.get_running_loop()
        interval = _POLL_MIN
        while (remaining := deadline - loop.time()) > 0:
            try:
                async with asyncio.timeout(min(interval, remaining)):
                    await written.wait()
                return True
            except TimeoutError:
                pass
            self.feed_polls += 1
            if await self._read(lambda sql: sql.row(q.DATA_VERSION)[0]) != version:
                return True
            interval = min(interval * 2, _POLL_MAX)
        return False

    # -- application state ---------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        params = {"key": key_arg(key), "now": time.time()}
        row = await self._read(lambda sql: sql.row(q.GET_VALUE, params))
        if row is None:
            return None
        if row[0] != "string":
            raise wrong_kind(key, wants="value")
        return str(row[1])

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        key = key_arg(key)
        params = {"key": key, "value": value_arg(key, value), "expires_at": _deadline(ttl_arg(ttl))}

        def work(sql: Op[None]) -> None:
            sql.change(q.SET_VALUE, params)
            # The key may have been a hash: its fields go with it, as in Redis.
            sql.change(q.DELETE_FIELDS, {"keys": json.dumps([key])})

        await self._write(work)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        unique = list(dict.fromkeys(key_arg(k) for k in keys))

        def work(sql: Op[int]) -> int:
            existed = 0
            now = time.time()
            for chunk in chunks(unique):
                params = {"keys": json.dumps(chunk)}
                deleted = sql.rows(q.DELETE_KEYS, params)
                existed += sum(alive(expires_at, now) for (expires_at,) in deleted)
                sql.change(q.DELETE_FIELDS, params)
            return existed

        return await self._write(work, heavy=len(unique) > HEAVY_ROWS)

    async def hset(self, key: str, mapping: Mapping[str, str], *, ttl: float | None = None) -> None:
        key = key_arg(key)
        checked, ttl = mapping_arg(key, mapping), ttl_arg(ttl)
        if not checked:
            # Redis has no empty hashes: only the expiry can change.
            if ttl is not None:
                await self.expire(key, ttl)
            return
        now = time.time()
        fields = [(key, f, v) for f, v in checked.items()]

        def work(sql: Op[StorageError | None]) -> StorageError | None:
            sql.change(q.DROP_STALE_FIELDS, {"key": key, "now": now})
            mark = {"key": key, "now": now, "has_ttl": ttl is not None}
            if not sql.change(q.MARK_HASH, {**mark, "expires_at": _deadline(ttl, now)}):
                # returned, not raised: the writes committed with this one still commit
                return wrong_kind(key, wants="hash")
            sql.many(q.SET_FIELD, fields)
            return None

        await self._write(work, heavy=len(fields) > HEAVY_ROWS)

    async def hgetall(self, key: str) -> dict[str, str]:
        params = {"key": key_arg(key), "now": time.time()}

        def read(sql: Op[list[Any] | str]) -> list[Any] | str:
            rows = sql.rows(q.GET_FIELDS, params)
            if rows:
                return rows
            kind = sql.row(q.KIND_OF_KEY, params)
            return [] if kind is None else str(kind[0])

        found = await self._read(read)
        if isinstance(found, str):
            raise wrong_kind(key, wants="hash")
        return {str(f): str(v) for f, v in found}

    async def expire(self, key: str, ttl: float) -> bool:
        key, seconds = key_arg(key), ttl_arg(ttl, optional=False)
        assert seconds is not None
        now = time.time()
        params = {"key": key, "now": now, "expires_at": now + seconds}
        return bool(await self._write(lambda sql: sql.change(q.EXPIRE_KEY, params)))

    # -- housekeeping --------------------------------------------------------------------

    async def purge_expired(self, *, now: float) -> int:
        def work(sql: Op[int]) -> int:
            jobs = sql.change(q.PURGE_JOBS, {"now": now})
            keys = sql.rows(q.PURGE_KEYS, {"now": now})
            hashes = [key for key, kind in keys if kind == "hash"]
            for chunk in chunks(hashes):
                sql.change(q.DELETE_FIELDS, {"keys": json.dumps(list(chunk))})
            locks = sql.change(q.PURGE_LOCKS, {"now": now})
            return jobs + len(keys) + locks + sqlc.purge(sql, now)

        return await self._write(work, heavy=True)


def _deadline(ttl: float | None, now: float | None = None) -> float | None:
    if ttl is None:
        return None
    return (time.time() if now is None else now) + ttl
