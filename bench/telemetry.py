"""What tracing costs: end-to-end throughput with msgcore's telemetry on and off.

    python bench/telemetry.py [--n 3000] [--rounds 3] [--only sqlite,redis,rabbit]
                              [--loop uvloop|asyncio] [--work-ms 0]
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 python ...

Both sides run the same ``msgcore.Router`` app (a handler that publishes its result
onward to a second handler, so every message makes a publish, two process spans and an
onward publish) in one process and publish N messages one by one; per-message logs off.
*Tracing on*: ``msgcore.telemetry.setup`` with a batch span processor whose exporter
drops the spans (everything OpenTelemetry does in the process, minus the network), and
the in-memory metric reader. The figure is the median msg/s over the rounds, the sides
alternating so that drift on the machine hits both; the ratio is on / off throughput.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import time  # noqa: E402

from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402
from redis.asyncio import Redis  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from msgcore import (  # noqa: E402
    JobSettings,
    RabbitSettings,
    RedisSettings,
    Router,
    Settings,
    create_broker,
    telemetry,
)

REDIS_URL = os.environ.get("MSGCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("MSGCORE_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")


class _Drop(SpanExporter):
    """Counts spans and drops them: the cost of tracing without the network."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


def _settings(transport: str, tmp: Path, tag: str) -> Settings:
    values: dict[str, Any] = {
        "log_messages": False,
        "jobs": JobSettings(track=False),
        "redis": RedisSettings(stream_prefix=f"{tag}:"),
        "rabbit": RabbitSettings(exchange=tag),
    }
    if transport == "sqlite":
        values["url"] = f"sqlite:///{tmp / (tag + '.db')}"
    elif transport == "redis":
        values["url"] = REDIS_URL
    else:
        values["url"] = RABBIT_URL
    return Settings(**values)


async def _cleanup(settings: Settings, tag: str, channels: set[str]) -> None:
    if settings.transport == "redis":
        client = Redis.from_url(REDIS_URL)
        try:
            keys = [k async for k in client.scan_iter(match=f"{tag}:*", count=1000)]
            if keys:
                await client.delete(*keys)
        finally:
            await client.aclose()
    if settings.transport == "rabbit":
        from tests.contract.harness import delete_rabbit_names

        await delete_rabbit_names(settings.url, tag, {(c, None) for c in channels}, channels)


WORK = {"seconds": 0.0}
"""CPU time each ``work`` call burns (``--work-ms``): tracing's cost against real work."""


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


async def once(transport: str, n: int, tmp: Path, *, traced: bool) -> tuple[float, int]:
    """(msg/s, spans exported)."""
    tag = f"bt{uuid.uuid4().hex[:6]}"
    settings = _settings(transport, tmp, tag)
    drop = _Drop()
    tel = telemetry.setup("bench", drop, set_global=False) if traced else None
    router = Router(prefix=f"{tag}.")
    results = router.publisher("results")
    done = asyncio.Event()
    seen = [0]

    @router.subscriber("work")
    @results
    async def work(i: int) -> int:
        if WORK["seconds"]:
            _burn(WORK["seconds"])
        return i

    @router.subscriber("results")
    async def collect(i: int) -> None:
        if i < 0:
            done.set()
            return
        seen[0] += 1
        if seen[0] == n:
            done.set()

    publisher = router.publisher("work")
    try:
        broker = create_broker(router, settings=settings)
        assert hasattr(broker, "msgcore_telemetry") == traced
        async with broker:
            await broker.start()
            await publisher.publish(-1)
            await asyncio.wait_for(done.wait(), 60)
            done.clear()
            started = time.perf_counter()
            for i in range(n):
                await publisher.publish(i)
            await asyncio.wait_for(done.wait(), 300)
            rate = n / (time.perf_counter() - started)
        if tel is not None:
            tel.flush()
        return rate, drop.spans
    finally:
        telemetry.reset()
        await _cleanup(settings, tag, {f"{tag}.work", f"{tag}.results"})


async def main(args: argparse.Namespace) -> None:
    WORK["seconds"] = args.work_ms / 1000
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    console = Console(width=160)
    table = Table(
        title=f"tracing cost (N={args.n}, {args.rounds} rounds, loop={args.loop}, "
        f"handler CPU {args.work_ms} ms, sampler {sampler} "
        f"{os.environ.get('OTEL_TRACES_SAMPLER_ARG', '')}, per-message logs off, "
        "spans batched and dropped)"
    )
    for col in ("transport", "tracing off msg/s", "tracing on msg/s", "on / off", "spans/msg"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in args.only.split(","):
            off: list[float] = []
            on: list[float] = []
            spans = 0
            for _ in range(args.rounds):
                off.append((await once(transport, args.n, Path(tmp), traced=False))[0])
                rate, spans = await once(transport, args.n, Path(tmp), traced=True)
                on.append(rate)
            mo, mn = statistics.median(off), statistics.median(on)
            table.add_row(
                transport,
                f"{mo:,.0f}",
                f"{mn:,.0f}",
                f"{mn / mo:.2f}x",
                f"{spans / (args.n + 1):.1f}",
            )
            console.print(
                f"{transport}: off {[round(x) for x in off]}  on {[round(x) for x in on]}"
            )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--work-ms", type=float, default=0.0)
    parsed = parser.parse_args()
    if parsed.loop == "uvloop" and sys.platform != "win32":
        import uvloop

        uvloop.run(main(parsed))
    else:
        asyncio.run(main(parsed))
