"""What the result cache gives: cache-hit latency and the speedup of a re-run workload.

    python bench/cache.py [--n 2000] [--work-ms 20] [--distinct 200]
                          [--only sqlite,redis,rabbit] [--loop uvloop|asyncio]

Per transport (store beside it; RabbitMQ: a SQLite file), one worker in this process
(a ``msgcore.Router`` handler declared ``cache=True`` that "works" ``--work-ms`` per
call with ``max_workers=8``) and one ``Client``, per-message logs off:

- **latency**, one call at a time, percentiles over ``--n`` calls:
  - *raw request*: FastStream's own ``request`` through the bound publisher of an
    uncached twin handler that does no work -- the transport's round trip, the baseline;
  - *cache-hit submit -> result*: ``await (await client.submit(ch, p)).result()`` on a
    payload whose result is cached (what the issue's < 1 ms target is about);
  - *cache-hit request*: ``await client.request(ch, p)`` on a cached payload;
- **re-run workload**: ``--distinct`` distinct payloads submitted with ``submit_many``
  and waited for, cold (every payload runs the handler) and again (every one cached);
  the speedup is cold time over re-run time.
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
from msgcore import Client, Router, create_broker  # noqa: E402


def _percentiles(samples: list[float]) -> tuple[float, float, float]:
    ordered = sorted(samples)

    def at(q: float) -> float:
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    return at(0.5), at(0.9), at(0.99)


async def run(transport: str, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    tag = f"bc{uuid.uuid4().hex[:6]}"
    settings = settings_for(transport, tmp, tag)
    router = Router(prefix=f"{tag}.")
    work = args.work_ms / 1000

    @router.subscriber("render", cache=True, max_workers=8)
    async def render(n: int) -> dict[str, int]:
        await asyncio.sleep(work)
        return {"n": n, "square": n * n}

    @router.subscriber("echo", max_workers=8)
    async def echo(n: int) -> dict[str, int]:
        return {"n": n, "square": n * n}

    echo_publisher = router.publisher("echo")
    channel = f"{tag}.render"
    out: dict[str, Any] = {}
    try:
        broker = create_broker(router, settings=settings)
        async with broker, Client(settings=settings) as client:
            await broker.start()
            # re-run workload: cold, then the same payloads again
            payloads = list(range(args.distinct))
            started = time.perf_counter()
            jobs = await client.submit_many(channel, payloads)
            await client.wait(jobs, timeout=600)
            out["cold"] = time.perf_counter() - started
            started = time.perf_counter()
            again = await client.submit_many(channel, payloads)
            await client.wait(again, timeout=600)
            out["rerun"] = time.perf_counter() - started
            assert all(j.cached for j in again), "the re-run missed the cache"

            for _ in range(50):  # warm-up of every path
                await echo_publisher.request(1, timeout=30)
                await client.request(channel, 1)

            raw: list[float] = []
            hit_submit: list[float] = []
            hit_request: list[float] = []
            for i in range(args.n):
                n = i % args.distinct
                t0 = time.perf_counter()
                await echo_publisher.request(n, timeout=30)
                t1 = time.perf_counter()
                job = await client.submit(channel, n)
                await job.result(timeout=30)
                t2 = time.perf_counter()
                await client.request(channel, n)
                t3 = time.perf_counter()
                assert job.cached
                raw.append(t1 - t0)
                hit_submit.append(t2 - t1)
                hit_request.append(t3 - t2)
            out["raw"] = _percentiles(raw)
            out["hit_submit"] = _percentiles(hit_submit)
            out["hit_request"] = _percentiles(hit_request)
            out["mean_ratio"] = statistics.mean(hit_submit) / statistics.mean(raw)
    finally:
        await cleanup(settings, tag, {channel, f"{tag}.echo"})
    return out


async def main(args: argparse.Namespace) -> None:
    console = Console(width=200)
    table = Table(
        title=(
            f"result cache (N={args.n}, {args.distinct} distinct payloads, handler "
            f"{args.work_ms} ms, loop={args.loop}, per-message logs off)"
        )
    )
    for col in (
        "transport",
        "raw request p50/p90/p99 ms",
        "cache-hit submit->result p50/p90/p99 ms",
        "cache-hit request p50/p90/p99 ms",
        "hit / raw (mean)",
        f"cold {args.distinct} jobs s",
        "re-run s",
        "re-run speedup",
    ):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in args.only.split(","):
            r = await run(transport, args, Path(tmp))

            def fmt(p: tuple[float, float, float]) -> str:
                return " / ".join(f"{x:.3f}" for x in p)

            table.add_row(
                transport,
                fmt(r["raw"]),
                fmt(r["hit_submit"]),
                fmt(r["hit_request"]),
                f"{r['mean_ratio']:.2f}x",
                f"{r['cold']:.2f}",
                f"{r['rerun']:.3f}",
                f"{r['cold'] / r['rerun']:.0f}x",
            )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--work-ms", type=float, default=20.0)
    parser.add_argument("--distinct", type=int, default=200)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parsed = parser.parse_args()
    run_loop(main, parsed)
