"""``SqliteClient``: the leased-queue transport on one aiosqlite connection.

Each public call crosses to aiosqlite's worker thread once and runs a whole
transaction there. Writes from many coroutines (publishes, acks, nacks) are grouped
into one ``BEGIN IMMEDIATE`` transaction while a previous group is committing, so
the write lock is taken once per group instead of once per message.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import secrets
import sqlite3
import threading
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import aiosqlite

from msgcore.constants import DEFAULT_GROUP, SCHEMA_VERSION
from msgcore.exceptions import (
    DatabaseLockedError,
    DatabaseOpenError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)

from . import queries as q
from .base import Claim, DeadLetter, OutgoingMessage, QueueTransport, StoredMessage
from .errors import storage_error
from .headers import decode_headers, encode_headers

T = TypeVar("T")

logger = logging.getLogger("msgcore.sqlite")

# Batches above this many rows are written on the worker thread: the event loop must
# not stall for milliseconds.
_INLINE_MAX_ROWS = 64
# Write transactions between WAL checkpoints (auto-checkpointing is off: it would
# fsync on the event-loop thread).
_CHECKPOINT_EVERY = 256
# A PASSIVE checkpoint never waits: a lock it cannot take now leaves the frames for the
# next one.
_CHECKPOINT_BUSY_TIMEOUT = 0.0
_WriteOp = Callable[[sqlite3.Connection], Any]


class _Tokens:
    """Lease tokens unique across processes and restarts: random prefix, counter."""

    prefix = ""
    counter = itertools.count(1)

    @classmethod
    def reset(cls) -> None:
        cls.prefix = secrets.token_hex(6)
        cls.counter = itertools.count(1)


_Tokens.reset()
# A forked worker must never reuse its parent's tokens: fencing relies on them.
os.register_at_fork(after_in_child=_Tokens.reset)


def new_lease_token() -> str:
    return f"{_Tokens.prefix}{next(_Tokens.counter):x}"


def _is_busy(exc: sqlite3.Error) -> bool:
    name = getattr(exc, "sqlite_errorname", "") or ""
    return name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or "locked" in str(exc)


def _data_version(c: sqlite3.Connection) -> int:
    return int(c.execute(q.DATA_VERSION).fetchone()[0])


class _WouldBlock(Exception):
    """Raised instead of waiting for the write lock on the event-loop thread."""


_NOT_INLINE: Any = object()
"""What ``SqliteClient._inline`` returns for an operation it left to the worker thread."""

_mode = threading.local()
"""``_mode.inline`` is True while an operation runs on the event-loop thread."""


def _locked(c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], busy_timeout: float) -> T:
    """Run ``fn`` in a write transaction, waiting up to ``busy_timeout`` for the lock.

    SQLite's own busy handler first sleeps a whole millisecond and then longer; write
    transactions here last tens of microseconds, so retrying in finer steps keeps
    several processes on one file from idling in each other's way. On the event-loop
    thread it never waits: the operation moves to the worker thread instead.
    """
    deadline = time.monotonic() + busy_timeout
    pause = 0.00005
    while True:
        try:
            c.execute("BEGIN IMMEDIATE")
            break
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise
            if getattr(_mode, "inline", False):
                raise _WouldBlock from exc
            if time.monotonic() >= deadline:
                raise
            time.sleep(pause)
            pause = min(pause * 2, 0.002)
    try:
        result = fn(c)
        c.execute("COMMIT")
    except BaseException:
        if c.in_transaction:
            c.execute("ROLLBACK")
        raise
    return result


def _row_to_message(
    row: tuple[Any, ...], queue: str, group: str, token: str | None
) -> StoredMessage:
    (rid, body, headers, ctype, corr, mid, reply_to, prio, attempts, created) = row
    return StoredMessage(
        id=rid,
        queue=queue,
        group=group,
        body=bytes(body),
        headers=decode_headers(headers),
        content_type=ctype,
        correlation_id=corr,
        message_id=mid,
        reply_to=reply_to,
        priority=prio,
        attempts=attempts,
        created_at=created,
        lease_token=token,
    )


class SqliteClient(QueueTransport):
    """The SQLite implementation of :class:`QueueTransport`."""

    def __init__(self, path: str, *, busy_timeout: float = 5.0, inline: bool = True) -> None:
        self.path = path
        self.busy_timeout = busy_timeout
        self.inline = inline
        """Run short operations on the event-loop thread (see ``_run``)."""
        self._threaded = 0
        self._commits = 0
        self._checkpoint: asyncio.Future[None] | None = None
        self._checkpointer: sqlite3.Connection | None = None
        """A connection of its own for WAL checkpoints (see ``_wal_checkpoint``)."""
        self._heavy: set[_WriteOp] = set()
        self._conn: aiosqlite.Connection | None = None
        self._pending: list[tuple[_WriteOp, asyncio.Future[Any]]] = []
        self._writer: asyncio.Task[None] | None = None
        self.on_commit: Callable[[set[str]], None] | None = None
        """Called with the queues that received rows, after each commit that stored some."""
        self._touched: set[str] = set()

    # -- lifecycle ---------------------------------------------------------------

    async def connect(self) -> None:
        directory = Path(self.path).resolve().parent  # noqa: ASYNC240 - one stat at startup
        if not directory.is_dir():
            raise DatabaseOpenError(
                f"Cannot open the SQLite database {self.path}: its directory {directory} "
                "does not exist. Create it, or fix the path in the URL."
            )
        pending: aiosqlite.Connection | None = None
        try:
            pending = aiosqlite.connect(
                self.path, timeout=self.busy_timeout, isolation_level=None, check_same_thread=False
            )
            self._conn = await pending
            await self._conn._execute(self._init_schema, self._conn._conn, self.busy_timeout)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            await self._abandon(pending)
            raise storage_error(exc, path=self.path, busy_timeout=self.busy_timeout) from exc
        except BaseException:
            await self._abandon(pending)
            raise

    async def _abandon(self, pending: aiosqlite.Connection | None) -> None:
        await self._close_quietly()
        # aiosqlite stops its worker thread by itself after a failed open; wait for it, or
        # it calls back into this event loop after the caller has closed it.
        if pending is not None and pending._thread.is_alive():
            await asyncio.to_thread(pending._thread.join, 5)

    @staticmethod
    def _init_schema(conn: sqlite3.Connection, busy_timeout: float) -> None:
        # Startup may race other processes creating the schema: let SQLite wait here.
        conn.execute(f"PRAGMA busy_timeout={int(busy_timeout * 1000)}")
        deadline = time.monotonic() + busy_timeout
        for pragma in q.PRAGMAS:
            SqliteClient._patiently(conn, pragma, deadline)
        # Probe the file before writing: a non-database file fails here with NOTADB.
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        found = SqliteClient._schema_in_place(conn)
        if found is None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                for statement in q.SCHEMA.split(";"):
                    if statement.strip():
                        conn.execute(statement)
                conn.execute(q.SET_SCHEMA_VERSION, (str(SCHEMA_VERSION),))
                conn.execute(q.SET_SCHEMA_DIGEST, (q.SCHEMA_DIGEST,))
                found = int(conn.execute(q.GET_SCHEMA_VERSION).fetchone()[0])
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        # From here on write transactions wait in _locked(), in finer steps.
        conn.execute("PRAGMA busy_timeout=0")
        if found > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"The database was created by a newer msgcore (schema {found}, this version "
                f"reads {SCHEMA_VERSION}). Upgrade msgcore on this host."
            )

    @staticmethod
    def _patiently(conn: sqlite3.Connection, sql: str, deadline: float) -> None:
        """``sql``, tried again on SQLITE_BUSY until ``deadline`` (on this worker thread).

        ``PRAGMA journal_mode=WAL`` on a new file returns SQLITE_BUSY at once, without
        SQLite's busy handler, while another process holds a write lock there: two workers
        starting together on a fresh file made one of them fail after ~10 ms.
        """
        pause = 0.002
        while True:
            try:
                conn.execute(sql).fetchall()
                return
            except sqlite3.OperationalError as exc:
                if exc.sqlite_errorcode & 0xFF != sqlite3.SQLITE_BUSY:
                    raise
                if time.monotonic() + pause > deadline:
                    raise
            time.sleep(pause)
            pause = min(pause * 2, 0.05)

    @staticmethod
    def _schema_in_place(conn: sqlite3.Connection) -> int | None:
        """The schema version when this version's tables are in place already, else None.

        A read, so that a worker starting beside busy ones does not queue for the write
        lock (SQLite's busy handler is not fair: a waiter can miss every gap between
        another process's transactions).
        """
        try:
            version, digest = conn.execute(q.GET_SCHEMA_STATE).fetchone()
        except sqlite3.OperationalError:  # a new file: no tables yet
            return None
        if version is None or digest != q.SCHEMA_DIGEST:
            return None
        return int(version)

    async def _close_quietly(self) -> None:
        if self._conn is not None:
            # closing after a failed open: the open error is the one to report
            with contextlib.suppress(Exception):
                await self._conn.close()
            self._conn = None

    async def close(self) -> None:
        if self._checkpoint is not None:
            await asyncio.gather(self._checkpoint, return_exceptions=True)
        if self._checkpointer is not None:
            self._checkpointer.close()
            self._checkpointer = None
        if self._writer is not None:
            # Let queued settlements commit: dropping an ack here would redeliver.
            await asyncio.gather(self._writer, return_exceptions=True)
        await self._close_quietly()

    @property
    def connected(self) -> bool:
        return self._conn is not None

    async def ping(self) -> bool:
        if self._conn is None:
            return False
        try:
            await self._run(lambda c: c.execute("SELECT 1").fetchone())
        except Exception:
            return False
        return True

    # -- thread crossing -----------------------------------------------------------

    def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            raise StorageError(
                f"The SQLite transport for {self.path} is not connected: call "
                "`await broker.connect()` (or start the broker) first."
            )
        return self._conn

    async def _run(self, fn: Callable[[sqlite3.Connection], T], *, heavy: bool = False) -> T:
        """Run ``fn`` with the connection, on this thread when that cannot block.

        Handing every statement to aiosqlite's thread costs two thread switches and a
        GIL hand-over between cores, more than the SQL itself (tens of microseconds in
        WAL mode). So short operations run right here while the worker thread is idle;
        anything that would wait for the write lock, and heavy batches, go to the thread.
        """
        conn = self._connection()
        if not heavy:
            result = self._inline(conn, fn)
            if result is not _NOT_INLINE:
                return cast(T, result)
        self._threaded += 1
        try:
            result = await conn._execute(fn, conn._conn)  # type: ignore[no-untyped-call]
        except sqlite3.Error as exc:
            raise storage_error(exc, path=self.path, busy_timeout=self.busy_timeout) from exc
        finally:
            self._threaded -= 1
        return cast(T, result)

    def _inline(self, conn: aiosqlite.Connection, fn: Callable[[sqlite3.Connection], T]) -> Any:
        """``fn``'s result, run on this thread; ``_NOT_INLINE`` when that could block
        (the worker thread is busy, or another connection holds the write lock)."""
        if not self.inline or self._threaded:
            return _NOT_INLINE
        _mode.inline = True
        try:
            return fn(conn._conn)
        except _WouldBlock:
            return _NOT_INLINE  # another connection holds the write lock: wait on the thread
        except sqlite3.OperationalError as exc:
            if not _is_busy(exc):
                raise storage_error(exc, path=self.path, busy_timeout=self.busy_timeout) from exc
            return _NOT_INLINE
        except sqlite3.Error as exc:
            raise storage_error(exc, path=self.path, busy_timeout=self.busy_timeout) from exc
        finally:
            _mode.inline = False

    def _committed(self) -> None:
        """Count write transactions; checkpoint the WAL off the event loop now and then."""
        self._commits += 1
        if self._commits % _CHECKPOINT_EVERY == 0 and (
            self._checkpoint is None or self._checkpoint.done()
        ):
            self._checkpoint = asyncio.ensure_future(self._wal_checkpoint())

    async def _wal_checkpoint(self) -> None:
        """Copy the WAL into the database file, on a connection and thread of their own.

        The copy takes milliseconds (pages and an fsync) and takes no lock that writers
        wait for. Run on the transport's connection it held that connection's thread,
        and every transaction behind it waited, the loop's inline ones included: a stall
        of the whole worker every ``_CHECKPOINT_EVERY`` commits. Only the short second
        step (``_checkpoint_now``) holds the write lock.
        """
        try:
            await asyncio.to_thread(self._checkpoint_now)
        except (sqlite3.Error, OSError, RuntimeError) as exc:  # the next one copies the rest
            logger.debug("WAL checkpoint of %s skipped: %s", self.path, exc)

    def _checkpoint_now(self) -> None:
        conn = self._checkpointer
        if conn is None:
            conn = sqlite3.connect(
                self.path,
                timeout=_CHECKPOINT_BUSY_TIMEOUT,
                isolation_level=None,
                check_same_thread=False,  # one checkpoint at a time, on any pool thread
            )
            conn.execute("PRAGMA synchronous=NORMAL")
            self._checkpointer = conn
        conn.execute(q.WAL_CHECKPOINT).fetchall()
        # Frames committed during that copy keep the WAL from being rewound, and under a
        # steady stream of commits it would then grow without end. So copy those few
        # with the write lock held, which lets the next writer start the WAL over. Not
        # waited for: while a transaction holds the lock this is a PASSIVE copy again,
        # and the next checkpoint tries once more.
        conn.execute(q.WAL_CHECKPOINT_RESTART).fetchall()

    def commit_now(self, op: _WriteOp) -> tuple[bool, Any]:
        """``(True, op's result)``: ``op`` committed in a transaction of its own, right
        here on the event loop. ``(False, None)``, nothing done, when another write is
        queued or running (commit order is the order of the writes) or another
        connection holds the file's write lock (the loop does not wait for it).

        For a caller that would otherwise wait for the next group commit alone: a
        queued write costs a future, a writer task and two loop iterations, more than
        the transaction itself when there is nothing to commit it with.
        """
        if self._pending or (self._writer is not None and not self._writer.done()):
            return False, None
        conn = self._connection()
        try:
            results = self._inline(
                conn, partial(_transaction, ops=(op,), busy_timeout=self.busy_timeout)
            )
        except BaseException:
            self._touched.clear()  # rolled back: nothing to wake consumers for
            raise
        if results is _NOT_INLINE:
            self._touched.clear()
            return False, None
        self._after_commit()
        return True, results[0]

    def _after_commit(self) -> None:
        self._committed()
        touched, self._touched = self._touched, set()
        if touched and self.on_commit is not None:
            self.on_commit(touched)

    def _write(self, op: _WriteOp) -> asyncio.Future[Any]:
        """Queue a write for the next group commit."""
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending.append((op, fut))
        if self._writer is None or self._writer.done():
            self._writer = asyncio.ensure_future(self._drain())
        return fut

    async def _drain(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            ops = [op for op, _ in batch]
            heavy_ops = {op for op in ops if op in self._heavy}
            self._heavy.difference_update(ops)
            try:
                results = await self._run(
                    partial(_transaction, ops=ops, busy_timeout=self.busy_timeout),
                    heavy=bool(heavy_ops),
                )
            except BaseException as exc:
                self._touched.clear()
                if len(batch) > 1 and _one_write_failed(exc):
                    # One write's own error (a value SQLite cannot bind, a constraint)
                    # rolled back every write committed with it: each goes again alone,
                    # so that only the bad one fails. Costs nothing until a write fails.
                    await self._one_by_one(batch, heavy_ops)
                    continue
                for _, fut in batch:
                    if fut.done():
                        continue
                    if isinstance(exc, Exception):
                        fut.set_exception(exc)
                    else:
                        fut.cancel()
                if not isinstance(exc, Exception):
                    raise
                continue
            self._after_commit()
            for (_, fut), res in zip(batch, results, strict=True):
                _settle(fut, res)

    async def _one_by_one(
        self, batch: list[tuple[_WriteOp, asyncio.Future[Any]]], heavy_ops: set[_WriteOp]
    ) -> None:
        for i, (op, fut) in enumerate(batch):
            if fut.done():
                continue
            try:
                [result] = await self._run(
                    partial(_transaction, ops=(op,), busy_timeout=self.busy_timeout),
                    heavy=op in heavy_ops,
                )
            except Exception as exc:
                self._touched.clear()
                if not fut.done():  # its caller may have given up meanwhile
                    fut.set_exception(exc)
                continue
            except BaseException:
                self._touched.clear()
                for _, rest in batch[i:]:
                    rest.cancel()
                raise
            self._after_commit()
            _settle(fut, result)

    # -- publishing ----------------------------------------------------------------

    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        if messages:
            op = self.insert_op(messages)
            if len(messages) > _INLINE_MAX_ROWS:
                self._heavy.add(op)
            await self._write(op)

    def insert_op(
        self, messages: Sequence[OutgoingMessage]
    ) -> Callable[[sqlite3.Connection], None]:
        """The write of ``publish(messages)``, for a caller that composes it into a
        transaction of its own (the job store: a job's record and its message commit
        together). Consumers are woken after that transaction commits."""

        def op(c: sqlite3.Connection) -> None:
            _insert_messages(c, messages, self._touched)

        return op

    async def register_group(self, queue: str, group: str) -> None:
        def op(c: sqlite3.Connection) -> None:
            first = c.execute(q.GROUPS_OF_QUEUE, (queue,)).fetchone() is None
            c.execute(q.REGISTER_GROUP, (queue, group, time.time()))
            if first and group != DEFAULT_GROUP:
                # Messages published before any group existed were stored for the
                # default group; the first group to appear takes them, so nothing
                # published ahead of its consumers is stranded.
                c.execute(q.ADOPT_ORPHANS, (group, queue, DEFAULT_GROUP))
                self._touched.add(queue)

        await self._write(op)

    # -- consuming -----------------------------------------------------------------

    async def claim(
        self,
        queue: str,
        group: str,
        *,
        limit: int,
        lease_seconds: float,
        worker_id: str,
    ) -> Claim:
        token = new_lease_token()

        def take(c: sqlite3.Connection, now: float) -> Claim:
            rows = c.execute(
                q.CLAIM, (token, now + lease_seconds, worker_id, queue, group, now, limit)
            ).fetchall()
            drained = len(rows) < limit
            due = c.execute(q.NEXT_DUE, (queue, group)).fetchone()[0] if drained else None
            rows.sort(key=lambda r: (-r[7], r[0]))
            return Claim([_row_to_message(r, queue, group, token) for r in rows], due, drained)

        if self._writer is not None and not self._writer.done():
            # A group commit is under way (acks, publishes): ride along in the next one
            # rather than taking the write lock a second time.
            claim: Claim = await self._write(lambda c: take(c, time.time()))
            return claim

        def op(c: sqlite3.Connection) -> Claim:
            now = time.time()
            # The cheap read first: an idle consumer never takes the write lock.
            if c.execute(q.HAS_CLAIMABLE, (queue, group, now)).fetchone() is None:
                due = c.execute(q.NEXT_DUE, (queue, group)).fetchone()[0]
                return Claim([], due, drained=True)
            return _locked(c, lambda c: take(c, now), self.busy_timeout)

        return await self._run(op)

    async def ack(self, row_id: int, token: str, outbox: Sequence[OutgoingMessage] = ()) -> bool:
        return await self.queue_ack(row_id, token, outbox)

    def queue_ack(
        self, row_id: int, token: str, outbox: Sequence[OutgoingMessage] = ()
    ) -> asyncio.Future[bool]:
        def op(c: sqlite3.Connection) -> bool:
            if c.execute(q.ACK, (row_id, token)).rowcount == 0:
                return False
            if outbox:
                _insert_messages(c, outbox, self._touched)
            return True

        return self._write(op)

    async def nack(
        self, row_id: int, token: str, *, queue: str, retry_at: float, error: str | None
    ) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            if c.execute(q.NACK, (retry_at, error, row_id, token)).rowcount == 0:
                return False
            # Its consumers may be sleeping until a later due time: wake them to re-plan.
            self._touched.add(queue)
            return True

        return bool(await self._write(op))

    async def dead_letter(self, row_id: int, token: str, *, reason: str, error: str | None) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            moved = c.execute(q.DEAD_LETTER, (time.time(), reason, error, row_id, token)).rowcount
            if moved:
                c.execute(q.DELETE_MESSAGE, (row_id,))
            return moved > 0

        return bool(await self._write(op))

    async def release(self, rows: Sequence[tuple[int, str]], *, queue: str, uncount: bool) -> int:
        if not rows:
            return 0
        now = time.time()
        params = [(now, 1 if uncount else 0, rid, tok) for rid, tok in rows]

        def op(c: sqlite3.Connection) -> int:
            self._touched.add(queue)
            return int(c.executemany(q.RELEASE, params).rowcount)

        return int(await self._write(op))

    async def extend_leases(self, tokens: Sequence[str], lease_seconds: float) -> None:
        if tokens:
            until = time.time() + lease_seconds
            params = [(until, t) for t in tokens]
            await self._write(lambda c: c.executemany(q.EXTEND_LEASE, params))

    async def take_replies(self, queue: str) -> list[StoredMessage]:
        def op(c: sqlite3.Connection) -> list[StoredMessage]:
            if c.execute(q.HAS_CLAIMABLE, (queue, DEFAULT_GROUP, float("inf"))).fetchone() is None:
                return []
            rows = _locked(
                c, lambda c: c.execute(q.TAKE_REPLIES, (queue,)).fetchall(), self.busy_timeout
            )
            return [_row_to_message(r, queue, DEFAULT_GROUP, None) for r in rows]

        return await self._run(op)

    async def delete_queue(self, queue: str) -> None:
        await self._write(lambda c: c.execute(q.DELETE_QUEUE, (queue,)))

    async def delete_expired(self) -> int:
        now = time.time()
        return int(await self._write(lambda c: c.execute(q.DELETE_EXPIRED, (now,)).rowcount))

    async def data_version(self) -> int:
        return int(await self._run(_data_version))

    def data_version_now(self) -> int | None:
        """``data_version`` read on this thread, or None when only the worker thread
        can read it now (then await ``data_version``)."""
        version = self._inline(self._connection(), _data_version)
        return None if version is _NOT_INLINE else int(version)

    # -- inspection ----------------------------------------------------------------

    async def dead_letters(self, queue: str | None = None, limit: int = 100) -> list[DeadLetter]:
        rows = await self._run(
            lambda c: c.execute(q.LIST_DEAD_LETTERS, (queue, queue, limit)).fetchall()
        )
        return [DeadLetter.from_row(r) for r in rows]

    async def replay_dead_letter(self, dead_letter_id: int) -> bool:
        def op(c: sqlite3.Connection) -> bool:
            found = c.execute(q.DEAD_LETTER_QUEUE, (dead_letter_id,)).fetchone()
            if found is None:
                return False
            c.execute(q.REPLAY_DEAD_LETTER, (time.time(), dead_letter_id))
            self._touched.add(found[0])
            c.execute(q.DELETE_DEAD_LETTER, (dead_letter_id,))
            return True

        return bool(await self._write(op))

    async def depth(self, queue: str, group: str | None = None) -> int:
        return int(
            await self._run(lambda c: c.execute(q.QUEUE_DEPTH, (queue, group, group)).fetchone()[0])
        )


def _settle(fut: asyncio.Future[Any], result: Any) -> None:
    """A committed write's future: its result, or the error its op returned (an op
    returns one, rather than raising it, not to roll back the writes beside it)."""
    if fut.done():
        return
    if isinstance(result, BaseException):
        fut.set_exception(result)
    else:
        fut.set_result(result)


def _one_write_failed(exc: BaseException) -> bool:
    """Whether ``exc`` came from one write of a group commit rather than from the
    file or the lock (busy, full, I/O, corrupt), which every write of it shares."""
    if not isinstance(exc, Exception):
        return False  # cancelled or interrupted: nothing is run again
    cause = exc.__cause__ if isinstance(exc, StorageError) else exc
    if isinstance(exc, StorageError) and cause is None:
        return False
    if isinstance(cause, sqlite3.OperationalError) or type(cause) is sqlite3.DatabaseError:
        return False
    return not isinstance(exc, (DatabaseLockedError, StorageFullError, DatabaseOpenError))


def _transaction(
    c: sqlite3.Connection, *, ops: Sequence[_WriteOp], busy_timeout: float
) -> list[Any]:
    """Run ``ops`` in one write transaction; all commit or none do."""
    return _locked(c, lambda c: [op(c) for op in ops], busy_timeout)


def _insert_messages(
    c: sqlite3.Connection, messages: Sequence[OutgoingMessage], touched: set[str]
) -> None:
    # Groups are read inside the write transaction, so a group registered by another
    # process is never missed by a publish that commits after it.
    groups: dict[str, list[str]] = {}
    params = []
    for m in messages:
        targets = groups.get(m.queue)
        if targets is None:
            targets = [r[0] for r in c.execute(q.GROUPS_OF_QUEUE, (m.queue,))] or [DEFAULT_GROUP]
            groups[m.queue] = targets
            touched.add(m.queue)
        headers = encode_headers(m.headers)
        for grp in targets:
            params.append(
                (
                    m.queue,
                    grp,
                    m.body,
                    headers,
                    m.content_type,
                    m.correlation_id,
                    m.message_id,
                    m.reply_to,
                    m.priority,
                    m.visible_at,
                    m.created_at,
                    m.expires_at,
                )
            )
    c.executemany(q.INSERT_MESSAGE, params)


def pid_worker_id() -> str:
    return f"{os.uname().nodename if hasattr(os, 'uname') else 'host'}:{os.getpid()}"
