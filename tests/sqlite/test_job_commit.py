"""A job's result and its message's ack commit in one transaction on the SQLite file,
and so does a locked handler's release of its key.

A worker that dies between two commits would leave either a completed record with its
message still queued (run again) or an acked message with a running record; one
transaction leaves neither. A key freed before the ack would let the next message of
that key start while this one can still be delivered again. Each write transaction's
statements are recorded through SQLite's trace callback.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import pytest

from msgcore import Client, Router, Settings, create_broker
from msgcore.constants import JOBS_TABLE
from msgcore.sqlite.client import connection
from msgcore.sqlite.client import queries as q
from msgcore.store.queries import INSERT_JOB, RELEASE_LOCK

T = TypeVar("T")


def _record_transactions(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """Each write transaction's statements, as they commit."""
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
    return transactions


def _writes_result(statement: str) -> bool:
    """FINISH_UPDATE, or FINISH_ATTEMPT's upsert (a record that was missing or expired)."""
    statement = statement.lstrip()
    if statement.startswith(f"UPDATE {JOBS_TABLE} SET"):
        return "result =" in statement
    return statement.startswith(f"INSERT INTO {JOBS_TABLE}") and "excluded.result" in statement


@asynccontextmanager
async def _square_worker(db_url: str, unique: str) -> AsyncIterator[tuple[Any, Settings]]:
    """A running worker of ``{unique}.square`` (``n * n``) on the file, and its settings."""
    router = Router(prefix=f"{unique}.")

    @router.subscriber("square")
    async def square(n: int) -> int:
        return n * n

    settings = Settings(url=db_url, log_messages=False)
    broker = create_broker(router, settings=settings)
    async with broker:
        await broker.start()
        yield broker, settings
        await broker.msgcore_jobs.close()


ACK = q.ACK.split("?")[0]  # the trace shows statements with their values filled in


def _acks(tx: list[str]) -> int:
    return sum(s.startswith(ACK) for s in tx)


async def test_result_and_ack_share_a_transaction(
    db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = _record_transactions(monkeypatch)
    async with (
        _square_worker(db_url, unique) as (_, settings),
        Client(settings=settings) as client,
    ):
        jobs = [await client.submit(f"{unique}.square", n) for n in range(20)]
        done = await client.wait(jobs, timeout=30)
        assert sorted(job.outcome() for job in done.completed) == sorted(n * n for n in range(20))

    def finishes(tx: list[str]) -> int:
        # the attempt's result write (a start write sets no result)
        return sum(_writes_result(s) for s in tx)

    with_results = [tx for tx in transactions if finishes(tx)]
    assert sum(finishes(tx) for tx in with_results) == 20
    for tx in with_results:
        assert _acks(tx) >= finishes(tx), tx


async def test_a_locked_handlers_release_and_ack_share_a_transaction(
    db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    transactions = _record_transactions(monkeypatch)
    router = Router(prefix=f"{unique}.")
    orders = router.publisher("orders")
    seen: list[int] = []
    done = asyncio.Event()

    @router.subscriber("orders", lock="customer")
    async def handle(order: dict[str, int]) -> None:
        seen.append(order["n"])
        if len(seen) == 20:
            done.set()

    settings = Settings(url=db_url, log_messages=False)
    async with create_broker(router, settings=settings) as broker:
        await broker.start()
        for n in range(20):
            await orders.publish({"customer": n % 3, "n": n})
        await asyncio.wait_for(done.wait(), 30)
        await asyncio.sleep(0.2)  # the last ack's commit
        await broker.msgcore_jobs.close()

    release = RELEASE_LOCK.split("?")[0]

    def releases(tx: list[str]) -> int:
        return sum(s.startswith(release) for s in tx)

    with_releases = [tx for tx in transactions if releases(tx)]
    assert sum(releases(tx) for tx in with_releases) == 20
    for tx in with_releases:
        assert _acks(tx) >= releases(tx), tx


async def test_a_client_on_a_workers_broker_shares_its_connection(
    db_url: str, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Client(broker=...)`` inside a service on the same file writes through the
    worker's connection: each submit's record and message commit together, and no
    second writer opens."""
    async with _square_worker(db_url, unique) as (broker, settings):
        transactions = _record_transactions(monkeypatch)
        async with Client(settings=settings, broker=broker) as client:
            assert client.store.shares_transport_writer
            jobs = [await client.submit(f"{unique}.square", n) for n in range(10)]
            done = await client.wait(jobs, timeout=30)
            assert sorted(job.outcome() for job in done.completed) == [n * n for n in range(10)]

    def count(tx: list[str], statement: str) -> int:
        head = statement.split("(", maxsplit=1)[0].split()
        return sum(s.split()[: len(head)] == head for s in tx)

    submits = [tx for tx in transactions if count(tx, INSERT_JOB)]
    assert sum(count(tx, INSERT_JOB) for tx in submits) == 10, transactions
    for tx in submits:
        assert count(tx, q.INSERT_MESSAGE) == count(tx, INSERT_JOB), tx


async def test_a_client_given_a_broker_of_another_file_keeps_its_own_store(
    db_url: str, tmp_path: Path, unique: str
) -> None:
    """The connection is shared only when it is to the client's store file: a broker made
    for another file publishes, and the records stay in the client's own store."""
    async with _square_worker(db_url, unique) as (broker, _):
        other = Settings(url=f"sqlite:///{tmp_path / 'other.db'}", log_messages=False)
        async with Client(settings=other, broker=broker) as client:
            assert not client.store.shares_transport_writer
            job = await client.submit(f"{unique}.square", 3)
            assert (await client.get_job(job.id)).id == job.id
