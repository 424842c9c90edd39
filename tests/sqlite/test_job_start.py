"""How a job starts on the SQLite transport with its store on the same file.

On the first delivery of a message ``Client.submit`` wrote with its record, the worker
runs the handler without reading the record first. That holds because a cancel deletes
the job's message while no worker has claimed it and refuses once one has.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from msgcore import JobCancelledError, JobStatus
from msgcore.constants import MESSAGES_TABLE
from tests.contract.harness import Transport, held_router, running


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
        jobs = [await client.submit(f"{unique}.slow", n) for n in (1, 2, 3)]
        assert sorted(await began.wait(2)) == [1, 2]
        # 1 and 2 run: claimed, whatever their records say yet
        for job in jobs[:2]:
            assert _rows_of(db_path, job.id)[0][0] is not None
            assert await client.cancel(job.id) is False
        # 3 waits: a cancel takes its message out if no worker has claimed it
        claimed = _rows_of(db_path, jobs[2].id)[0][0] is not None
        cancelled = await client.cancel(jobs[2].id)
        assert cancelled is not claimed
        gate.set()
        assert [await job.result(timeout=10) for job in jobs[:2]] == [10, 20]
        if cancelled:
            assert _rows_of(db_path, jobs[2].id) == []
            with pytest.raises(JobCancelledError):
                await jobs[2].result(timeout=2)
            await asyncio.sleep(0.3)
            assert sorted(began.items) == [1, 2]
        else:
            assert await jobs[2].result(timeout=10) == 30
            assert (await jobs[2].status()) is JobStatus.COMPLETED
