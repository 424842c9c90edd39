"""Starting and stopping brokers the same way in every scenario."""

from __future__ import annotations

import asyncio
from typing import Any

from bench.access_log import access_log_to_devnull
from bench.results import BenchError

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
    try:
        async with asyncio.timeout(grace):
            await broker.stop()
    except TimeoutError:
        raise BenchError(
            f"{type(broker).__name__}.stop() did not return within {grace:g} s"
        ) from None
