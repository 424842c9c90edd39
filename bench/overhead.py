"""msgcore's declare-once overhead: a bound ``msgcore.Router`` app against the same
consumer written by hand in plain FastStream, per transport, in the same run.

    python bench/overhead.py [--n 3000] [--rounds 3] [--only sqlite,redis,rabbit]
                             [--loop uvloop|asyncio]

Both sides publish N messages one by one from one task and consume them with one
subscriber in one consumer group, in one process; per-message log lines are off on both
(FastStream's at DEBUG). The figure is the median end-to-end msg/s over the rounds,
alternating sides so that drift on the machine hits both.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):  # the package, and tests' RabbitMQ cleanup helper
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from faststream.rabbit import (  # noqa: E402
    ExchangeType,
    QueueType,
    RabbitBroker,
    RabbitExchange,
    RabbitQueue,
)
from faststream.redis import RedisBroker, StreamSub  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from msgcore import RabbitSettings, RedisSettings, Router, Settings, create_broker  # noqa: E402
from msgcore.sqlite import SqliteBroker  # noqa: E402

REDIS_URL = os.environ.get("MSGCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("MSGCORE_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUIET = {"log_level": logging.DEBUG}

Run = Callable[[int], Awaitable[float]]


async def _drive(
    broker: Any, publish: Callable[[int], Awaitable[None]], n: int, done: asyncio.Event
) -> float:
    async with broker:
        await broker.start()
        await publish(-1)  # warm-up message, not timed
        await asyncio.wait_for(done.wait(), 60)
        done.clear()
        started = time.perf_counter()
        for i in range(n):
            await publish(i)
        await asyncio.wait_for(done.wait(), 300)
        return n / (time.perf_counter() - started)


class _Counter:
    def __init__(self, n: int) -> None:
        self.n, self.seen, self.done = n, 0, asyncio.Event()
        self.handles: list[Any] = []

    def hit(self, i: int) -> None:
        if i < 0:
            self.done.set()
            return
        self.seen += 1
        if self.seen == self.n:
            self.done.set()


async def raw_sqlite(n: int, tmp: Path) -> float:
    c, q = _Counter(n), f"b{uuid.uuid4().hex[:8]}"
    broker = SqliteBroker(f"sqlite:///{tmp / (q + '.db')}", **QUIET)

    @broker.subscriber(q, group="bench")
    async def handle(body: dict[str, int]) -> None:
        c.hit(body["i"])

    return await _drive(broker, lambda i: broker.publish({"i": i}, q), n, c.done)


async def raw_redis(n: int, tmp: Path) -> float:
    c, stream = _Counter(n), f"bench:{uuid.uuid4().hex[:8]}"
    broker = RedisBroker(REDIS_URL, **QUIET)

    @broker.subscriber(stream=StreamSub(stream, group="bench", consumer="c1"))
    async def handle(body: dict[str, int]) -> None:
        c.hit(body["i"])

    try:
        return await _drive(broker, lambda i: broker.publish({"i": i}, stream=stream), n, c.done)
    finally:
        async with RedisBroker(REDIS_URL) as cleanup:
            await cleanup._connection.delete(stream)  # type: ignore[union-attr]


async def raw_rabbit(n: int, tmp: Path, *, quorum: bool = False) -> float:
    c, name = _Counter(n), f"bench-{uuid.uuid4().hex[:8]}"
    broker = RabbitBroker(RABBIT_URL, **QUIET)
    exchange = RabbitExchange(name, type=ExchangeType.TOPIC, durable=True, auto_delete=True)
    if quorum:
        # the queue type msgcore declares: a replicated log that counts deliveries
        queue = RabbitQueue(
            f"{name}.bench",
            durable=True,
            routing_key=name,
            queue_type=QueueType.QUORUM,
            arguments={"x-expires": 600_000},
        )
    else:
        queue = RabbitQueue(f"{name}.bench", durable=True, routing_key=name, auto_delete=True)

    @broker.subscriber(queue, exchange)
    async def handle(body: dict[str, int]) -> None:
        c.hit(body["i"])

    try:
        return await _drive(
            broker,
            lambda i: broker.publish({"i": i}, routing_key=name, exchange=exchange, persist=True),
            n,
            c.done,
        )
    finally:
        if quorum:  # quorum queues cannot auto-delete
            async with RabbitBroker(RABBIT_URL) as cleanup:
                channel = await cleanup._connection.channel()  # type: ignore[union-attr]
                await channel.queue_delete(f"{name}.bench")
                await channel.close()


async def raw_rabbit_quorum(n: int, tmp: Path) -> float:
    return await raw_rabbit(n, tmp, quorum=True)


def _neutral(settings: Settings, n: int) -> tuple[Any, Callable[[int], Awaitable[None]], _Counter]:
    c = _Counter(n)
    router = Router()
    channel = f"b{uuid.uuid4().hex[:8]}"

    @router.subscriber(channel, group="bench")
    async def handle(body: dict[str, int]) -> None:
        c.hit(body["i"])

    handle_pub = router.publisher(channel)
    c.handles = [handle_pub]
    broker = create_broker(router, settings=settings)
    return broker, lambda i: handle_pub.publish({"i": i}), c


async def msgcore_sqlite(n: int, tmp: Path) -> float:
    url = f"sqlite:///{tmp / (uuid.uuid4().hex[:8] + '.db')}"
    broker, publish, c = _neutral(Settings(url=url, log_messages=False), n)
    return await _drive(broker, publish, n, c.done)


async def msgcore_redis(n: int, tmp: Path) -> float:
    prefix = f"bench{uuid.uuid4().hex[:6]}:"
    settings = Settings(
        url=REDIS_URL, log_messages=False, redis=RedisSettings(stream_prefix=prefix)
    )
    broker, publish, c = _neutral(settings, n)
    try:
        return await _drive(broker, publish, n, c.done)
    finally:
        async with RedisBroker(REDIS_URL) as cleanup:
            conn = cleanup._connection
            assert conn is not None
            keys = [k async for k in conn.scan_iter(f"{prefix}*")]
            if keys:
                await conn.delete(*keys)


async def msgcore_rabbit(n: int, tmp: Path) -> float:
    exchange = f"bench-{uuid.uuid4().hex[:8]}"
    settings = Settings(
        url=RABBIT_URL, log_messages=False, rabbit=RabbitSettings(exchange=exchange)
    )
    broker, publish, c = _neutral(settings, n)
    try:
        return await _drive(broker, publish, n, c.done)
    finally:
        # quorum queues never delete themselves: remove what msgcore declared
        from tests.contract.harness import delete_rabbit_names

        channels = {h.full_channel for h in c.handles}
        await delete_rabbit_names(
            RABBIT_URL, exchange, {(ch, "bench") for ch in channels}, channels
        )


Side = Callable[[int, Path], Awaitable[float]]
PAIRS: dict[str, list[tuple[str, Side, Side]]] = {
    "sqlite": [("SQLite", raw_sqlite, msgcore_sqlite)],
    "redis": [("Redis (stream group)", raw_redis, msgcore_redis)],
    "rabbit": [
        # like for like: the queue type msgcore declares
        ("RabbitMQ (quorum queue)", raw_rabbit_quorum, msgcore_rabbit),
        # what a classic queue would save, at the cost of delivery counts
        ("RabbitMQ (hand: classic queue)", raw_rabbit, msgcore_rabbit),
    ],
}


async def main(args: argparse.Namespace) -> None:
    console = Console()
    table = Table(
        title=f"declare-once overhead (N={args.n}, {args.rounds} rounds, loop={args.loop}, "
        "per-message logs off)"
    )
    for col in ("transport", "FastStream by hand msg/s", "msgcore Router msg/s", "msgcore / hand"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for key in args.only.split(","):
            for label, raw, neutral in PAIRS[key]:
                a: list[float] = []
                b: list[float] = []
                for _ in range(args.rounds):
                    a.append(await raw(args.n, Path(tmp)))
                    b.append(await neutral(args.n, Path(tmp)))
                ra, rb = statistics.median(a), statistics.median(b)
                table.add_row(label, f"{ra:,.0f}", f"{rb:,.0f}", f"{rb / ra:.2f}x")
                console.print(
                    f"{label}: hand {[round(x) for x in a]}  msgcore {[round(x) for x in b]}"
                )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parsed = parser.parse_args()
    if parsed.loop == "uvloop" and sys.platform != "win32":
        import uvloop

        uvloop.run(main(parsed))
    else:
        asyncio.run(main(parsed))
