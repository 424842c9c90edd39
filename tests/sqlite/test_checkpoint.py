"""WAL checkpoints run beside the transport's connection, not on it.

Every ``_CHECKPOINT_EVERY`` commits the transport copies the WAL into the database
file. That takes milliseconds (pages and an fsync); done on the transport's own
connection it held the connection's thread, and every transaction behind it waited,
the event loop's inline ones included. It now runs on a connection and thread of its
own: the test holds a checkpoint open and publishes meanwhile.
"""

from __future__ import annotations

import asyncio
import sqlite3
import threading
import time
from pathlib import Path

import pytest

from msgcore.constants import MESSAGES_TABLE
from msgcore.sqlite.client import connection
from msgcore.sqlite.client.base import OutgoingMessage
from msgcore.sqlite.client.connection import SqliteClient


def _message(queue: str, n: int) -> OutgoingMessage:
    now = time.time()
    return OutgoingMessage(
        queue=queue,
        body=str(n).encode(),
        headers=None,
        content_type="application/json",
        correlation_id=None,
        message_id=f"m{n}",
        reply_to="",
        priority=0,
        visible_at=now,
        created_at=now,
    )


async def test_writes_go_on_while_a_checkpoint_runs(
    db_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "_CHECKPOINT_EVERY", 4)
    inside, release = threading.Event(), threading.Event()
    original = SqliteClient._checkpoint_now

    def held(self: SqliteClient) -> None:
        inside.set()
        release.wait(10)
        original(self)

    monkeypatch.setattr(SqliteClient, "_checkpoint_now", held)
    client = SqliteClient(str(db_path))
    await client.connect()
    try:
        for n in range(4):  # the fourth commit starts a checkpoint
            await client.publish([_message(f"{unique}.q", n)])
        assert await asyncio.to_thread(inside.wait, 5), "no checkpoint started"
        # the checkpoint is held open: publishing must not wait for it
        async with asyncio.timeout(5):
            for n in range(4, 40):
                await client.publish([_message(f"{unique}.q", n)])
        assert client._checkpoint is not None and not client._checkpoint.done()
        release.set()
        await client._checkpoint
    finally:
        release.set()
        await client.close()

    # everything committed, and the checkpoint copied what was in the WAL when it ran
    with sqlite3.connect(db_path) as check:
        rows = check.execute(f"SELECT count(*) FROM {MESSAGES_TABLE}").fetchone()[0]
    assert rows == 40


async def test_a_failed_checkpoint_is_skipped_and_the_transport_goes_on(
    db_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connection, "_CHECKPOINT_EVERY", 2)

    def failing(self: SqliteClient) -> None:
        raise sqlite3.OperationalError("database is locked")

    monkeypatch.setattr(SqliteClient, "_checkpoint_now", failing)
    client = SqliteClient(str(db_path))
    await client.connect()
    try:
        for n in range(6):
            await client.publish([_message(f"{unique}.q", n)])
        assert client._checkpoint is not None
        await client._checkpoint  # logged and dropped, not raised
        await client.publish([_message(f"{unique}.q", 6)])
    finally:
        await client.close()


async def test_the_wal_starts_over_under_a_steady_stream_of_commits(
    db_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A checkpoint beside the writer leaves the frames committed during its copy, so the
    WAL would never be rewound while commits keep coming: it grew by every commit
    (~9 KB each here, 27 MB for these 3,000). Each checkpoint ends by copying those few
    with the write lock, and the WAL starts over."""
    monkeypatch.setattr(connection, "_CHECKPOINT_EVERY", 32)
    client = SqliteClient(str(db_path))
    await client.connect()
    try:
        for n in range(3000):
            await client.publish([_message(f"{unique}.q", n)])
        wal = db_path.with_name(db_path.name + "-wal").stat().st_size
    finally:
        await client.close()
    assert wal < 8 * 2**20, f"the WAL grew to {wal / 2**20:.1f} MiB"
