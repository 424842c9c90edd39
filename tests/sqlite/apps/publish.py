"""The publisher process of the multi-process tests.

``python -m tests.sqlite.apps.publish URL QUEUE FIRST COUNT BATCH`` publishes
``{"id": i}`` for ``i`` in ``FIRST .. FIRST+COUNT-1``, ``BATCH`` messages per
``publish_batch`` transaction (``BATCH`` 1 uses ``broker.publish``), then prints
``published COUNT`` and exits 0.
"""

from __future__ import annotations

import asyncio
import sys

from msgcore.sqlite import SqliteBroker


async def main(url: str, queue: str, first: int, count: int, batch: int) -> None:
    broker = SqliteBroker(url, logger=None)
    async with broker:
        ids = range(first, first + count)
        if batch == 1:
            for i in ids:
                await broker.publish({"id": i}, queue)
        else:
            for start in range(0, count, batch):
                chunk = ids[start : start + batch]
                await broker.publish_batch(*({"id": i} for i in chunk), queue=queue)
    print(f"published {count}", flush=True)


if __name__ == "__main__":
    url, queue, first, count, batch = sys.argv[1:6]
    asyncio.run(main(url, queue, int(first), int(count), int(batch)))
