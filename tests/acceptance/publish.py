"""The publisher process of the acceptance scenario, on msgcore's neutral API only.

``python -m tests.acceptance.publish COUNT [FIRST] [WINDOW]`` publishes ``Work(id=i)`` for
``i`` in ``FIRST .. FIRST+COUNT-1`` to the pipeline's input channel, ``WINDOW`` publishes
in flight at a time, then prints ``published COUNT`` and exits 0. The transport and the
channel prefix come from the environment, as for the workers (``MSGCORE_URL``,
``MSGCORE_PIPELINE_PREFIX``, ...).
"""

from __future__ import annotations

import asyncio
import sys
import time

from services.pipeline import IN, PREFIX, Work

from msgcore import Router, Settings, create_broker


async def main(count: int, first: int, window: int) -> None:
    router = Router(prefix=PREFIX)
    work = router.publisher(IN)
    broker = create_broker(router, settings=Settings(log_messages=False))
    start = time.monotonic()
    async with broker:
        ids = range(first, first + count)
        for at in range(0, count, window):
            await asyncio.gather(*(work.publish(Work(id=i)) for i in ids[at : at + window]))
    print(f"published {count} in {time.monotonic() - start:.2f}s", flush=True)


if __name__ == "__main__":
    argv = [int(a) for a in sys.argv[1:]]
    count = argv[0]
    first = argv[1] if len(argv) > 1 else 0
    window = argv[2] if len(argv) > 2 else 100
    asyncio.run(main(count, first, window))
