"""How a job starts on the SQLite transport with its store on the same file.

On the first delivery of a message ``Client.submit`` wrote with its record, the worker
runs the handler without reading the record first. That holds because a cancel deletes
the job's message while no worker has claimed it and refuses once one has. For the same
reason its ``running`` write waits until the attempt has lasted ``START_AFTER``: a short
attempt records its start with its result.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgcore import JobCancelledError, JobStatus
from msgcore.constants import JOBS_TABLE, MESSAGES_TABLE
from msgcore.store import sqlite as sqlite_store
from tests.contract.harness import (
    Transport,
    assert_started_with_its_result,
    held_router,
    running,
    wait_until,
)


@pytest.fixture
async def sqlite_transport(db_path: Path, unique: str) -> AsyncIterator[Transport]:
    t = Transport("sqlite", "real", f"sqlite:///{db_path}", unique)
    try:
        yield t
    finally:
        await t.cleanup()


def _rows_of(db_path: Path, job_id: str) -> list[tuple[object, ...]]:
    with sqlite3.connect(db_path) as db:
        return db.execute(
            f"SELECT lease_token FROM {MESSAGES_TABLE} WHERE correlation_id = ?", (job_id,)
        ).fetchall()


async def test_a_claimed_job_is_not_cancelled_and_an_unclaimed_one_never_runs(
    sqlite_transport: Transport, db_path: Path, unique: str
) -> None:
    router, gate, began = held_router(unique)

    async with running(sqlite_transport, router, None) as client:
        try:
            jobs = [await client.submit(f"{unique}.slow", n) for n in (1, 2, 3)]
            assert sorted(await began.wait(2)) == [1, 2]
            # 1 and 2 run: claimed, whatever their records say yet
            for job in jobs[:2]:
                assert _rows_of(db_path, job.id)[0][0] is not None
                assert await client.cancel(job.id) is False
            # 3 waits for a free slot: a cancel takes its message out while no worker
            # has claimed it, and refuses once the worker's read-ahead has (which may
            # happen at any moment, so the message is looked at after the cancel: a
            # claimed message stays claimed while both slots are held)
            cancelled = await client.cancel(jobs[2].id)
            rows = _rows_of(db_path, jobs[2].id)
            if not cancelled:
                assert rows and rows[0][0] is not None
        finally:
            gate.set()
        assert [await job.result(timeout=10) for job in jobs[:2]] == [10, 20]
        if cancelled:
            assert rows == []
            with pytest.raises(JobCancelledError):
                await jobs[2].result(timeout=2)
            await asyncio.sleep(0.3)
            assert sorted(began.items) == [1, 2]
        else:
            assert await jobs[2].result(timeout=10) == 30
            assert (await jobs[2].status()) is JobStatus.COMPLETED


def _status_of(db_path: Path, job_id: str) -> tuple[object, ...]:
    """The record as another process reads it: its own connection to the file."""
    with sqlite3.connect(db_path) as db:
        row = db.execute(
            f"SELECT status, worker_id FROM {JOBS_TABLE} WHERE job_id = ?", (job_id,)
        ).fetchone()
    assert row is not None
    return tuple(row)


async def test_running_is_written_once_an_attempt_lasts_and_a_short_one_writes_once(
    sqlite_transport: Transport, db_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # long enough that "not written yet" is seen on a slow machine too
    monkeypatch.setattr(sqlite_store, "START_AFTER", 1.0)
    router, gate, began = held_router(unique)

    async with running(sqlite_transport, router, None) as client:
        long, other = [await client.submit(f"{unique}.slow", n) for n in (1, 2)]
        try:
            await began.wait(2)
            # another process sees the record pending until the attempt has lasted
            assert _status_of(db_path, long.id) == ("pending", None)
            await wait_until(
                lambda: _status_of(db_path, long.id)[0] == "running", within=5, what="running"
            )
            assert _status_of(db_path, long.id)[1]  # with its worker
        finally:
            gate.set()
        assert [await long.result(timeout=10), await other.result(timeout=10)] == [10, 20]

        short = await client.submit(f"{unique}.slow", 7)
        assert await short.result(timeout=10) == 70
        assert_started_with_its_result(short.record)
