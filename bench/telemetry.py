"""What tracing costs: end-to-end throughput with msgcore's telemetry on and off.

    python bench/telemetry.py [--n 3000] [--rounds 3] [--only sqlite,redis,rabbit]
                              [--loop uvloop|asyncio] [--work-ms 0] [--no-metrics] [--floor]
    OTEL_TRACES_SAMPLER=parentbased_traceidratio OTEL_TRACES_SAMPLER_ARG=0.1 python ...

Both sides run the same ``msgcore.Router`` app (a handler that publishes its result
onward to a second handler, so every message makes a publish, two process spans and an
onward publish) in one process and publish N messages one by one; per-message logs off.
*Tracing on*: ``msgcore.telemetry.setup`` with a batch span processor whose exporter
drops the spans (everything OpenTelemetry does in the process, minus the network), and
the in-memory metric reader. The figure is the median msg/s over the rounds, the sides
alternating (and which one runs first alternating too) so that drift on the machine hits
both; the ratio is on / off throughput, of the medians and, steadier on a noisy machine,
the median of each round's own ratio.

``--floor`` adds a third side, the least any tracer that propagates W3C trace context
costs on the transport: a middleware that only carries a ``traceparent`` header from
each consumed message to its onward publishes (a new span id per hop, a random root),
with no spans, no metrics and no parsing. Whatever tracing costs beyond it is the
tracer's own work and the SDK's spans.
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

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import random  # noqa: E402
import time  # noqa: E402
from contextvars import ContextVar  # noqa: E402
from typing import Any  # noqa: E402

from faststream import BaseMiddleware  # noqa: E402
from opentelemetry.sdk.trace import ReadableSpan  # noqa: E402
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult  # noqa: E402
from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.runs import cleanup, per_round, run_loop, settings_for  # noqa: E402
from msgcore import (  # noqa: E402
    Router,
    create_broker,
    telemetry,
)


class _Drop(SpanExporter):
    """Counts spans and drops them: the cost of tracing without the network."""

    def __init__(self) -> None:
        self.spans = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.spans += len(spans)
        return SpanExportResult.SUCCESS


WORK = {"seconds": 0.0, "metrics": 1.0}
"""CPU time each ``work`` call burns (``--work-ms``): tracing's cost against real work;
``metrics`` 0: traces only (``--no-metrics``)."""


def _burn(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


_UP: ContextVar[str | None] = ContextVar("bench_floor_traceparent", default=None)


class _CarryOnly(BaseMiddleware):
    """``--floor``: a consumed message's ``traceparent`` becomes the current one, and each
    publish writes it onward with a new span id (a random trace at the root)."""

    _up: str | None = None

    async def consume_scope(self, call_next: Any, msg: Any) -> Any:
        # kept on the instance too: FastStream publishes a handler's return value with
        # this middleware after the consume scope has ended
        self._up = msg.headers.get("traceparent")
        token = _UP.set(self._up)
        try:
            return await call_next(msg)
        finally:
            _UP.reset(token)

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        up = _UP.get() or self._up
        span = f"{random.getrandbits(64):016x}"
        if up is None:
            value = f"00-{random.getrandbits(128):032x}-{span}-01"
        else:
            value = f"{up[:36]}{span}{up[52:]}"
        cmd.headers = {**(cmd.headers or {}), "traceparent": value}
        return await call_next(cmd)


async def once(
    transport: str, n: int, tmp: Path, *, traced: bool, floor: bool = False
) -> tuple[float, int]:
    """(msg/s, spans exported); ``floor``: the ``--floor`` side (``traced`` False)."""
    tag = f"bt{uuid.uuid4().hex[:6]}"
    settings = settings_for(transport, tmp, tag, track=False)
    drop = _Drop()
    tel = (
        telemetry.setup("bench", drop, set_global=False, metrics_enabled=WORK["metrics"] > 0)
        if traced
        else None
    )
    router = Router(prefix=f"{tag}.", middlewares=[_CarryOnly] if floor else [])
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
        await cleanup(settings, tag, {f"{tag}.work", f"{tag}.results"})


async def main(args: argparse.Namespace) -> None:
    WORK["seconds"] = args.work_ms / 1000
    WORK["metrics"] = 0.0 if args.no_metrics else 1.0
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "parentbased_always_on")
    console = Console(width=160)
    table = Table(
        title=f"tracing cost (N={args.n}, {args.rounds} rounds, loop={args.loop}, "
        f"handler CPU {args.work_ms} ms, metrics {'off' if args.no_metrics else 'on'}, "
        f"sampler {sampler} "
        f"{os.environ.get('OTEL_TRACES_SAMPLER_ARG', '')}, per-message logs off, "
        "spans batched and dropped)"
    )
    columns = [
        "transport",
        "tracing off msg/s",
        "tracing on msg/s",
        "on / off",
        "per round: median (range)",
        "spans/msg",
    ]
    if args.floor:
        columns += ["carry-only floor msg/s", "floor / off per round"]
    for col in columns:
        table.add_column(col, justify="right")
    sides = ["off", "on", *(["floor"] if args.floor else [])]
    with tempfile.TemporaryDirectory() as tmp:
        for transport in args.only.split(","):
            rates: dict[str, list[float]] = {side: [] for side in sides}
            spans = 0
            for i in range(args.rounds):
                # the side that runs first rotates: drift inside a round hits every side
                for side in sides[i % len(sides) :] + sides[: i % len(sides)]:
                    rate, found = await once(
                        transport, args.n, Path(tmp), traced=side == "on", floor=side == "floor"
                    )
                    rates[side].append(rate)
                    spans = found if side == "on" else spans
            off, on = rates["off"], rates["on"]
            mo, mn = statistics.median(off), statistics.median(on)
            row = [
                transport,
                f"{mo:,.0f}",
                f"{mn:,.0f}",
                f"{mn / mo:.2f}x",
                per_round(on, off),
                f"{spans / (args.n + 1):.1f}",
            ]
            if args.floor:
                row += [f"{statistics.median(rates['floor']):,.0f}", per_round(rates["floor"], off)]
            table.add_row(*row)
            console.print(
                f"{transport}: "
                + "  ".join(f"{side} {[round(x) for x in rates[side]]}" for side in sides)
            )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=3000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--no-metrics", action="store_true", help="traces only")
    parser.add_argument(
        "--floor", action="store_true", help="also the carry-only floor (see the docstring)"
    )
    parsed = parser.parse_args()
    run_loop(main, parsed)
