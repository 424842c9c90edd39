"""A job's result and its message's ack commit in one transaction on the SQLite file.

A worker that dies between two commits would leave either a completed record with its
message still queued (run again) or an acked message with a running record; one
transaction leaves neither. Each write transaction's statements are recorded through
SQLite's trace callback.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable
from typing import TypeVar

import pytest

from msgcore import Client, Router, Settings, create_broker
from msgcore.constants import JOBS_TABLE
from msgcore.sqlite.client import connection
from msgcore.sqlite.client import queries as q

T = TypeVar("T")


async def test_result_and_ack_share_a_transaction(
    db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions: list[list[str]] = []
    original = connection._locked

    def recorded(c: sqlite3.Connection, fn: Callable[[sqlite3.Connection], T], busy: float) -> T:
        statements: list[str] = []
        c.set_trace_callback(statements.append)
        try:
            return original(c, fn, busy)
        finally:
            c.set_trace_callback(None)
            transactions.append(statements)

    monkeypatch.setattr(connection, "_locked", recorded)

    router = Router(prefix=f"{unique}.")

    @router.subscriber("square")
    async def square(n: int) -> int:
        return n * n

    settings = Settings(url=db_url, log_messages=False)
    broker = create_broker(router, settings=settings)
    async with broker:
        await broker.start()
        async with Client(settings=settings) as client:
            jobs = [await client.submit(f"{unique}.square", n) for n in range(20)]
            done = await client.wait(jobs, timeout=30)
            assert sorted(job.outcome() for job in done.completed) == sorted(
                n * n for n in range(20)
            )
        await broker.msgcore_jobs.close()

    def finishes(tx: list[str]) -> int:
        # the attempt's result upsert (a start write sets no result)
        return sum(f"INSERT INTO {JOBS_TABLE}" in s and "excluded.result" in s for s in tx)

    ack = q.ACK.split("?")[0]  # the trace shows statements with their values filled in

    def acks(tx: list[str]) -> int:
        return sum(s.startswith(ack) for s in tx)

    with_results = [tx for tx in transactions if finishes(tx)]
    assert sum(finishes(tx) for tx in with_results) == 20
    for tx in with_results:
        assert acks(tx) >= finishes(tx), tx
