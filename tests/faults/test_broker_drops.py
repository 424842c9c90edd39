"""Fault injection: the broker connection of a worker or a client fails, on Redis and
RabbitMQ (real servers), and nothing is lost.

Each case puts a ``FaultProxy`` between the process under test and the server, then
aborts its connections (as a server restart or a network failure would) or refuses new
ones for a while (the server is down):

- a ``faststream run`` worker whose connections are cut three times while it runs 400
  jobs: it reconnects by itself and every job ends ``completed`` exactly once, with its
  result (RabbitMQ hands back the unacked in-flight jobs at each cut: they run again,
  and still complete once);
- a worker whose broker is down for 3 s in the middle of a run: the same, and the jobs
  the outage interrupted are done seconds after it (not after the 30 s lease);
- a worker whose connections go silent (a partition: open, but nothing passes): it
  notices by itself within a few leases (RabbitMQ: missed heartbeats; Redis: its
  socket timeout and the lease) and connects again, and the same holds;
- a client publishing and submitting while its broker is down: each call raises a typed
  msgcore error at once (``BrokerConnectionError``; on Redis a submit goes through the
  job store, ``StorageError``), with the server's URL and without its password; a
  failed submit leaves no job record behind; once the server is back, the same client
  publishes again (Redis at once, RabbitMQ once aio-pika has reconnected, every 5 s);
- a broker started while the server is down: ``BrokerConnectionError`` at once, saying
  what to check;
- a worker whose job store (Redis, under RabbitMQ) is down for 20 s: it holds its
  messages and waits, spending no attempt and dead-lettering nothing;
- a client whose store is down while it waits for jobs: the wait rides it out, and
  raises ``StoreUnavailableError`` only if the store is still down at its timeout.

The SQLite transport has no connection to lose: its faults (processes killed mid-run,
a locked or full database) are in ``tests/sqlite``.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from services.jobs import Task

from msgcore import (
    BrokerConnectionError,
    Client,
    JobStatus,
    MsgcoreError,
    Router,
    Settings,
    StorageError,
    StoreUnavailableError,
    create_broker,
)
from tests.faults.proxy import FaultProxy
from tests.processes import (
    Proc,
    Stack,
    clean_servers,
    jobs_service_env,
    read_feed_from,
    terminate,
    transport_settings,
)

pytestmark = [pytest.mark.slow]

WORKER = ["services.jobs:app"]
GROUP = "workers"
JOBS = 400
JOB_SLEEP = 0.05
"""400 jobs of 50 ms on 8 handlers: the run lasts ~2.5 s, long enough for the faults."""
SILENT_LEASE = 4.0
"""The worker's lease in the partition case (the default 30 s would make it minutes)."""
STORE_OUTAGE = 20.0
"""Longer than the default retry policy's five attempts last."""


@dataclass
class Case:
    name: str
    url: str
    unique: str
    store_url: str | None
    """RabbitMQ keeps no job state: its cases use a SQLite store of their own."""
    proxy: FaultProxy

    @property
    def channel(self) -> str:
        return f"{self.unique}.jobs.square"

    def worker_env(self) -> dict[str, str]:
        """The worker reaches the broker (and on Redis its job store) through the proxy."""
        return jobs_service_env(self.proxy.url(), self.unique, self.store_url)

    def settings(self, *, proxied: bool = False) -> Settings:
        url = self.proxy.url() if proxied else self.url
        return transport_settings(url, self.unique, self.store_url)


@pytest.fixture(params=["redis", "rabbit"])
async def case(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Case]:
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    name = request.param
    url = str(request.getfixturevalue(f"{name}_url"))
    store_url = f"sqlite:///{tmp_path / 'store.db'}" if name == "rabbit" else None
    with FaultProxy(url) as proxy:
        try:
            yield Case(name, url, unique, store_url, proxy)
        finally:
            # the channels too: RabbitMQ keeps an unrouted queue per published channel
            channels = {f"{unique}.jobs.square", f"{unique}.events"}
            await clean_servers(name, url, unique, {(f"{unique}.jobs.square", GROUP)}, channels)


@pytest.fixture
def stack(tmp_path: Path, case: Case) -> Iterator[Stack]:
    s = Stack(tmp_path, case.worker_env())
    try:
        yield s
    finally:
        s.cleanup()


