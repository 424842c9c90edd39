"""Small asyncio helpers for msgcore's background tasks (the Redis transport's loops, the
queue-depth reader).

Python 3.11's ``asyncio.wait_for`` loses a cancellation that arrives as the awaited
operation completes (fixed in 3.12), and redis-py wraps every socket write in it: a
task that talks to Redis may swallow a ``cancel()``. So background loops also check a
stop flag, waits use ``asyncio.timeout``, and stopping cancels until a task has
really finished.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Any

__all__ = ["cancel_and_wait", "wait_event"]


async def wait_event(event: asyncio.Event, timeout: float) -> bool:
    """Wait until ``event`` is set or ``timeout`` seconds pass; whether it was set."""
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(timeout):
            await event.wait()
    return event.is_set()


async def cancel_and_wait(tasks: Iterable[asyncio.Task[Any]], *, every: float = 0.05) -> None:
    """Cancel ``tasks`` and return once every one of them has finished."""
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        # a task that swallowed its cancellation is cancelled again on the next round
        _, pending = await asyncio.wait(pending, timeout=every)
