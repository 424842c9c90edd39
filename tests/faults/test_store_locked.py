"""Fault injection: another process holds the write lock of a worker's SQLite job store.

RabbitMQ keeps its job state in a SQLite file by default, shared by the workers of a
host. Another process can hold that file's write lock past ``busy_timeout``: a backup,
a long purge, a tool with a transaction left open. A write refused then raises
``DatabaseLockedError``. That is not the message's fault, so the worker holds the
message and writes again once the lock is free, as it does when a Redis store is down
(``tests/faults/test_broker_drops.py``): no attempt is spent, the handler does not run
twice, and nothing is dead-lettered. A job failing its last attempt meanwhile ends
``dead`` with its error, not ``running`` for good.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections import Counter
from pathlib import Path

import pytest

from msgcore import Client, JobStatus, Router, create_broker
from msgcore.settings import SqliteSettings
from tests.processes import clean_servers, transport_settings

pytestmark = [pytest.mark.slow]

JOBS = 20
LOCKED_FOR = 2.0
"""Ten times the store's busy_timeout below: every write meanwhile is refused."""


@pytest.mark.parametrize("fails", [False, True], ids=["completes", "fails"])
async def test_a_worker_whose_sqlite_job_store_is_locked_waits_and_runs_each_job_once(
    fails: bool, rabbit_url: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    path = tmp_path / "store.db"
    settings = transport_settings(rabbit_url, unique, f"sqlite:///{path}").model_copy(
        update={"sqlite": SqliteSettings(busy_timeout=0.2)}
    )
    channel = f"{unique}.locked"
    runs: Counter[int] = Counter()
    gate, all_in = asyncio.Event(), asyncio.Event()
    router = Router()

    @router.subscriber(channel, group="w", max_workers=JOBS, max_attempts=1)
    async def square(n: int) -> int:
        runs[n] += 1
        if sum(runs.values()) == JOBS:
            all_in.set()
        await gate.wait()
        if fails:
            raise ValueError(f"no square for {n}")
        return n * n

    holder = sqlite3.connect(path, isolation_level=None, timeout=5.0)
    try:
        async with (
            Client(settings=settings) as client,
            create_broker(router, settings=settings) as broker,
        ):
            await broker.start()
            jobs = await client.submit_many(channel, range(JOBS))
            await asyncio.wait_for(all_in.wait(), 30)
            # every handler is running: their outcomes are refused while the lock is held
            holder.execute("BEGIN IMMEDIATE")
            gate.set()
            await asyncio.sleep(LOCKED_FOR)
            holder.execute("COMMIT")
            waited = await client.wait(jobs, timeout=30)
            records = await client.store.get_jobs([j.id for j in jobs])
            counts = await client.store.count_jobs(channel=channel)
    finally:
        holder.close()
        await clean_servers("rabbit", rabbit_url, unique, {(channel, "w")}, set())
    assert not waited.pending, [j.record for j in waited.pending]
    assert runs == dict.fromkeys(range(JOBS), 1), "a handler ran twice"
    expected = JobStatus.DEAD if fails else JobStatus.COMPLETED
    for n, job in enumerate(jobs):
        record = records[job.id]
        assert record.status is expected, record
        assert record.attempts == 1, record
        if fails:
            assert record.error_type == "ValueError", record
            assert record.error_message == f"no square for {n}", record
        else:
            assert job.outcome() == n * n, record
    assert {s: c for s, c in counts.items() if c} == {expected: JOBS}, counts
