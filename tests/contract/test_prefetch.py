"""``prefetch=``: how many messages a worker holds beyond its free handler slots.

With ``prefetch=0`` a worker takes a message only when a handler can start it: long
jobs spread over every worker of the group, and a job waiting in the queue stays
cancellable until a handler starts it (on SQLite and Redis a cancel refuses a message
some worker holds). The bounds are checked on the real transports only: FastStream's
in-memory brokers run handlers inline, with no read-ahead to bound.
"""

from __future__ import annotations

import asyncio

import pytest

from msgcore import JobStatus, Router

from .harness import Gauge, Sink, Transport, running


async def test_a_prefetch_declaration_runs_on_every_transport(
    transport: Transport, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    done = Sink()

    @router.subscriber("jobs", max_workers=2, prefetch=0)
    async def work(n: int) -> int:
        done.add(n)
        return n

    async with transport.run(transport.broker(router)):
        for n in range(3):
            await jobs.publish(n)
        assert sorted(await done.wait(3)) == [0, 1, 2]


@pytest.mark.real_only
async def test_prefetch_zero_lets_short_jobs_pass_a_long_one(
    transport: Transport, unique: str
) -> None:
    """A long job and five short ones queued for two workers of one group: the worker
    that takes the long job takes nothing more, so the other one runs every short job
    meanwhile. (With read-ahead the first worker to start takes all six, and the short
    ones wait behind the long one.)"""
    finished = Sink()

    def member(name: str) -> Router:
        router = Router(prefix=f"{unique}.")

        @router.subscriber("render", group="workers", prefetch=0)
        async def render(seconds: float) -> None:
            await asyncio.sleep(seconds)
            finished.add((name, seconds))

        return router

    producer = Router(prefix=f"{unique}.")
    render = producer.publisher("render")
    a, b = transport.broker(member("a")), transport.broker(member("b"))
    async with transport.run(transport.broker(producer)):
        for seconds in (1.5, 0.05, 0.05, 0.05, 0.05, 0.05):
            await render.publish(seconds)
        async with transport.run(a), transport.run(b):
            items = await finished.wait(6, within=20)

    assert [seconds for _, seconds in items] == [0.05] * 5 + [1.5], items


@pytest.mark.real_only
@pytest.mark.parametrize("max_workers", [1, 2])
async def test_prefetch_zero_keeps_queued_jobs_cancellable(
    transport: Transport, store_url: str | None, unique: str, max_workers: int
) -> None:
    """Jobs submitted together with running ones are not taken ahead: each cancel
    succeeds, the cancelled jobs never run, the running ones complete."""
    gate, began = asyncio.Event(), Sink()
    router = Router(prefix=f"{unique}.")

    @router.subscriber("slow", max_workers=max_workers, prefetch=0)
    async def slow(n: int) -> int:
        began.add(n)
        await gate.wait()
        return n * 10

    async with running(transport, router, store_url) as client:
        jobs = await client.submit_many(f"{unique}.slow", range(max_workers + 3))
        await began.wait(max_workers)
        # time for a worker with read-ahead to take the queued jobs
        await asyncio.sleep(0.5)
        # A batch's publishes run at once, so which jobs start first is not fixed (on
        # Redis they can arrive in another order): the ones that began are the running.
        started = sorted(began.items)
        assert len(started) == max_workers
        first = [jobs[n] for n in started]
        queued = [job for n, job in enumerate(jobs) if n not in started]
        assert [await client.cancel(job.id) for job in queued] == [True] * 3
        gate.set()
        assert [await job.result(timeout=10) for job in first] == [n * 10 for n in started]
        for job in queued:
            assert await job.status() is JobStatus.CANCELLED
        await asyncio.sleep(0.3)  # a cancelled job that was delivered anyway would run by now
    assert sorted(began.items) == started


@pytest.mark.real_only
async def test_a_small_prefetch_bounds_what_a_worker_holds_not_what_it_handles(
    transport: Transport, unique: str
) -> None:
    """``prefetch=1`` with two handler slots: thirty messages published at once all run,
    never more than two at a time."""
    done = Sink()
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")

    gauge = Gauge()

    @router.subscriber("jobs", max_workers=2, prefetch=1)
    async def work(n: int) -> None:
        with gauge:
            await asyncio.sleep(0.01)
        done.add(n)

    async with transport.run(transport.broker(router)):
        await asyncio.gather(*(jobs.publish(n) for n in range(30)))
        items = await done.wait(30)
    assert sorted(items) == list(range(30))
    assert gauge.peak == 2
