"""How a job starts on the Redis transport with its store on the same server.

``Client.submit`` adds the message with the record, the entry carrying the job id. On
that entry's first delivery the worker runs the handler without reading the record
first (no round trip before the handler), which holds because a cancel deletes an entry
no consumer group has read and refuses once one has. ``running`` is written only once
the attempt has lasted 50 ms; a shorter one records its start with its result.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
from redis.asyncio import Redis

from msgcore import JobStatus, Router
from msgcore.adapters.redis.keys import JOB_FIELD
from msgcore.constants import REDIS_JOB_KEY
from msgcore.store.base import AttemptOutcome, JobRecord
from msgcore.store.redis import RedisStore
from tests.contract.harness import (
    Transport,
    assert_started_with_its_result,
    delete_redis_keys,
    held_router,
    running,
)


@pytest.fixture
async def redis_transport(redis_url: str, unique: str) -> AsyncIterator[Transport]:
    t = Transport("redis", "real", redis_url, unique)
    try:
        yield t
    finally:
        await t.cleanup()


async def _until(check: object, within: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_a_job_a_worker_has_read_is_not_cancelled_and_runs(
    redis_transport: Transport, redis: Redis, unique: str
) -> None:
    router, gate, began = held_router(unique)
    stream = f"{unique}:{unique}.slow"
    async with running(redis_transport, router, None) as client:
        jobs = [await client.submit(f"{unique}.slow", n) for n in (1, 2, 3)]

        async def all_read() -> bool:
            pending = await redis.xpending(stream, "default")
            return len(began.items) == 2 and int(pending["pending"]) == 3

        # 1 and 2 run (their record may not say so yet: it is written after 50 ms),
        # 3 waits in the worker for a free slot
        await _until(all_read)
        for job in jobs:
            assert await client.cancel(job.id) is False
        gate.set()
        assert [await job.result(timeout=10) for job in jobs] == [10, 20, 30]
    assert sorted(began.items) == [1, 2, 3]


async def test_the_entry_carries_the_job_and_the_record_its_place(
    redis_transport: Transport, redis: Redis, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("other")
    async def other(n: int) -> None: ...

    stream = f"{unique}:{unique}.queued"
    async with running(redis_transport, router, None) as client:
        job = await client.submit(f"{unique}.queued", 1)
        [(entry_id, fields)] = await redis.xrange(stream)
        assert fields[JOB_FIELD.encode()] == job.id.encode()
        record = await redis.hgetall(f"{unique}:{REDIS_JOB_KEY}{job.id}")
        assert record[b"msg_stream"] == stream.encode()
        assert record[b"msg_id"] == entry_id
        # nobody has read it: the cancel takes the message out of the stream
        assert await client.cancel(job.id) is True
        assert await redis.xrange(stream) == []


async def test_a_long_attempt_shows_running_and_a_short_one_records_its_start_with_its_result(
    redis_transport: Transport, unique: str
) -> None:
    gate, began = asyncio.Event(), asyncio.Event()
    router = Router(prefix=f"{unique}.")

    @router.subscriber("work")
    async def work(n: int) -> int:
        if n == 0:
            began.set()
            await gate.wait()
        return n

    async with running(redis_transport, router, None) as client:
        long = await client.submit(f"{unique}.work", 0)
        await asyncio.wait_for(began.wait(), 10)

        async def shows_running() -> bool:
            return (await client.get_job(long.id)).record.status is JobStatus.RUNNING

        await _until(shows_running, within=2.0)
        record = (await client.get_job(long.id)).record
        assert record.worker_id and record.attempts == 1 and record.started_at
        gate.set()
        await long.result(timeout=10)

        short = await client.submit(f"{unique}.work", 7)
        assert await short.result(timeout=10) == 7
        assert_started_with_its_result(short.record)


async def test_a_late_running_write_does_not_undo_its_attempts_outcome(
    redis_url: str, unique: str
) -> None:
    """The deferred running write goes over another connection than the attempt's
    outcome and may land after it: it applies only to a record still pending."""
    now = time.time()
    async with RedisStore(redis_url, prefix=f"{unique}:", transport=True) as store:
        try:
            await store.create_jobs(
                [JobRecord("failed-first", "ch", created_at=now), JobRecord("fresh", "ch")]
            )
            retrying = AttemptOutcome(
                status=JobStatus.RETRYING,
                attempt=1,
                now=now,
                retention=60.0,
                error_type="ValueError",
                error_message="boom",
            )
            assert await store.finish_attempt("failed-first", retrying)
            for job_id in ("failed-first", "fresh"):
                await store._write_start(job_id, [job_id, "ch", 1, "w1", repr(now)])
            late = await store.get_job("failed-first")
            assert late is not None and late.status is JobStatus.RETRYING
            assert late.error_type == "ValueError"
            fresh = await store.get_job("fresh")
            assert fresh is not None and fresh.status is JobStatus.RUNNING
            assert fresh.worker_id == "w1"
        finally:
            await delete_redis_keys(redis_url, f"{unique}:*")
