"""A worker's job-store calls through an outage of the store.

Failing the attempt when the job store (Redis: the Redis transport's server, or the
store of a RabbitMQ deployment) cannot be reached would spend the message's attempts at
the retry policy's pace: with the default policy an outage of ~15 s dead-letters every
message the worker holds or takes meanwhile, although nothing is wrong with them. So
the worker keeps the message and calls the store again until it answers. The same holds
for a SQLite store whose write lock another process holds past ``busy_timeout`` (a
backup, a long purge): the attempt's result was refused, and failing the attempt would
run the handler again or dead-letter a job whose record then stayed ``running``. Only
``StoreUnavailableError`` and ``DatabaseLockedError`` are waited through; any other
error belongs to the attempt.
While the store is down the worker's ``max_workers`` slots fill with waiting messages,
so it takes no more; a worker that stops meanwhile hands them back (the wait is
cancelled like a handler). ``Client.wait`` rides out an outage the same way, within its
timeout.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from msgcore.exceptions import DatabaseLockedError, StoreUnavailableError

__all__ = ["through_store_outage"]

T = TypeVar("T")

logger = logging.getLogger("msgcore.jobs")

PASSING = (StoreUnavailableError, DatabaseLockedError)
"""The store errors that say nothing about the call: the same call succeeds later."""

FIRST_PAUSE = 0.1
MAX_PAUSE = 5.0
"""Seconds between calls while the store is down: doubling from the first to the cap."""


async def through_store_outage(
    call: Callable[[], Awaitable[T]],
    *,
    doing: str,
    job_id: str | None = None,
    deadline: float | None = None,
) -> T:
    """``call()``, made again while it raises one of ``PASSING``, until
    ``deadline`` (``time.monotonic()``; None: for as long as it takes), after which the
    error is raised. ``doing`` says what for in the log: one warning when the wait
    starts, one line when it ends."""
    pause = FIRST_PAUSE
    began: float | None = None
    while True:
        try:
            result = await call()
        except PASSING as exc:
            if deadline is not None and time.monotonic() + pause >= deadline:
                raise
            if began is None:
                began = time.monotonic()
                logger.warning(
                    "%s: the job store is unavailable while %s; waiting for it: %s",
                    _who(job_id),
                    doing,
                    exc,
                    extra=_extra(job_id),
                )
            await asyncio.sleep(pause)
            pause = min(pause * 2, MAX_PAUSE)
            continue
        if began is not None:
            logger.info(
                "%s: the job store answered again after %.1fs",
                _who(job_id),
                time.monotonic() - began,
                extra=_extra(job_id),
            )
        return result


# made only when there is something to log: the call above runs for every job
def _who(job_id: str | None) -> str:
    return f"job {job_id}" if job_id else "client"


def _extra(job_id: str | None) -> dict[str, Any]:
    return {"job_id": job_id} if job_id else {}
