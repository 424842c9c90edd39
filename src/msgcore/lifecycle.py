"""``with_lifecycle``: run msgcore's own start-up and shut-down work with a broker's.

The three transports' brokers share no lifecycle hook msgcore could use, so the
instance's own ``start``/``stop`` are wrapped; FastStream calls them through ``self``
(``async with``, ``FastStream`` apps), which finds the wrappers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["with_lifecycle"]


def with_lifecycle(
    broker: Any,
    *,
    started: Callable[[], Awaitable[None]],
    stopped: Callable[[], Awaitable[None]],
) -> None:
    """``started()`` once ``broker`` is connected, before it consumes (its failure fails
    the start); ``stopped()`` after ``broker.stop()``, even when that fails. Wrappers
    nest: a later one starts first and stops last."""
    start, stop = broker.start, broker.stop

    async def start_with() -> None:
        # connected first, so that what ``started`` opens can share the connection (a
        # store on the transport's SQLite file) or find what it creates (the file)
        await broker.connect()
        await started()
        await start()

    async def stop_with(*args: Any, **kwargs: Any) -> None:
        try:
            await stop(*args, **kwargs)
        finally:
            await stopped()

    broker.start = start_with
    broker.stop = stop_with
