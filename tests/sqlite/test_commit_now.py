"""``SqliteClient.commit_now``: a write committed at once on the event loop when nothing
could join it, else left (undone) to the group commit.

A worker that takes one message at a time waited for a group commit of its own for
every result (a future, a writer task, two loop iterations: ~8 % of a RabbitMQ job's
worker time, docs/benchmarks.md "Job tracking"); it now commits right away, but never
past a queued write (commit order is the order writes were made) nor while another
connection holds the file's write lock (the loop must not wait for it).
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from msgcore.exceptions import StorageError
from msgcore.sqlite.client.connection import SqliteClient
from msgcore.store.base import AttemptOutcome, JobStatus, new_record
from msgcore.store.sqlite import SqliteStore

_TABLE = "commit_now_test"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[SqliteClient]:
    db = SqliteClient(str(tmp_path / "now.db"))
    await db.connect()
    await db._write(lambda c: c.execute(f"CREATE TABLE {_TABLE} (n INTEGER)"))
    try:
        yield db
    finally:
        await db.close()


def _insert(n: int) -> Callable[[sqlite3.Connection], int]:
    def op(c: sqlite3.Connection) -> int:
        c.execute(f"INSERT INTO {_TABLE} VALUES (?)", (n,))
        return n

    return op


def _rows(db: SqliteClient) -> list[int]:
    """What another connection sees (committed rows only)."""
    with sqlite3.connect(db.path) as other:
        return [r[0] for r in other.execute(f"SELECT n FROM {_TABLE} ORDER BY rowid")]


async def test_an_idle_client_commits_at_once(client: SqliteClient) -> None:
    assert client.commit_now(_insert(1)) == (True, 1)
    assert _rows(client) == [1]  # committed before any loop turn
    assert client._writer is None or client._writer.done()


async def test_a_queued_write_goes_first(client: SqliteClient) -> None:
    queued = client._write(_insert(1))
    assert client.commit_now(_insert(2)) == (False, None)
    assert await queued == 1
    assert _rows(client) == [1]  # the refused write did not run


async def test_the_loop_never_waits_for_another_connections_lock(client: SqliteClient) -> None:
    other = sqlite3.connect(client.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        assert client.commit_now(_insert(1)) == (False, None)
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert _rows(client) == []
    assert client.commit_now(_insert(2)) == (True, 2)
    assert _rows(client) == [2]


async def test_a_failing_write_commits_nothing_and_says_why(client: SqliteClient) -> None:
    def half(c: sqlite3.Connection) -> None:
        c.execute(f"INSERT INTO {_TABLE} VALUES (1)")
        c.execute("INSERT INTO no_such_table VALUES (1)")

    with pytest.raises(StorageError, match="no such table"):
        client.commit_now(half)
    assert _rows(client) == []
    await asyncio.sleep(0)
    assert client.commit_now(_insert(3)) == (True, 3)
    assert _rows(client) == [3]


async def test_a_result_written_alone_waits_for_another_connections_lock(
    tmp_path: Path,
) -> None:
    """The store's ``finish_attempt(alone=True)``: at once when it can, else through the
    queue (on the worker thread, waiting for the lock), never lost."""
    store = SqliteStore(f"sqlite:///{tmp_path / 'jobs.db'}")
    await store.open()
    try:
        await store.create_jobs([new_record(j, "ch", created_at=1.0) for j in ("a", "b")])

        def outcome() -> AttemptOutcome:
            return AttemptOutcome(
                status=JobStatus.COMPLETED,
                attempt=1,
                now=time.time(),
                retention=60.0,
                result=b"1",
                has_result=True,
            )

        for job_id in ("a", "b"):
            await store.start_attempt(
                job_id, channel="ch", attempt=1, worker_id="w", now=time.time()
            )
        assert await store.finish_attempt("a", outcome(), alone=True)

        other = sqlite3.connect(store.path, isolation_level=None)
        other.execute("BEGIN IMMEDIATE")
        finishing = asyncio.ensure_future(store.finish_attempt("b", outcome(), alone=True))
        await asyncio.sleep(0.05)
        assert not finishing.done()  # waiting for the lock, off the event loop
        other.execute("ROLLBACK")
        other.close()
        assert await asyncio.wait_for(finishing, 5)
        records = await store.get_jobs(["a", "b"])
        assert {j: r.status for j, r in records.items()} == {
            "a": JobStatus.COMPLETED,
            "b": JobStatus.COMPLETED,
        }
        assert all(r.worker_id == "w" and r.started_at for r in records.values())
    finally:
        await store.close()
