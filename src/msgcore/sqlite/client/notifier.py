"""Waking consumers when rows arrive.

SQLite has no NOTIFY. Commits made by this process wake its waiting consumers at once
(``notify``). Commits by other processes are noticed by polling ``PRAGMA
data_version``, a read that touches no table: fast (every ``min_interval``) right
after activity, then backing off to ``max_interval`` while idle. Polling runs only
while some consumer is actually waiting.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import defaultdict
from collections.abc import Iterable

from msgcore.exceptions import StorageError
from msgcore.sqlite.client.connection import SqliteClient

logger = logging.getLogger("msgcore.sqlite")


class Notifier:
    def __init__(
        self,
        transport: SqliteClient,
        *,
        min_interval: float = 0.001,
        max_interval: float = 0.1,
    ) -> None:
        self.transport = transport
        self.min_interval = min_interval
        self.max_interval = max_interval
        self._events: dict[str, set[asyncio.Event]] = defaultdict(set)
        self._waiters = 0
        self._has_waiters = asyncio.Event()
        self._kick = asyncio.Event()
        self._interval = min_interval
        self._task: asyncio.Task[None] | None = None

    def watch(self, queue: str) -> asyncio.Event:
        event = asyncio.Event()
        self._events[queue].add(event)
        return event

    def unwatch(self, queue: str, event: asyncio.Event) -> None:
        events = self._events.get(queue)
        if events is not None:
            events.discard(event)
            if not events:
                del self._events[queue]

    def notify(self, queues: Iterable[str]) -> None:
        """Local commit stored rows in ``queues``: wake their consumers now."""
        for q in queues:
            for event in self._events.get(q, ()):
                event.set()
        # Activity here usually means answers from elsewhere soon (replies, onward
        # messages): poll fast again. Cut a long idle sleep short, but do not poll once
        # per local commit: those never change this connection's data_version.
        if self._interval > 4 * self.min_interval:
            self._kick.set()
        self._interval = self.min_interval

    def _notify_all(self) -> None:
        for events in self._events.values():
            for event in events:
                event.set()

    async def wait(self, event: asyncio.Event, seconds: float | None) -> None:
        """Wait until ``event`` is set or ``seconds`` pass, polling for other processes."""
        if event.is_set():
            return
        self._waiters += 1
        self._has_waiters.set()
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._poll(), name="msgcore-sqlite-notifier")
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        finally:
            self._waiters -= 1
            if self._waiters == 0:
                self._has_waiters.clear()

    async def _poll(self) -> None:
        last: int | None = None
        while True:
            await self._has_waiters.wait()
            version: int | None
            try:
                version = await self.transport.data_version()
            except StorageError as exc:
                logger.warning(
                    "polling %s for changes failed, retrying: %s", self.transport.path, exc
                )
                version = last
                self._interval = self.max_interval
            # The first read has nothing to compare with: a commit may have landed between
            # a consumer's empty claim and now, so wake everyone to look once.
            if last is None or version != last:
                self._notify_all()
                self._interval = self.min_interval
            else:
                self._interval = min(self._interval * 2, self.max_interval)
            last = version
            self._kick.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self._interval):
                    await self._kick.wait()

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        self._notify_all()