async def _run_jobs_through(
    case: Case, worker: Proc, fault: object, *, max_attempts: int | None = None
) -> float:
    """Submit JOBS jobs (directly, not through the proxy), run ``fault`` while the
    worker handles them, and check that each completes exactly once with its result
    (and within ``max_attempts``). Returns when (``time.monotonic()``) the last job had
    completed."""
    async with Client(settings=case.settings()) as client:
        position = await client.store.feed_position()
        jobs = await client.submit_many(
            case.channel, [Task(n=n, sleep=JOB_SLEEP) for n in range(JOBS)]
        )
        assert callable(fault)
        await fault()
        waited = await client.wait(jobs, timeout=90)
        finished = time.monotonic()
        assert not waited.pending, (
            f"{len(waited.pending)} of {JOBS} jobs unfinished after the fault\n{worker.tail()}"
        )
        await asyncio.sleep(1.0)  # room for a late duplicate to show itself
        records = await client.store.get_jobs([j.id for j in jobs])
        events = await read_feed_from(client.store, position)
        counts = await client.store.count_jobs(channel=case.channel)
    for job in jobs:
        record = records[job.id]
        assert record.status is JobStatus.COMPLETED, record
        assert job.outcome()["square"] == job.outcome()["n"] ** 2, record
        assert max_attempts is None or record.attempts <= max_attempts, record
    assert counts[JobStatus.COMPLETED] == JOBS and sum(counts.values()) == JOBS, counts
    per_job = Counter(e.job_id for e in events if e.job_id in records)
    assert per_job == dict.fromkeys(records, 1), "a job finished more than once"
    assert worker.popen.poll() is None, f"the worker exited\n{worker.tail()}"
    # the worker logged the drops; none of its lines may carry the broker's password
    assert "guest:guest" not in worker.output(), worker.tail()
    return finished


async def test_a_worker_whose_connections_are_cut_completes_every_job_once(
    case: Case, stack: Stack
) -> None:
    worker = stack.worker("worker", WORKER)
    await stack.wait_ready(worker)
    cuts: list[int] = []

    async def cut_three_times() -> None:
        for _ in range(3):
            await asyncio.sleep(0.5)
            cuts.append(case.proxy.cut())

    await _run_jobs_through(case, worker, cut_three_times)
    assert cuts[0] > 0, f"nothing to cut: {cuts}"
    assert case.proxy.accepted > cuts[0], "the worker never reconnected"
    assert await terminate(worker) == 0, worker.tail()


async def test_a_worker_waits_out_a_broker_outage_and_completes_every_job_once(
    case: Case, stack: Stack
) -> None:
    worker = stack.worker("worker", WORKER)
    await stack.wait_ready(worker)
    outage: dict[str, float] = {}

    async def down_for_three_seconds() -> None:
        await asyncio.sleep(0.5)
        case.proxy.refuse(True)
        outage["cut"] = case.proxy.cut()
        before = case.proxy.accepted
        await asyncio.sleep(3.0)
        outage["reconnected_while_down"] = case.proxy.accepted - before
        case.proxy.refuse(False)
        outage["back"] = time.monotonic()

    finished = await _run_jobs_through(case, worker, down_for_three_seconds)
    assert outage["cut"] > 0 and outage["reconnected_while_down"] == 0, outage
    # Not the worker's 30 s lease: what the outage interrupted is settled (Redis) or
    # redelivered (RabbitMQ) as soon as the worker is connected again.
    assert finished - outage["back"] < 15.0, f"{finished - outage['back']:.1f}s after"
    assert await terminate(worker) == 0, worker.tail()


async def test_a_worker_whose_connections_go_silent_notices_and_completes_every_job_once(
    case: Case, stack: Stack
) -> None:
    # a partition: the worker's connections stay open but nothing passes, and nothing
    # tells it so; it must notice by itself and connect again. How soon follows from
    # the lease: on RabbitMQ it sets the connection's heartbeat (missed heartbeats close
    # it), on Redis the time after which unsettled entries are reclaimed.
    stack.env["MSGCORE_JOBS_LEASE"] = str(SILENT_LEASE)
    worker = stack.worker("worker", WORKER)
    await stack.wait_ready(worker)
    stalled: list[int] = []

    async def go_silent() -> None:
        await asyncio.sleep(0.5)
        stalled.append(case.proxy.stall())

    began = time.monotonic()
    finished = await _run_jobs_through(case, worker, go_silent)
    assert stalled[0] > 0, "nothing to stall"
    assert case.proxy.accepted > stalled[0], "the worker never connected again"
    took = finished - began
    limit = 4 * SILENT_LEASE + 15
    assert took < limit, f"{took:.1f}s to notice the silent connections and finish"
    assert await terminate(worker) == 0, worker.tail()


async def test_a_client_whose_broker_is_down_gets_typed_errors_then_recovers(case: Case) -> None:
    router = Router()
    publisher = router.publisher(f"{case.unique}.events")
    settings = case.settings(proxied=True)
    broker = create_broker(router, settings=settings)
    async with broker, Client(settings=settings) as client:
        await publisher.publish({"n": 0})
        submitted = [await client.submit(case.channel, Task(n=1))]
        case.proxy.refuse(True)
        assert case.proxy.cut() > 0

        started = time.monotonic()
        with pytest.raises(BrokerConnectionError) as published:
            await publisher.publish({"n": 1})
        with pytest.raises(MsgcoreError) as submit:
            await client.submit(case.channel, Task(n=2))
        assert time.monotonic() - started < 5.0, "a call to a down broker must fail fast"
        expected = StorageError if case.name == "redis" else BrokerConnectionError
        assert isinstance(submit.value, expected), repr(submit.value)
        for error in (published.value, submit.value):
            text = str(error)
            assert f"127.0.0.1:{case.proxy.port}" in text, text
            assert "guest:guest" not in text, text
        assert f"127.0.0.1:{case.proxy.port}" in published.value.server

        case.proxy.refuse(False)
        recovered_at = None
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                await publisher.publish({"n": 3})
                submitted.append(await client.submit(case.channel, Task(n=3)))
            except MsgcoreError:
                await asyncio.sleep(0.2)
                continue
            recovered_at = time.monotonic()
            break
        assert recovered_at is not None, "the client did not recover within 20 s"
        # the failed submit left no record: only the submits that returned a job exist
        counts = await client.store.count_jobs(channel=case.channel)
        assert sum(counts.values()) == len(submitted), counts


