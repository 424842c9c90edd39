"""Rows and operations of the SQLite store: how a statement runs inside one of
``SqliteClient``'s transactions (``_Op``) and how job rows map to ``JobRecord``.

Shared by ``sqlite.py`` (jobs, feed, state) and ``sqlite_cache.py`` (the result cache).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Generic, TypeVar

from msgcore.store import queries as q
from msgcore.store.base import STATUS, JobRecord, record_of

T = TypeVar("T")

CHUNK = 500
"""Ids per statement of a batched read or write."""
HEAVY_ROWS = 64
"""Above this many rows an operation runs on aiosqlite's thread, not the event loop."""


class Op(Generic[T]):
    """One store operation, handed to ``SqliteClient`` as ``fn(connection)``.

    It may run on aiosqlite's thread, so it counts its statements in itself; the store
    adds the count to ``queries`` back on the event loop.
    """

    __slots__ = ("_conn", "count", "fn")

    def __init__(self, fn: Callable[[Op[T]], T]) -> None:
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


def create_schema(sql: Op[None]) -> None:
    # One transaction (the writer's); IF NOT EXISTS makes a concurrent opener harmless.
    for statement in q.SCHEMA.split(";"):
        if statement.strip():
            sql.change(statement)


def select(statement: str, params: Any) -> Callable[[Op[list[Any]]], list[Any]]:
    return lambda sql: sql.rows(statement, params)


def chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), CHUNK):
        yield items[i : i + CHUNK]


def alive(expires_at: float | None, now: float) -> bool:
    return expires_at is None or expires_at > now


def job_from_row(row: Sequence[Any]) -> JobRecord:
    (job_id, channel, status, attempts, worker_id, created_at, started_at, finished_at,
     result, has_result, error_type, error_message, cached, expires_at, extra) = row  # fmt: skip
    return record_of(
        {
            "job_id": job_id,
            "channel": channel,
            "status": STATUS[status],
            "attempts": attempts,
            "worker_id": worker_id,
            "created_at": created_at,
            "started_at": started_at,
            "finished_at": finished_at,
            "result": None if result is None else bytes(result),
            "has_result": bool(has_result),
            "error_type": error_type,
            "error_message": error_message,
            "cached": bool(cached),
            "expires_at": expires_at,
            "extra": json.loads(extra) if extra else {},
        }
    )


def job_row(r: JobRecord) -> tuple[Any, ...]:
    """``r`` in the order of ``q.JOB_COLUMNS``."""
    return (
        r.job_id, r.channel, str(r.status), r.attempts, r.worker_id, r.created_at,
        r.started_at, r.finished_at, r.result, int(r.has_result), r.error_type,
        r.error_message, int(r.cached), r.expires_at,
        json.dumps(dict(r.extra), separators=(",", ":")) if r.extra else None,
    )  # fmt: skip
