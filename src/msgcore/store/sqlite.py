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
import sqlite3
import time
import weakref
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from typing import Any, Generic, TypeVar, cast

from msgcore.constants import HEADER_JOB_ID
from msgcore.exceptions import StorageError
from msgcore.sqlite.client.base import OutgoingMessage
from msgcore.sqlite.client.connection import SqliteClient
from msgcore.sqlite.publisher.producer import CAPTURED
from msgcore.store import queries as q
from msgcore.store.base import TERMINAL, FeedEvent, JobRecord, JobStatus, Store
from msgcore.urls import parse_sqlite_url, redact_url

__all__ = ["SqliteStore"]

T = TypeVar("T")

_CHUNK = 500
"""Ids per statement of a batched read or write."""
_HEAVY_ROWS = 64
"""Above this many rows an operation runs on aiosqlite's thread, not the event loop."""
_FEED_BATCH = 1000
_POLL_MIN = 0.001
_POLL_MAX = 0.05


class _Op(Generic[T]):
    """One store operation, handed to ``SqliteClient`` as ``fn(connection)``.

    It may run on aiosqlite's thread, so it counts its statements in itself; the store
    adds the count to ``queries`` back on the event loop.
    """

    __slots__ = ("_conn", "count", "fn")

    def __init__(self, fn: Callable[[_Op[T]], T]) -> None:
        self.fn = fn
        self.count = 0
        self._conn: sqlite3.Connection | None = None

    def __call__(self, conn: sqlite3.Connection) -> T:
        self._conn = conn
        return self.fn(self)

    def _execute(self, sql: str, params: Any) -> sqlite3.Cursor:
        assert self._conn is not None
        self.count += 1
        return self._conn.execute(sql, params)

    def rows(self, sql: str, params: Any = ()) -> list[Any]:
        return self._execute(sql, params).fetchall()

    def row(self, sql: str, params: Any = ()) -> Any:
        rows = self.rows(sql, params)
        return rows[0] if rows else None

    def change(self, sql: str, params: Any = ()) -> int:
        return self._execute(sql, params).rowcount

    def many(self, sql: str, params: Sequence[Sequence[Any]]) -> None:
        assert self._conn is not None
        self.count += 1
        self._conn.executemany(sql, params)


def _create_schema(sql: _Op[None]) -> None:
    # One transaction (the writer's); IF NOT EXISTS makes a concurrent opener harmless.
    for statement in q.SCHEMA.split(";"):
        if statement.strip():
            sql.change(statement)


