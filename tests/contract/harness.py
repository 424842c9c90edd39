"""The contract suite's harness: a transport to run on, waits, sinks."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import pytest
from redis.exceptions import ConnectionError as RedisConnectionError

from msgcore import (
    Client,
    JobRecord,
    JobStatus,
    RabbitSettings,
    RedisSettings,
    Router,
    Settings,
    create_broker,
    naming,
)
from msgcore.adapters import adapter_for
from msgcore.adapters.base import DeadLetterRecord
from msgcore.testing import TestClient

# -- helpers shared by the tests ----------------------------------------------------------

LIFECYCLE_SECONDS = 15.0
"""Starting or stopping a broker longer than this is a bug, not a slow machine."""


@asynccontextmanager
async def _within(seconds: float, what: str) -> AsyncIterator[None]:
    try:
        async with asyncio.timeout(seconds):
            yield
    except TimeoutError:
        pytest.fail(f"{what} did not finish within {seconds}s")


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 10.0,
    interval: float = 0.01,
    what: str = "condition",
) -> Any:
    """Poll ``predicate`` (sync or async) until it is truthy; fail after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


def held_router(unique: str) -> tuple[Router, asyncio.Event, Sink]:
    """Channel ``{unique}.slow`` with two handlers at once: jobs 1 and 2 run until the
    event is set, any other returns at once; each returns ``n * 10``. The sink lists the
    jobs that started."""
    gate, began = asyncio.Event(), Sink()
    router = Router(prefix=f"{unique}.")

    @router.subscriber("slow", max_workers=2)
    async def slow(n: int) -> int:
        began.add(n)
        if n < 3:
            await gate.wait()
        return n * 10

    return router, gate, began


def assert_started_with_its_result(record: JobRecord) -> None:
    """A completed first attempt whose record holds its start (worker, time) too: a
    short attempt's ``running`` write is folded into its result's."""
    assert record.status is JobStatus.COMPLETED
    assert record.worker_id and record.attempts == 1
    assert record.started_at is not None and record.finished_at is not None
    assert record.created_at <= record.started_at <= record.finished_at


class Sink:
    """What handlers saw, with a deadline-bounded wait for a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(item)

    async def wait(self, n: int, within: float = 10.0) -> list[Any]:
        await wait_until(
            lambda: len(self.items) >= n,
            within=within,
            what=f"{n} items (have {len(self.items)}: {self.items!r:.500})",
        )
        return self.items


class Gauge:
    """Handlers running at once: ``with gauge:`` around a handler's work; ``peak`` is the
    most seen together."""

    def __init__(self) -> None:
        self.now = 0
        self.peak = 0

    def __enter__(self) -> Gauge:
        self.now += 1
        self.peak = max(self.peak, self.now)
        return self

    def __exit__(self, *exc: object) -> None:
        self.now -= 1


# -- the transport fixture ------------------------------------------------------------------


@dataclass
class Transport:
    """One transport, in memory or real, with everything a test needs to run on it."""

    name: str
    kind: str
    url: str
    unique: str
    _declared: set[tuple[str, str | None]] = field(default_factory=set)
    _channels: set[str] = field(default_factory=set)

    @property
    def real(self) -> bool:
        return self.kind == "real"

    def __str__(self) -> str:
        return f"{self.name}-{self.kind}"

    def settings(self, **overrides: Any) -> Settings:
        """Settings for this transport, isolated to this test's names."""
        values: dict[str, Any] = {
            "url": self.url,
            "log_messages": False,
            "redis": RedisSettings(stream_prefix=f"{self.unique}:"),
            "rabbit": RabbitSettings(exchange=self.unique),
        }
        values.update(overrides)
        return Settings(**values)

    def uses(self, channel: str) -> str:
        """Note a channel a test publishes to without declaring it (cleaned up after)."""
        self._channels.add(channel)
        return channel

    def broker(self, *routers: Router, **settings: Any) -> Any:
        """``create_broker(*routers)`` on this transport (not connected yet)."""
        for router in routers:
            for node, prefix in router.walk():
                for decl in node.subscribers:
                    self._declared.add((f"{prefix}{decl.channel}", decl.group))
                    self._channels.add(f"{prefix}{decl.channel}")
                for handle in node.publishers:
                    self._channels.add(f"{prefix}{handle.channel}")
        return create_broker(*routers, settings=self.settings(**settings))

    @asynccontextmanager
    async def run(self, broker: Any) -> AsyncIterator[Any]:
        """The broker running: started on the real transport, or under ``TestClient``."""
        if self.real:
            try:
                async with _within(LIFECYCLE_SECONDS, f"{self}: connect and start the broker"):
                    await broker.connect()
                    await broker.start()
                yield broker
            finally:
                async with _within(LIFECYCLE_SECONDS, f"{self}: stop the broker"):
                    await broker.stop()
        else:
            async with TestClient(broker) as test_broker:
                yield test_broker

    async def dead_letters(
        self, broker: Any, channel: str, **settings: Any
    ) -> list[DeadLetterRecord]:
        return await adapter_for(self.settings(**settings)).dead_letters(broker, channel)

    async def wait_dead_letters(
        self, broker: Any, channel: str, n: int, within: float = 10.0
    ) -> list[DeadLetterRecord]:
        found: list[DeadLetterRecord] = []

        async def enough() -> bool:
            found[:] = await self.dead_letters(broker, channel)
            return len(found) >= n

        await wait_until(enough, within=within, interval=0.05, what=f"{n} dead letters")
        return found

    # -- cleanup of what the real servers keep --------------------------------------------

    async def cleanup(self) -> None:
        if self.name == "redis":
            # in memory as well: a job store beside the in-memory Redis transport is on the
            # Redis server at its URL (there is no in-memory Redis store), and its records
            # would otherwise stay until their retention ends
            try:
                await self._cleanup_redis()
            except RedisConnectionError:
                if self.real:
                    raise
        elif self.real and self.name == "rabbit":
            await self._cleanup_rabbit()

    async def _cleanup_redis(self) -> None:
        await delete_redis_keys(self.url, f"*{self.unique}*")

    async def _cleanup_rabbit(self) -> None:
        await delete_rabbit_names(self.url, self.unique, self._declared, self._channels)


