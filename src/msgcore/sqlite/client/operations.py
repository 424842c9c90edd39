"""``SqliteOperations``: what an operator reads and changes in a SQLite transport file
from a process that runs no broker (``msgcore.ops``, the ``msgcore`` CLI).

A ``SqliteClient`` with a few more verbs: counts per queue and group, and dead letters
listed, replayed or deleted in bulk. The SQL is in ``queries.py`` with the rest.
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from msgcore.constants import REPLY_QUEUE_PREFIX

from . import queries as q
from .base import DeadLetter
from .connection import SqliteClient

__all__ = ["DeadLetterFilter", "GroupCounts", "SqliteOperations"]


@dataclass(frozen=True, slots=True)
class GroupCounts:
    """The rows of one queue and group, by state (see ``queries.GROUP_COUNTS``)."""

    queue: str
    group: str
    waiting: int
    running: int
    delayed: int
    retrying: int
    oldest_waiting_created_at: float | None
    """When the oldest claimable row was published (None: nothing is claimable)."""


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to; None matches anything."""

    ids: Sequence[int] | None = None
    queue: str | None = None
    group: str | None = None
    failed_before: float | None = None
    """Epoch seconds: only dead letters that failed before then."""

    def params(self) -> dict[str, Any]:
        return {
            "ids": None if self.ids is None else json.dumps(list(self.ids)),
            "queue": self.queue,
            "grp": self.group,
            "failed_before": self.failed_before,
        }


def _is_reply_queue(queue: str) -> bool:
    # private to one requester, never a consumer group's work
    return queue.startswith(REPLY_QUEUE_PREFIX)


class SqliteOperations(SqliteClient):
    """A ``SqliteClient`` for inspection and dead-letter maintenance."""

    async def group_counts(self, queue: str | None = None) -> list[GroupCounts]:
        """Rows per queue and group (of ``queue``, or all), reply queues left out."""
        now = time.time()
        rows = await self._run(
            lambda c: c.execute(q.GROUP_COUNTS, {"now": now, "queue": queue}).fetchall(),
            heavy=True,
        )
        return [
            GroupCounts(r[0], r[1], r[2] or 0, r[3] or 0, r[4] or 0, r[5] or 0, r[6])
            for r in rows
            if not _is_reply_queue(r[0])
        ]

    async def registered_groups(self, queue: str | None = None) -> list[tuple[str, str]]:
        """The ``(queue, group)`` pairs consumer groups registered (some may hold nothing)."""
        rows = await self._run(lambda c: c.execute(q.REGISTERED_GROUPS, (queue, queue)).fetchall())
        return [(r[0], r[1]) for r in rows if not _is_reply_queue(r[0])]

    async def dead_letter_counts(self, queue: str | None = None) -> dict[tuple[str, str], int]:
        rows = await self._run(
            lambda c: c.execute(q.DEAD_LETTER_COUNTS, (queue, queue)).fetchall(), heavy=True
        )
        return {(r[0], r[1]): int(r[2]) for r in rows}

    async def find_dead_letters(
        self, which: DeadLetterFilter, *, limit: int, after: int = 0, upto: int | None = None
    ) -> list[DeadLetter]:
        """Up to ``limit`` matching dead letters with a row id above ``after`` (and not
        above ``upto``), oldest first."""
        params = {**which.params(), "after": after, "upto": upto, "limit": limit}
        rows = await self._run(
            lambda c: c.execute(q.FIND_DEAD_LETTERS, params).fetchall(), heavy=limit > 64
        )
        return [DeadLetter.from_row(r) for r in rows]

    async def last_dead_letter(self) -> int:
        """The highest dead-letter row id now (0: none)."""
        row = await self._run(lambda c: c.execute(q.LAST_DEAD_LETTER).fetchone())
        return int(row[0] or 0)

    async def replay_dead_letters(self, row_ids: Sequence[int]) -> int:
        """Put these dead letters back on the queue and group they died in, attempts
        reset, and delete them, in one transaction; how many existed."""
        if not row_ids:
            return 0
        params = {"ids": json.dumps(list(row_ids)), "now": time.time()}

        def op(c: sqlite3.Connection) -> int:
            queues = c.execute(q.REPLAY_DEAD_LETTERS, params).fetchall()
            c.execute(q.DELETE_DEAD_LETTERS_BY_ID, params)
            self._touched.update(r[0] for r in queues)
            return len(queues)

        if len(row_ids) > 64:
            self._heavy.add(op)  # a big batch is written off the event loop
        return int(await self._write(op))

    async def delete_dead_letters(self, which: DeadLetterFilter) -> int:
        """Delete the matching dead letters; how many."""
        params = which.params()
        return int(await self._write(lambda c: c.execute(q.DELETE_DEAD_LETTERS, params).rowcount))
