"""Cancelling a task that awaits a Redis command stops it, on every msgcore Redis client.

redis-py 8 bounds each write with ``asyncio.wait_for(..., socket_timeout=5)``, and on
Python 3.11 ``wait_for`` drops a cancellation that lands as the write completes: before
msgcore's connections enforced the timeout with ``asyncio.timeout``, 161 of 500
cancelled ``client.wait`` calls went on waiting, and a loop of ``GET``s lost about two
cancels in three. Each test cancels a loop of commands at random moments many times and
requires every cancel to end it.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable

from msgcore import Client, RedisSettings, Router, Settings, create_broker
from msgcore.store.redis import RedisStore
from tests.contract.harness import delete_redis_keys

TRIALS = 150


async def lost_cancels(step: Callable[[], Awaitable[object]]) -> int:
    """How many of TRIALS cancels a task looping on ``step`` survived."""
    lost = 0
    for _ in range(TRIALS):

        async def loop() -> None:
            while True:
                await step()

        task = asyncio.create_task(loop())
        await asyncio.sleep(random.uniform(0, 0.002))
        task.cancel()
        done, _ = await asyncio.wait({task}, timeout=1.0)
        if not done:
            lost += 1
            while not task.done():
                task.cancel()
                await asyncio.wait({task}, timeout=0.1)
    return lost


def settings(redis_url: str, unique: str) -> Settings:
    return Settings(
        url=redis_url, log_messages=False, redis=RedisSettings(stream_prefix=f"{unique}:")
    )


async def test_store_commands_keep_cancellations(redis_url: str, unique: str) -> None:
    try:
        async with RedisStore(redis_url, prefix=f"{unique}:") as store:
            assert await lost_cancels(lambda: store.get_jobs(["a", "b"])) == 0
            assert await lost_cancels(store.feed_position) == 0
    finally:
        await delete_redis_keys(redis_url, f"{unique}:*")


async def test_a_cancelled_client_wait_stops(redis_url: str, unique: str) -> None:
    try:
        async with Client(settings=settings(redis_url, unique)) as client:
            job = await client.submit(f"{unique}.nobody", 1)  # never runs
            assert await lost_cancels(lambda: client.wait([job], timeout=30)) == 0
    finally:
        await delete_redis_keys(redis_url, f"*{unique}*")


async def test_broker_publishes_keep_cancellations(redis_url: str, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    out = router.publisher("out")
    try:
        async with create_broker(router, settings=settings(redis_url, unique)):
            assert await lost_cancels(lambda: out.publish(1)) == 0
    finally:
        await delete_redis_keys(redis_url, f"*{unique}*")
