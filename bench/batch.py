"""Scenario B: ``publish_batch`` throughput (publisher side only, no consumer running).

N messages go out in batches of ``batch_size``; afterwards the endpoint's depth is
checked so that a fast but lossy publish cannot pass.
"""

import gc
import time

from bench.lifecycle import make_body, start_broker, stop_broker
from bench.results import BenchError
from bench.targets import Target


async def publish_batch_throughput(target: Target, *, n: int, batch_size: int) -> dict[str, float]:
    broker = target.make_broker(log=False)
    await start_broker(broker, log=False)
    try:
        warm = [make_body(-1 - i) for i in range(batch_size)]
        await target.publish_batch(broker, warm)
        bodies = [make_body(i) for i in range(n)]
        batches = [bodies[i : i + batch_size] for i in range(0, n, batch_size)]
        gc.collect()

        start = time.perf_counter()
        for chunk in batches:
            await target.publish_batch(broker, chunk)
        elapsed = time.perf_counter() - start

        stored = await target.stored(broker)
        if stored != n + len(warm):
            raise BenchError(f"expected {n + len(warm)} stored messages, found {stored}")
        return {
            "msg_per_s": n / elapsed,
            "seconds": elapsed,
            "batch_size": float(batch_size),
            "batches_per_s": len(batches) / elapsed,
            "n": float(n),
        }
    finally:
        await stop_broker(broker)
