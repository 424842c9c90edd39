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
    """Wakes waiting consumers: local commits through ``notify``, other processes'
    through a poll that runs while anyone waits.

    The poll is a timer callback reading ``data_version`` on the event-loop thread, not
    a task: a consumer that drains its queue as fast as one local producer fills it
    waits once per message, and a task's wake-ups, timeouts and events cost more than
    the read itself (docs/benchmarks.md, "Job tracking"). A read the connection cannot
    make on this thread now (its worker thread is busy) is awaited on that thread.
    """

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
        self._interval = min_interval
        self._last: int | None = None
        self._timer: asyncio.TimerHandle | asyncio.Handle | None = None
        self._reading: asyncio.Task[None] | None = None
        self._closed = False

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
        if self._interval > 4 * self.min_interval and self._timer is not None:
            self._timer.cancel()
            self._poll_in(0.0)
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
        if self._timer is None and self._reading is None and not self._closed:
            self._poll_in(0.0)  # the first waiter after a pause looks at once
        try:
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(seconds):
                    await event.wait()
        finally:
            self._waiters -= 1

    def _poll_in(self, seconds: float) -> None:
        loop = asyncio.get_running_loop()
        self._timer = (
            loop.call_later(seconds, self._poll) if seconds > 0 else loop.call_soon(self._poll)
        )

    def _poll(self) -> None:
        self._timer = None
        if self._waiters == 0 or self._closed:
            return  # nobody waits: the next waiter starts polling again
        try:
            version = self.transport.data_version_now()
        except StorageError as exc:
            self._failed(exc)
            return
        if version is None:
            self._reading = asyncio.ensure_future(self._read_on_thread())
        else:
            self._seen(version)

    async def _read_on_thread(self) -> None:
        try:
            version = await self.transport.data_version()
        except StorageError as exc:
            self._reading = None
            self._failed(exc)
            return
        self._reading = None
        if not self._closed:
            self._seen(version)

    def _failed(self, exc: StorageError) -> None:
        logger.warning("polling %s for changes failed, retrying: %s", self.transport.path, exc)
        self._interval = self.max_interval
        self._poll_in(self._interval)

    def _seen(self, version: int) -> None:
        # The first read has nothing to compare with: a commit may have landed between
        # a consumer's empty claim and now, so wake everyone to look once.
        if self._last is None or version != self._last:
            self._notify_all()
            self._interval = self.min_interval
        else:
            self._interval = min(self._interval * 2, self.max_interval)
        self._last = version
        self._poll_in(self._interval)

    async def close(self) -> None:
        self._closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._reading is not None:
            self._reading.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reading
            self._reading = None
        self._notify_all()