# Wait and delay queues are named by their TTL, a power of two in ms; the tests wait at
# most a few seconds.
_TTL_BUCKETS = [1 << n for n in range(14)]


async def delete_redis_keys(url: str, match: str) -> None:
    """Delete the keys matching ``match`` (a test's or a benchmark run's names)."""
    from redis.asyncio import Redis

    client = Redis.from_url(url)
    try:
        keys = [k async for k in client.scan_iter(match=match, count=1000)]
        if keys:
            await client.delete(*keys)
    finally:
        await client.aclose()


async def delete_rabbit_names(
    url: str,
    exchange: str,
    groups: set[tuple[str, str | None]],
    channels: set[str],
) -> None:
    """Delete the queues and exchanges msgcore declares on RabbitMQ for these channels."""
    import aio_pika

    queues: set[str] = set()
    for channel in channels:
        queues.add(naming.rabbit_unrouted_queue(channel, exchange))
        queues.update(naming.rabbit_delay_queue(channel, ms, exchange) for ms in _TTL_BUCKETS)
    for channel, group in groups:
        queue = naming.rabbit_group_queue(channel, group)
        queues.update({queue, naming.rabbit_dead_letter_queue(channel, group)})
        queues.update(naming.rabbit_wait_queue(queue, ms) for ms in _TTL_BUCKETS)
    connection = await aio_pika.connect(url)
    try:
        channel_ = await connection.channel()
        # RabbitMQ answers delete-ok for a queue or exchange that does not exist.
        for name in sorted(queues):
            await channel_.queue_delete(name)
        for name in (exchange, naming.rabbit_unrouted_exchange(exchange)):
            await channel_.exchange_delete(name)
    finally:
        await connection.close()


@asynccontextmanager
async def running(
    transport: Transport, router: Router, store_url: str | None
) -> AsyncIterator[Client]:
    """Workers for ``router`` running on ``transport``, and a client beside them."""
    broker = transport.broker(router, store_url=store_url)
    async with transport.run(broker) as live:
        client = Client(
            settings=transport.settings(store_url=store_url),
            broker=None if transport.real else live,
        )
        try:
            async with client:
                yield client
        finally:
            await broker.msgcore_jobs.close()
