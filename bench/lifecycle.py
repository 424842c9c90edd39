"""Starting and stopping brokers the same way in every scenario."""

from __future__ import annotations

import asyncio
import time
from typing import Any

from bench.access_log import access_log_to_devnull

PAD = "x" * 64
"""Every message body is ``{"i": <int>, "pad": PAD}``: about 90 bytes of JSON."""


def make_body(i: int) -> dict[str, Any]:
    return {"i": i, "pad": PAD}


async def start_broker(broker: Any, *, log: bool) -> None:
    if log:
        with access_log_to_devnull():
            await broker.start()
    else:
        await broker.start()


async def stop_broker(broker: Any, *, grace: float = 30.0) -> None:
    async with asyncio.timeout(grace):
        await broker.stop()


class Deadline:
    """Seconds left of a budget, for waits inside a measurement."""

    def __init__(self, seconds: float) -> None:
        self.at = time.monotonic() + seconds

    def left(self, floor: float = 0.1) -> float:
        return max(self.at - time.monotonic(), floor)
