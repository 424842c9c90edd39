"""A group commit in which one write fails on its own.

Every queued write of a ``SqliteClient`` commits in one transaction. A write that fails
by itself (a value SQLite cannot bind, a constraint, a Python error in its function)
rolled that transaction back and failed every write in it with its error: a bad
``store.set`` beside a ``Client.submit`` failed the submit too. Now the writes of such a
batch go again one by one, so that only the bad one fails; an error of the file itself
(locked, full) still fails them all at once, without running each again.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from msgcore.exceptions import DatabaseLockedError, StorageError
from msgcore.sqlite.client.connection import SqliteClient

_TABLE = "group_commit_test"


@pytest.fixture
async def client(tmp_path: Path) -> AsyncIterator[SqliteClient]:
    db = SqliteClient(str(tmp_path / "group.db"), busy_timeout=0.2)
    await db.connect()
    await db._write(lambda c: c.execute(f"CREATE TABLE {_TABLE} (n INTEGER NOT NULL)"))
    try:
        yield db
    finally:
        await db.close()


def _insert(n: object) -> Callable[[sqlite3.Connection], object]:
    def op(c: sqlite3.Connection) -> object:
        c.execute(f"INSERT INTO {_TABLE} VALUES (?)", (n,))
        return n

    return op


def _raises(c: sqlite3.Connection) -> None:
    c.execute(f"INSERT INTO {_TABLE} VALUES (99)")
    raise RuntimeError("the write's own bug")


def _rows(db: SqliteClient) -> list[int]:
    with sqlite3.connect(db.path) as other:
        return [r[0] for r in other.execute(f"SELECT n FROM {_TABLE} ORDER BY rowid")]


async def test_only_the_failing_writes_of_a_batch_fail(client: SqliteClient) -> None:
    results = await asyncio.gather(
        client._write(_insert(1)),
        client._write(_insert({"not": "bindable"})),  # InterfaceError: cannot bind
        client._write(_insert(2)),
        client._write(_insert(None)),  # IntegrityError: NOT NULL
        client._write(_raises),
        client._write(_insert(3)),
        return_exceptions=True,
    )
    assert results[0] == 1 and results[2] == 2 and results[5] == 3
    assert isinstance(results[1], StorageError) and "binding" in str(results[1])
    assert isinstance(results[3], StorageError) and "NOT NULL" in str(results[3])
    assert isinstance(results[4], RuntimeError)
    assert _rows(client) == [1, 2, 3]  # the failed ones left nothing, 99 included
    # and the client goes on as before
    assert await client._write(_insert(4)) == 4
    assert _rows(client) == [1, 2, 3, 4]


async def test_a_locked_file_fails_the_batch_at_once(client: SqliteClient) -> None:
    """The lock is everyone's problem: the writes are not run again one by one, which
    would wait ``busy_timeout`` once per write."""
    other = sqlite3.connect(client.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = asyncio.get_running_loop().time()
        results = await asyncio.gather(
            *(client._write(_insert(n)) for n in range(5)), return_exceptions=True
        )
        waited = asyncio.get_running_loop().time() - started
    finally:
        other.execute("ROLLBACK")
        other.close()
    assert all(isinstance(r, DatabaseLockedError) for r in results)
    assert waited < 5 * 0.2  # one busy_timeout, not one per write
    assert _rows(client) == []
