"""Keys that come due a fixed time after they were added, all served by one timer.

A job's ``running`` write waits ``after`` seconds (``SqliteStore``, ``RedisStore``): most
attempts end sooner and record their start with their result instead. A timer per job
cost more than the rest of a start (``call_later`` and ``cancel`` for every message), so
one timer walks the waiting keys, which are due in the order they were added.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

__all__ = ["DueLater"]

logger = logging.getLogger("msgcore.jobs")


class DueLater:
    """Calls ``fire(key)`` once ``after`` seconds have passed since ``add(key)``, unless
    ``discard(key)`` came first."""

    def __init__(self, after: float, fire: Callable[[str], object]) -> None:
        self.after = after
        self._fire = fire
        self._due: dict[str, float] = {}
        self._timer: asyncio.TimerHandle | None = None

    def __contains__(self, key: str) -> bool:
        return key in self._due

    def add(self, key: str) -> None:
        """``key`` comes due ``after`` seconds from now (again, if it was waiting)."""
        loop = asyncio.get_running_loop()
        self._due.pop(key, None)  # to the end: the order stays the order of due times
        self._due[key] = loop.time() + self.after
        if self._timer is None:
            self._timer = loop.call_later(self.after, self._sweep)

    def discard(self, key: str) -> bool:
        """Stop waiting for ``key``; whether it was waiting."""
        return self._due.pop(key, None) is not None

    def clear(self) -> None:
        self._due.clear()
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _sweep(self) -> None:
        self._timer = None
        loop = asyncio.get_running_loop()
        now = loop.time()
        while self._due:
            key, due = next(iter(self._due.items()))
            if due > now:
                self._timer = loop.call_at(due, self._sweep)
                return
            del self._due[key]
            try:
                self._fire(key)
            except Exception:  # the keys after it still come due
                logger.exception("a deferred write for %s failed to start", key)
