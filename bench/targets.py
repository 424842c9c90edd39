"""The brokers under test: how each is built, subscribed, published to and cleaned up.

A ``Target`` is one broker setup bound to one endpoint name (queue, list or stream)
that is unique to the run. Subprocesses started by the suite build the same target
from the same ``(key, endpoint, workdir)`` and so meet on the same endpoint.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any, ClassVar

import aio_pika
from faststream.rabbit import RabbitBroker, RabbitQueue
from faststream.redis import RedisBroker, StreamSub
from redis.asyncio import Redis

from bench.settings import Servers
from msgcore.sqlite import SqliteBroker

Handler = Callable[..., Awaitable[Any]]
Body = dict[str, Any]


def logger_kwargs(log: bool) -> dict[str, Any]:
    """Broker keyword arguments for "INFO access log" (FastStream's default) or "no logger"."""
    return {"log_level": logging.INFO} if log else {"logger": None}


class Target(ABC):
    key: ClassVar[str]
    title: ClassVar[str]
    server: ClassVar[str | None] = None
    """The server process kind behind this target ("redis", "rabbit"), if any."""
    supports_batch: ClassVar[bool] = False

    def __init__(self, endpoint: str, workdir: Path, servers: Servers) -> None:
        self.endpoint = endpoint
        self.workdir = workdir
        self.servers = servers

    @abstractmethod
    def make_broker(self, *, log: bool) -> Any:
        """A new, unstarted broker; ``log`` keeps FastStream's default INFO logger."""

    @abstractmethod
    def subscribe(self, broker: Any, handler: Handler) -> None:
        """One subscriber with default settings on this target's endpoint."""

    @abstractmethod
    async def publish(self, broker: Any, body: Body) -> None: ...

    async def publish_batch(self, broker: Any, bodies: Sequence[Body]) -> None:
        raise NotImplementedError(f"{self.key} has no publish_batch in this suite")

    @abstractmethod
    async def request(self, broker: Any, body: Body, reply_timeout: float) -> Any:
        """``broker.request`` to the endpoint; returns FastStream's reply message."""

    async def stored(self, broker: Any) -> int:
        """Messages waiting at the endpoint (checks publish_batch stored them all)."""
        raise NotImplementedError

    async def describe(self) -> str:
        """A short note on the setup, checked against the live endpoint where possible."""
        return ""

    @abstractmethod
    async def cleanup(self) -> None:
        """Delete what the run left at the endpoint."""


class SqliteTarget(Target):
    key = "sqlite"
    title = "msgcore SqliteBroker"
    supports_batch = True

    @property
    def path(self) -> Path:
        return self.workdir / f"{self.endpoint}.db"

    def make_broker(self, *, log: bool) -> SqliteBroker:
        # Broker defaults: WAL, synchronous=NORMAL, busy_timeout 5 s, poll 1..100 ms.
        return SqliteBroker(f"sqlite:///{self.path}", **logger_kwargs(log))

    def subscribe(self, broker: SqliteBroker, handler: Handler) -> None:
        broker.subscriber(self.endpoint)(handler)

    async def publish(self, broker: SqliteBroker, body: Body) -> None:
        await broker.publish(body, self.endpoint)

    async def publish_batch(self, broker: SqliteBroker, bodies: Sequence[Body]) -> None:
        await broker.publish_batch(*bodies, queue=self.endpoint)

    async def request(self, broker: SqliteBroker, body: Body, reply_timeout: float) -> Any:
        return await broker.request(body, self.endpoint, timeout=reply_timeout)

    async def stored(self, broker: SqliteBroker) -> int:
        return int(await broker.queue_depth(self.endpoint))

    async def describe(self) -> str:
        if not self.path.exists():
            return "fresh temp file"
        with contextlib.closing(sqlite3.connect(self.path)) as conn:
            mode = conn.execute("PRAGMA journal_mode").fetchone()[0]
        return f"fresh temp file, journal_mode={mode}, synchronous=NORMAL (broker defaults)"

    async def cleanup(self) -> None:
        _remove_database(self.path)


def _remove_database(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class _RedisTarget(Target):
    server = "redis"

    def make_broker(self, *, log: bool) -> RedisBroker:
        return RedisBroker(self.servers.redis_url, **logger_kwargs(log))

    async def cleanup(self) -> None:
        client = Redis.from_url(self.servers.redis_url)
        try:
            await client.delete(self.endpoint)
        finally:
            await client.aclose()

    async def persistence(self) -> str:
        """The server's persistence settings (what a publish is durable against)."""
        client = Redis.from_url(self.servers.redis_url, decode_responses=True)
        try:
            aof = (await client.config_get("appendonly")).get("appendonly", "?")
            fsync = (await client.config_get("appendfsync")).get("appendfsync", "?")
            save = (await client.config_get("save")).get("save", "?")
        except Exception as exc:
            return f"server persistence unknown ({type(exc).__name__})"
        finally:
            await client.aclose()
        snapshots = f"save='{save}'" if save else "no RDB snapshots"
        return f"server: appendonly={aof} (appendfsync={fsync}), {snapshots}"


class RedisListTarget(_RedisTarget):
    key = "redis-list"
    title = "FastStream RedisBroker (list)"
    supports_batch = True

    def subscribe(self, broker: RedisBroker, handler: Handler) -> None:
        broker.subscriber(list=self.endpoint)(handler)

    async def publish(self, broker: RedisBroker, body: Body) -> None:
        await broker.publish(body, list=self.endpoint)

    async def publish_batch(self, broker: RedisBroker, bodies: Sequence[Body]) -> None:
        await broker.publish_batch(*bodies, list=self.endpoint)

    async def request(self, broker: RedisBroker, body: Body, reply_timeout: float) -> Any:
        return await broker.request(body, list=self.endpoint, timeout=reply_timeout)

    async def stored(self, broker: RedisBroker) -> int:
        client = Redis.from_url(self.servers.redis_url)
        try:
            return int(await client.llen(self.endpoint))
        finally:
            await client.aclose()

    async def describe(self) -> str:
        return f"ListSub defaults (BLPOP, polling_interval 0.1 s); {await self.persistence()}"


class RedisStreamTarget(_RedisTarget):
    key = "redis-stream"
    title = "FastStream RedisBroker (stream, group)"

    def subscribe(self, broker: RedisBroker, handler: Handler) -> None:
        sub = StreamSub(self.endpoint, group="bench", consumer="bench-1")
        broker.subscriber(stream=sub)(handler)

    async def publish(self, broker: RedisBroker, body: Body) -> None:
        await broker.publish(body, stream=self.endpoint)

    async def request(self, broker: RedisBroker, body: Body, reply_timeout: float) -> Any:
        return await broker.request(body, stream=self.endpoint, timeout=reply_timeout)

    async def describe(self) -> str:
        return f"StreamSub(group, consumer), XACK per message; {await self.persistence()}"


class RabbitTarget(Target):
    key = "rabbit"
    server = "rabbit"
    title = "FastStream RabbitBroker (durable queue)"

    def make_broker(self, *, log: bool) -> RabbitBroker:
        return RabbitBroker(self.servers.rabbit_url, **logger_kwargs(log))

    def subscribe(self, broker: RabbitBroker, handler: Handler) -> None:
        broker.subscriber(RabbitQueue(self.endpoint, durable=True))(handler)

    async def publish(self, broker: RabbitBroker, body: Body) -> None:
        await broker.publish(body, queue=self.endpoint)

    async def request(self, broker: RabbitBroker, body: Body, reply_timeout: float) -> Any:
        return await broker.request(body, queue=self.endpoint, timeout=reply_timeout)

    async def describe(self) -> str:
        return (
            "durable queue via the default exchange; FastStream defaults: transient messages "
            "(persist=False), publisher confirms on"
        )

    async def cleanup(self) -> None:
        connection = await aio_pika.connect(self.servers.rabbit_url)
        try:
            channel = await connection.channel()
            await channel.queue_delete(self.endpoint)
        finally:
            await connection.close()


TARGETS: dict[str, type[Target]] = {
    cls.key: cls for cls in (SqliteTarget, RedisListTarget, RedisStreamTarget, RabbitTarget)
}


def make_target(key: str, endpoint: str, workdir: Path, servers: Servers) -> Target:
    try:
        cls = TARGETS[key]
    except KeyError:
        raise ValueError(f"unknown target {key!r}: choose from {', '.join(TARGETS)}") from None
    return cls(endpoint, workdir, servers)


async def reachable(servers: Servers, server: str, within: float = 5.0) -> str | None:
    """None when the server answers, else why not (for ``redis`` or ``rabbit``)."""
    try:
        async with asyncio.timeout(within):
            if server == "redis":
                client = Redis.from_url(servers.redis_url)
                try:
                    await client.ping()
                finally:
                    await client.aclose()
            else:
                connection = await aio_pika.connect(servers.rabbit_url)
                await connection.close()
    except Exception as exc:
        url = _redact(servers.redis_url if server == "redis" else servers.rabbit_url)
        return f"{server} at {url} unreachable ({type(exc).__name__}: {exc})"
    return None


def _redact(url: str) -> str:
    scheme, sep, rest = url.partition("://")
    if "@" in rest:
        rest = "***@" + rest.split("@", 1)[1]
    return f"{scheme}{sep}{rest}"


async def sweep_redis(url: str, prefix: str) -> int:
    """Delete every Redis key of this run (a safety net behind each target's cleanup)."""
    client = Redis.from_url(url)
    try:
        keys = [key async for key in client.scan_iter(match=f"{prefix}*")]
        if keys:
            await client.delete(*keys)
        return len(keys)
    finally:
        await client.aclose()