def _select(statement: str, params: Any) -> Callable[[_Op[list[Any]]], list[Any]]:
    return lambda sql: sql.rows(statement, params)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _alive(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


def _record(row: Sequence[Any]) -> JobRecord:
    (job_id, channel, status, attempts, worker_id, created_at, started_at, finished_at,
     result, has_result, error_type, error_message, cached, expires_at, extra) = row  # fmt: skip
    return JobRecord(
        job_id=job_id,
        channel=channel,
        status=JobStatus(status),
        attempts=attempts,
        worker_id=worker_id,
        created_at=created_at,
        started_at=started_at,
        finished_at=finished_at,
        result=None if result is None else bytes(result),
        has_result=bool(has_result),
        error_type=error_type,
        error_message=error_message,
        cached=bool(cached),
        expires_at=expires_at,
        extra=json.loads(extra) if extra else {},
    )


def _columns(r: JobRecord) -> tuple[Any, ...]:
    """``r`` in the order of ``q.JOB_COLUMNS``."""
    return (
        r.job_id, r.channel, str(r.status), r.attempts, r.worker_id, r.created_at,
        r.started_at, r.finished_at, r.result, int(r.has_result), r.error_type,
        r.error_message, int(r.cached), r.expires_at,
        json.dumps(dict(r.extra), separators=(",", ":")) if r.extra else None,
    )  # fmt: skip


class _FeedSignal:
    """Wakes the feed readers of every store object on one connection."""

    def __init__(self) -> None:
        self.event = asyncio.Event()
        self.schema_ready = False

    def fire(self) -> None:
        self.event.set()
        self.event = asyncio.Event()


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
                await self._write(_create_schema)
                self._signal.schema_ready = True
            return
        if self._db.connected:
            return
        await self._db.connect()
        try:
            await self._write(_create_schema)
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

    async def _read(self, fn: Callable[[_Op[T]], T], *, heavy: bool = False) -> T:
        self._check_open()
        op = _Op(fn)
        try:
            return await self._db._run(op, heavy=heavy)
        finally:
            self.queries += op.count

    async def _write(self, fn: Callable[[_Op[T]], T], *, heavy: bool = False) -> T:
        """Run ``fn`` in the next group commit, with whatever other writes are queued."""
        self._check_open()
        op = _Op(fn)
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
        return await self._write(self._create_op(records), heavy=len(records) > _HEAVY_ROWS)

    def _create_op(
        self, records: Sequence[JobRecord]
    ) -> Callable[[_Op[list[tuple[JobRecord, bool]]]], list[tuple[JobRecord, bool]]]:
        now = time.time()

        def work(sql: _Op[list[tuple[JobRecord, bool]]]) -> list[tuple[JobRecord, bool]]:
            # Inside the write transaction: nobody can insert between the read and ours.
            stored: dict[str, JobRecord] = {}
            ids = list(dict.fromkeys(r.job_id for r in records))
            if len(ids) == 1:  # a primary-key lookup, cheaper than json_each
                row = sql.row(q.GET_JOB, {"id": ids[0], "now": now})
                if row is not None:
                    stored[row[0]] = _record(row)
            else:
                for chunk in _chunks(ids):
                    for row in sql.rows(q.GET_JOBS, {"ids": json.dumps(chunk), "now": now}):
                        stored[row[0]] = _record(row)
            out: list[tuple[JobRecord, bool]] = []
            new: list[tuple[Any, ...]] = []
            for r in records:
                if r.job_id in stored:
                    out.append((stored[r.job_id], False))
                else:
                    stored[r.job_id] = r
                    new.append(_columns(r))
                    out.append((r, True))
            if new:
                sql.many(q.INSERT_JOB, new)
            return out

        return work

    async def create_jobs_publishing(
        self,
        records: Sequence[JobRecord],
        publish: Callable[[], Awaitable[None]],
    ) -> list[tuple[JobRecord, bool]] | None:
        if self._owned or not records:
            return None
        captured: list[OutgoingMessage] = []
        token = CAPTURED.set(captured)
        try:
            await publish()
        finally:
            CAPTURED.reset(token)
        create = self._create_op(records)

        def work(sql: _Op[list[tuple[JobRecord, bool]]]) -> list[tuple[JobRecord, bool]]:
            stored = create(sql)
            fresh = {record.job_id for record, created in stored if created}
            keep = [m for m in captured if (m.headers or {}).get(HEADER_JOB_ID) in fresh]
            if keep:
                assert sql._conn is not None
                sql.count += 1
                self._db.insert_op(keep)(sql._conn)
            return stored

        return await self._write(work, heavy=len(records) > _HEAVY_ROWS)

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        """Delete job records (a submit that failed to publish); how many existed."""
        ids = list(dict.fromkeys(job_ids))

        def work(sql: _Op[int]) -> int:
            return sum(
                sql.change(q.DELETE_JOBS, {"ids": json.dumps(chunk)}) for chunk in _chunks(ids)
            )

        return await self._write(work, heavy=len(ids) > _HEAVY_ROWS) if ids else 0

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        ids = list(dict.fromkeys(job_ids))
        now = time.time()
        if len(ids) == 1:
            row = await self._read(lambda sql: sql.row(q.GET_JOB, {"id": ids[0], "now": now}))
            return {} if row is None else {ids[0]: _record(row)}
        found: dict[str, JobRecord] = {}
        for chunk in _chunks(ids):
            params = {"ids": json.dumps(chunk), "now": now}
            rows = await self._read(_select(q.GET_JOBS, params), heavy=len(chunk) > _HEAVY_ROWS)
            found.update((row[0], _record(row)) for row in rows)
        return found

    async def start_attempt(
        self, job_id: str, *, channel: str, attempt: int, worker_id: str, now: float
    ) -> JobRecord:
        params = {
            "id": job_id,
            "channel": channel,
            "attempt": attempt,
            "worker_id": worker_id,
            "now": now,
        }

        def work(sql: _Op[JobRecord]) -> JobRecord:
            row = sql.row(q.START_ATTEMPT, params)
            if row is None:
                # Refused: terminal (return it as it is) or expired (start afresh).
                row = sql.row(q.GET_JOB, {"id": job_id, "now": now})
                if row is not None:
                    return _record(row)
                sql.change(q.DELETE_JOB, (job_id,))
                row = sql.row(q.START_ATTEMPT, params)
            return _record(row)

        return await self._write(work)

    async def finish_attempt(
        self,
        job_id: str,
        *,
        status: JobStatus,
        attempt: int,
        now: float,
        retention: float | None,
        result: bytes | None = None,
        has_result: bool = False,
        error_type: str | None = None,
        error_message: str | None = None,
        cached: bool = False,
    ) -> bool:
        op, terminal = self._finish_op(
            job_id,
            status=status,
            attempt=attempt,
            now=now,
            retention=retention,
            result=result,
            has_result=has_result,
            error_type=error_type,
            error_message=error_message,
            cached=cached,
        )
        self._check_open()
        try:
            finished = cast(bool, await self._db._write(op))
        finally:
            self.queries += op.count
        if finished and terminal:
            self._fed()
        return finished

    def queue_finish_attempt(
        self,
        job_id: str,
        *,
        status: JobStatus,
        attempt: int,
        now: float,
        retention: float | None,
        result: bytes | None = None,
        has_result: bool = False,
        error_type: str | None = None,
        error_message: str | None = None,
        cached: bool = False,
    ) -> asyncio.Future[bool] | None:
        if self._owned:
            return None
        self._check_open()
        op, terminal = self._finish_op(
            job_id,
            status=status,
            attempt=attempt,
            now=now,
            retention=retention,
            result=result,
            has_result=has_result,
            error_type=error_type,
            error_message=error_message,
            cached=cached,
        )
        future: asyncio.Future[bool] = self._db._write(op)

        def done(f: asyncio.Future[bool]) -> None:
            self.queries += op.count
            if not f.cancelled() and f.exception() is None and f.result() and terminal:
                self._fed()

        future.add_done_callback(done)
        return future

    def _finish_op(
        self,
        job_id: str,
        *,
        status: JobStatus,
        attempt: int,
        now: float,
        retention: float | None,
        result: bytes | None,
        has_result: bool,
        error_type: str | None,
        error_message: str | None,
        cached: bool,
    ) -> tuple[_Op[bool], bool]:
        terminal = status in TERMINAL
        params = {
            "id": job_id,
            "status": str(status),
            "attempt": attempt,
            "now": now,
            "finished_at": now if terminal else None,
            "result": result,
            "has_result": int(has_result),
            "error_type": error_type,
            "error_message": error_message,
            "cached": int(cached),
            "expires_at": now + retention if terminal and retention is not None else None,
            "terminal": int(terminal),
        }

        def work(sql: _Op[bool]) -> bool:
            if sql.change(q.FINISH_ATTEMPT, params) == 0:
                row = sql.row(q.JOB_EXPIRES_AT, (job_id,))
                if row is not None and _alive(row[0], now):
                    return False  # terminal already: a late duplicate
                sql.change(q.DELETE_JOB, (job_id,))
                sql.change(q.FINISH_ATTEMPT, params)
            if terminal:
                sql.change(q.ADVANCE_FEED_SEQ)
            return True

        return _Op(work), terminal

    async def cancel_job(self, job_id: str, *, now: float, retention: float | None) -> bool:
        params = {
            "id": job_id,
            "now": now,
            "expires_at": None if retention is None else now + retention,
        }

        def work(sql: _Op[bool]) -> bool:
            if sql.change(q.CANCEL_JOB, params) == 0:
                return False
            sql.change(q.ADVANCE_FEED_SEQ)
            return True

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
        rows = await self._read(_select(statement, params), heavy=limit > _HEAVY_ROWS)
        return [_record(row) for row in rows]

    async def count_jobs(self, *, channel: str | None = None) -> dict[JobStatus, int]:
        statement = q.COUNT_JOBS if channel is None else q.COUNT_JOBS_BY_CHANNEL
        params = {"channel": channel, "now": time.time()}
        rows = await self._read(_select(statement, params), heavy=True)
        counts = dict.fromkeys(JobStatus, 0)
        counts.update((JobStatus(s), n) for s, n in rows)
        return counts

    # -- completion feed -----------------------------------------------------------------

    async def feed_position(self) -> str:
        return str(await self._read(lambda sql: sql.row(q.FEED_POSITION)[0]))

    async def read_feed(self, position: str, *, timeout: float) -> tuple[str, list[FeedEvent]]:
        after = int(position)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout

        def query(sql: _Op[tuple[int, list[Any]]]) -> tuple[int, list[Any]]:
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
        params = {"key": key, "now": time.time()}
        row = await self._read(lambda sql: sql.row(q.GET_VALUE, params))
        return None if row is None else str(row[0])

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        params = {"key": key, "value": value, "expires_at": _deadline(ttl)}

        def work(sql: _Op[None]) -> None:
            sql.change(q.SET_VALUE, params)
            # The key may have been a hash: its fields go with it, as in Redis.
            sql.change(q.DELETE_FIELDS, {"keys": json.dumps([key])})

        await self._write(work)

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        unique = list(dict.fromkeys(keys))

        def work(sql: _Op[int]) -> int:
            existed = 0
            now = time.time()
            for chunk in _chunks(unique):
                params = {"keys": json.dumps(chunk)}
                deleted = sql.rows(q.DELETE_KEYS, params)
                existed += sum(_alive(expires_at, now) for (expires_at,) in deleted)
                sql.change(q.DELETE_FIELDS, params)
            return existed

        return await self._write(work, heavy=len(unique) > _HEAVY_ROWS)

    async def hset(self, key: str, mapping: Mapping[str, str], *, ttl: float | None = None) -> None:
        if not mapping:
            # Redis has no empty hashes: only the expiry can change.
            if ttl is not None:
                await self.expire(key, ttl)
            return
        now = time.time()
        fields = [(key, f, v) for f, v in mapping.items()]

        def work(sql: _Op[None]) -> None:
            sql.change(q.DROP_STALE_FIELDS, {"key": key, "now": now})
            mark = {"key": key, "now": now, "has_ttl": ttl is not None}
            sql.change(q.MARK_HASH, {**mark, "expires_at": _deadline(ttl, now)})
            sql.many(q.SET_FIELD, fields)

        await self._write(work, heavy=len(fields) > _HEAVY_ROWS)

    async def hgetall(self, key: str) -> dict[str, str]:
        params = {"key": key, "now": time.time()}
        rows = await self._read(lambda sql: sql.rows(q.GET_FIELDS, params))
        return {str(f): str(v) for f, v in rows}

    async def expire(self, key: str, ttl: float) -> bool:
        now = time.time()
        params = {"key": key, "now": now, "expires_at": now + ttl}
        return bool(await self._write(lambda sql: sql.change(q.EXPIRE_KEY, params)))

    # -- housekeeping --------------------------------------------------------------------

    async def purge_expired(self, *, now: float) -> int:
        def work(sql: _Op[int]) -> int:
            jobs = sql.change(q.PURGE_JOBS, {"now": now})
            keys = sql.rows(q.PURGE_KEYS, {"now": now})
            hashes = [key for key, kind in keys if kind == "hash"]
            for chunk in _chunks(hashes):
                sql.change(q.DELETE_FIELDS, {"keys": json.dumps(list(chunk))})
            return jobs + len(keys)

        return await self._write(work, heavy=True)


def _deadline(ttl: float | None, now: float | None = None) -> float | None:
    if ttl is None:
        return None
    return (time.time() if now is None else now) + ttl