async def test_starting_against_a_broker_that_is_down_is_a_typed_error(case: Case) -> None:
    case.proxy.refuse(True)
    router = Router()
    publisher = router.publisher(f"{case.unique}.events")
    broker = create_broker(router, settings=case.settings(proxied=True))
    started = time.monotonic()
    with pytest.raises(BrokerConnectionError) as raised:
        # RabbitMQ connects on start; Redis connects lazily, on the first command
        async with broker:
            await publisher.publish({"n": 1})
    assert time.monotonic() - started < 5.0
    text = str(raised.value)
    assert f"127.0.0.1:{case.proxy.port}" in text and "guest:guest" not in text, text
    assert "running" in text, text  # says what to check


async def test_a_worker_whose_job_store_is_down_waits_for_it_and_dead_letters_nothing(
    rabbit_url: str, redis_url: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # RabbitMQ with its job state on Redis (the multi-host deployment docs/jobs.md
    # recommends): the store is down for longer than the retry policy's attempts last
    # (5 attempts, ~15 s of backoff). Failing the attempts would dead-letter the jobs;
    # the worker waits for the store instead, and no job even spends a second attempt.
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    with FaultProxy(redis_url) as proxy:
        worker_case = Case("rabbit", rabbit_url, unique, proxy.url(), proxy)
        client_case = Case("rabbit", rabbit_url, unique, redis_url, proxy)
        stack = Stack(tmp_path, jobs_service_env(rabbit_url, unique, proxy.url()))
        try:
            worker = stack.worker("worker", WORKER)
            await stack.wait_ready(worker)
            outage: dict[str, float] = {}

            async def store_down() -> None:
                await asyncio.sleep(0.5)
                proxy.refuse(True)
                outage["cut"] = proxy.cut()
                await asyncio.sleep(STORE_OUTAGE)
                proxy.refuse(False)
                outage["back"] = time.monotonic()

            finished = await _run_jobs_through(client_case, worker, store_down, max_attempts=1)
            assert outage["cut"] > 0, outage
            assert finished - outage["back"] < 15.0, f"{finished - outage['back']:.1f}s after"
            assert "the job store is unavailable" in worker.output(), worker.tail()
            assert await terminate(worker) == 0, worker.tail()
        finally:
            stack.cleanup()
            await clean_servers("rabbit", rabbit_url, unique, {(worker_case.channel, GROUP)}, set())
            await clean_servers("redis", redis_url, unique, set(), set())


async def test_a_client_waiting_for_jobs_rides_out_a_store_outage(
    redis_url: str, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the client reaches Redis (its transport and job store) through the proxy, the
    # worker directly: the client's wait loses its store for 3 s while the jobs run
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    with FaultProxy(redis_url) as proxy:
        case = Case("redis", redis_url, unique, None, proxy)
        stack = Stack(tmp_path, jobs_service_env(redis_url, unique))
        try:
            worker = stack.worker("worker", WORKER)
            await stack.wait_ready(worker)
            async with Client(settings=case.settings(proxied=True)) as client:
                jobs = await client.submit_many(
                    case.channel, [Task(n=n, sleep=JOB_SLEEP) for n in range(JOBS)]
                )
                waiting = asyncio.create_task(client.wait(jobs, timeout=60))
                await asyncio.sleep(0.3)
                proxy.refuse(True)
                assert proxy.cut() > 0
                await asyncio.sleep(3.0)
                assert not waiting.done(), "the wait ended during the outage"
                proxy.refuse(False)
                waited = await waiting
            assert not waited.pending, f"{len(waited.pending)} of {JOBS} jobs not finished"
            assert all(j.record.status is JobStatus.COMPLETED for j in jobs)
            assert await terminate(worker) == 0, worker.tail()
        finally:
            stack.cleanup()
            await clean_servers("redis", redis_url, unique, set(), set())


async def test_a_client_wait_whose_store_stays_down_past_its_timeout_raises(
    redis_url: str, unique: str
) -> None:
    with FaultProxy(redis_url) as proxy:
        case = Case("redis", redis_url, unique, None, proxy)
        async with Client(settings=case.settings(proxied=True)) as client:
            job = await client.submit(case.channel, Task(n=1))
            proxy.refuse(True)
            proxy.cut()
            started = time.monotonic()
            with pytest.raises(StoreUnavailableError):
                await client.wait([job], timeout=2.0)
            assert 1.0 < time.monotonic() - started < 4.0
            proxy.refuse(False)
        await clean_servers("redis", redis_url, unique, set(), set())
