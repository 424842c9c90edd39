"""Scenario A (and E): end-to-end throughput, publish N -> handler called N times.

One subscriber with default settings in the same process consumes while one task
publishes sequentially with ``await broker.publish(...)``. The clock runs from the
first publish to the handler call that completes the set of N distinct messages.
"""

import asyncio
import gc
import time
from typing import Any

from bench.background import cpu_sample
from bench.lifecycle import make_body, start_broker, stop_broker
from bench.results import BenchError
from bench.targets import Target


class Tally:
    """Counts handler calls for the ids ``[lo, hi)``; others (warm-up) are strays."""

    def __init__(self) -> None:
        self.expect(0, 0)

    def expect(self, lo: int, hi: int) -> None:
        self.lo, self.hi = lo, hi
        self.seen: set[int] = set()
        self.calls = 0
        self.strays = 0
        self.done = asyncio.Event()
        self.last_at = 0.0

    def hit(self, i: int) -> None:
        if not self.lo <= i < self.hi:
            self.strays += 1
            return
        self.calls += 1
        self.seen.add(i)
        if len(self.seen) == self.hi - self.lo:
            self.last_at = time.perf_counter()
            self.done.set()

    @property
    def duplicates(self) -> int:
        return self.calls - len(self.seen)


async def _wait_all(tally: Tally, seconds: float, what: str) -> None:
    try:
        async with asyncio.timeout(seconds):
            await tally.done.wait()
    except TimeoutError:
        raise BenchError(
            f"{what}: handler saw {len(tally.seen)}/{tally.hi - tally.lo} messages "
            f"{seconds:.0f} s after the last publish (stalled)"
        ) from None


async def end_to_end(
    target: Target,
    *,
    n: int,
    warmup: int,
    log: bool,
    servers: set[int] | frozenset[int] = frozenset(),
) -> dict[str, float]:
    """Publish ``n`` after a warm-up; ``servers`` are pids whose CPU is charged per message."""
    tally = Tally()

    async def handle(body: dict[str, Any]) -> None:
        tally.hit(int(body["i"]))

    broker = target.make_broker(log=log)
    target.subscribe(broker, handle)
    await start_broker(broker, log=log)
    try:
        if warmup:
            tally.expect(-warmup, 0)
            for i in range(-warmup, 0):
                await target.publish(broker, make_body(i))
            await _wait_all(tally, 60.0, "warm-up")
        gc.collect()

        tally.expect(0, n)
        cpu_before = cpu_sample(set(servers))
        start = time.perf_counter()
        for i in range(n):
            await target.publish(broker, make_body(i))
        published = time.perf_counter()
        await _wait_all(tally, max(30.0, 2 * (published - start)), "timed run")
        cpu = cpu_sample(set(servers)) - cpu_before
        elapsed = tally.last_at - start
        # Give a redelivery a moment to show up before counting duplicates.
        await asyncio.sleep(0.05)
        return {
            "msg_per_s": n / elapsed,
            "seconds": elapsed,
            "publish_msg_per_s": n / (published - start),
            "drain_seconds": max(tally.last_at - published, 0.0),
            "duplicates": float(tally.duplicates),
            "cpu_us_per_msg": 1e6 * cpu.process / n,
            "loop_thread_cpu_us_per_msg": 1e6 * cpu.main_thread / n,
            "server_cpu_us_per_msg": 1e6 * cpu.servers / n,
            "n": float(n),
        }
    finally:
        await stop_broker(broker)
