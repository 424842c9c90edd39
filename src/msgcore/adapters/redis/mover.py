"""The broker's background task that moves due delayed messages and retries into streams.

Delayed publishes of a channel wait in ``{prefix}_delayed:{channel}``; a group's
retries wait in ``{prefix}_retry-due:{group}@{channel}``. A broker moves the sets of
the channels and groups it consumes: every process that consumes a channel moves its
delays, so they are delivered as long as one consumer runs. The move is one Lua script
(``MOVE_DUE``): two processes never move the same message twice.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Callable

from redis.asyncio import Redis

from msgcore.adapters.redis import scripts
from msgcore.tasks import cancel_and_wait, wait_event

__all__ = ["DueMover"]


class DueMover:
    """Moves what is due from watched sorted sets into their streams."""

    def __init__(
        self,
        *,
        client: Callable[[], Redis],
        polling_interval: float,
        log: Callable[[str, int], None],
        batch: int = 100,
    ) -> None:
        self._client = client
        self.polling_interval = polling_interval
        self._log = log
        self.batch = batch
        self._targets: dict[str, tuple[str, int]] = {}
        self._watchers: Counter[str] = Counter()
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stopping = False

    def watch(self, due_set: str, stream: str, maxlen: int | None) -> None:
        """Move what becomes due in ``due_set`` into ``stream`` (capped at ``maxlen``)."""
        self._watchers[due_set] += 1
        self._targets[due_set] = (stream, maxlen or 0)
        self.wake()

    def unwatch(self, due_set: str) -> None:
        self._watchers[due_set] -= 1
        if self._watchers[due_set] <= 0:
            del self._watchers[due_set]
            self._targets.pop(due_set, None)

    def wake(self, _delay: float = 0.0) -> None:
        """Something was scheduled here: look at the due times again now."""
        self._wake.set()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    def start(self) -> None:
        if not self.running:
            self._stopping = False
            self._task = asyncio.create_task(self._run(), name="msgcore-redis-mover")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            self._stopping = True
            self.wake()
            await cancel_and_wait([task])

    async def move_once(self) -> tuple[int, float | None]:
        """Move what is due now; the seconds until the next due item (None: nothing)."""
        if not self._targets:
            return 0, None
        keys: list[str] = []
        maxlens: list[int] = []
        for due_set, (stream, maxlen) in self._targets.items():
            keys += [due_set, stream]
            maxlens.append(maxlen)
        moved, next_due, now = await scripts.MOVE_DUE(self._client(), keys, [self.batch, *maxlens])
        wait = None if int(next_due) < 0 else max(int(next_due) - int(now), 0) / 1000
        return int(moved), wait

    async def _run(self) -> None:
        failures = 0
        while not self._stopping:
            self._wake.clear()
            pause = self.polling_interval
            try:
                _, wait = await self.move_once()
            except Exception as exc:
                failures += 1
                pause = min(0.1 * 2**failures, 5.0)
                self._log(
                    f"moving due messages failed (try {failures}), retrying: {exc!r}",
                    logging.WARNING,
                )
            else:
                failures = 0
                if wait is not None:
                    pause = min(pause, wait)
            await wait_event(self._wake, pause)
