"""What a per-key lock costs: end-to-end throughput of a locked handler against the same
handler unlocked, measured in the same run.

    python bench/locks.py [--n 2000] [--rounds 3] [--only sqlite,redis,rabbit]
                          [--keys 0,8] [--work-ms 0] [--loop uvloop|asyncio]

One worker in the benchmark process (``max_workers=8``, per-message logs off, job
tracking off: plain publishes, so the figure is the lock's alone) consumes N messages
published in bursts of 500 (``asyncio.gather``). *Unlocked*: ``@router.subscriber(...)``;
*locked*: the same with ``lock="k"``. ``--keys``: how many distinct keys the N messages
spread over (``0``: every message its own key, the lock's bare cost; ``8``: eight hot
keys, at most eight handlers at once and the others waiting). The store is beside the
transport (RabbitMQ: a SQLite file). Figures are medians of the rounds, the two sides
alternating (and which one runs first alternating too).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.runs import cleanup, run_loop, settings_for  # noqa: E402
from msgcore import Router, create_broker  # noqa: E402

_BURST = 500
"""Publishes in flight at once (the same on both sides; the figures in docs/benchmarks.md were
measured with it)."""


async def once(transport: str, n: int, keys: int, work: float, tmp: Path, *, locked: bool) -> float:
    """msg/s of one side."""
    tag = f"bl{uuid.uuid4().hex[:6]}"
    settings = settings_for(transport, tmp, tag, track=False)
    router = Router(prefix=f"{tag}.")
    done = asyncio.Event()
    seen = [0]
    options: dict[str, Any] = {"max_workers": 8}
    if locked:
        options["lock"] = "k"

    @router.subscriber("work", **options)
    async def handle(item: dict[str, Any]) -> None:
        if work:
            await asyncio.sleep(work)
        if item["i"] < 0:
            done.set()
            return
        seen[0] += 1
        if seen[0] == n:
            done.set()

    publisher = router.publisher("work")
    try:
        broker = create_broker(router, settings=settings)
        async with broker:
            await broker.start()
            await publisher.publish({"i": -1, "k": "warm-up"})
            await asyncio.wait_for(done.wait(), 60)
            done.clear()
            started = time.perf_counter()
            for first in range(0, n, _BURST):
                await asyncio.gather(
                    *(
                        publisher.publish({"i": i, "k": i % keys if keys else i})
                        for i in range(first, min(first + _BURST, n))
                    )
                )
            await asyncio.wait_for(done.wait(), 600)
            return n / (time.perf_counter() - started)
    finally:
        await cleanup(settings, tag, {f"{tag}.work"})


async def main(args: argparse.Namespace) -> None:
    console = Console(width=160)
    table = Table(
        title=f"per-key lock cost (N={args.n}, {args.rounds} rounds, loop={args.loop}, "
        f"max_workers=8, handler sleeps {args.work_ms} ms, per-message logs off, "
        "job tracking off)"
    )
    for col in ("transport", "keys", "unlocked msg/s", "locked msg/s", "locked / unlocked"):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in args.only.split(","):
            for keys in (int(k) for k in args.keys.split(",")):
                sides: dict[bool, list[float]] = {False: [], True: []}
                for i in range(args.rounds):
                    for locked in (i % 2 == 1, i % 2 == 0):
                        sides[locked].append(
                            await once(
                                transport,
                                args.n,
                                keys,
                                args.work_ms / 1000,
                                Path(tmp),
                                locked=locked,
                            )
                        )
                off, on = statistics.median(sides[False]), statistics.median(sides[True])
                console.print(
                    f"{transport} keys={keys}: unlocked {[round(x) for x in sides[False]]} "
                    f"locked {[round(x) for x in sides[True]]}"
                )
                table.add_row(
                    transport,
                    str(keys) if keys else "all distinct",
                    f"{off:,.0f}",
                    f"{on:,.0f}",
                    f"{on / off:.2f}x",
                )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--keys", default="0,8")
    parser.add_argument("--work-ms", type=float, default=0.0)
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    run_loop(main, parser.parse_args())
