"""``msgcore.ops`` on the SQLite transport: one connection to the transport's file.

Everything is read from the tables (``docs/sqlite.md``): groups from ``msgcore_groups``
and the rows themselves, counts from the rows' lease and due times, dead letters from
``msgcore_dead_letters``. A dead letter's id is ``{failed_ms}-{row}``: SQLite may give a
deleted row's number to the next row, and the failure time keeps an old id from naming
that newer dead letter.
"""

from __future__ import annotations

import time
from pathlib import Path

from msgcore.adapters.sqlite import dead_letter_record
from msgcore.exceptions import StorageError
from msgcore.naming import sqlite_queue
from msgcore.ops.backend import OpsBackend, Prepare
from msgcore.ops.errors import TransportUnreachableError
from msgcore.ops.models import DeadLetter, GroupStats, Selection
from msgcore.settings import Settings
from msgcore.sqlite.client.base import DeadLetter as StoredDeadLetter
from msgcore.sqlite.client.operations import DeadLetterFilter, SqliteOperations
from msgcore.urls import parse_sqlite_url, redact_url

__all__ = ["SqliteOps"]

_BATCH = 500
"""Dead letters per transaction of a replay."""


def _missing(path: str) -> Path | None:
    """The absolute path of ``path`` if there is no file there."""
    return None if Path(path).is_file() else Path(path).absolute()


def _dead_letter_id(failed_at: float, row: int) -> str:
    return f"{int(failed_at * 1000)}-{row}"


def _row_of(dead_letter_id: str) -> int | None:
    """The row number in an id of ours; None for anything else."""
    ms, sep, row = dead_letter_id.partition("-")
    if not sep or not ms.isdigit() or not row.isdigit():
        return None
    return int(row)


def _dead_letter(d: StoredDeadLetter) -> DeadLetter:
    return DeadLetter.of(dead_letter_record(d), _dead_letter_id(d.failed_at, d.id))


class SqliteOps(OpsBackend):
    """The SQLite transport's file, opened for inspection and dead-letter maintenance."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.url
        self.path = parse_sqlite_url(settings.url).path
        self.client = SqliteOperations(self.path, busy_timeout=settings.sqlite.busy_timeout)

    async def open(self) -> None:
        # Opening would create an empty database: a mistyped path must not look like an
        # idle transport.
        if (where := _missing(self.path)) is not None:
            raise TransportUnreachableError(
                f"There is no msgcore database at {where} ({redact_url(self.url)}): check "
                "MSGCORE_URL (a relative path is taken from the working directory). Workers "
                "create the file when they first start."
            )
        try:
            await self.client.connect()
        except StorageError as exc:
            raise TransportUnreachableError(
                f"Cannot open the SQLite transport {redact_url(self.url)}: {exc}"
            ) from exc

    async def close(self) -> None:
        await self.client.close()

    # -- counts ------------------------------------------------------------------------

    async def stats(self, channel: str | None) -> list[GroupStats]:
        queue = None if channel is None else sqlite_queue(channel)
        counts = {(c.queue, c.group): c for c in await self.client.group_counts(queue)}
        dead = await self.client.dead_letter_counts(queue)
        known = set(counts) | set(dead) | set(await self.client.registered_groups(queue))
        now = time.time()
        found: list[GroupStats] = []
        for key in sorted(known):
            c = counts.get(key)
            oldest = None if c is None else c.oldest_waiting_created_at
            found.append(
                GroupStats(
                    channel=key[0],
                    group=key[1],
                    waiting=0 if c is None else c.waiting,
                    running=0 if c is None else c.running,
                    delayed=0 if c is None else c.delayed,
                    retrying=0 if c is None else c.retrying,
                    dead=dead.get(key, 0),
                    oldest_age=None if oldest is None else max(now - oldest, 0.0),
                    delivered=None,
                )
            )
        return found

    # -- dead letters ----------------------------------------------------------------------

    def _filter(self, selection: Selection) -> DeadLetterFilter | None:
        """The SQL side of ``selection``; None when its ids name no row of ours."""
        rows = None
        if selection.ids is not None:
            rows = sorted({r for i in selection.ids if (r := _row_of(i)) is not None})
            if not rows:
                return None
        return DeadLetterFilter(
            ids=rows,
            queue=None if selection.channel is None else sqlite_queue(selection.channel),
            group=selection.group,
            failed_before=selection.failed_before,
        )

    async def _find(self, selection: Selection, *, limit: int, after: int = 0) -> list[DeadLetter]:
        which = self._filter(selection)
        if which is None or limit <= 0:
            return []
        found = await self.client.find_dead_letters(which, limit=limit, after=after)
        # the ids' failure times are checked here (a row number alone may be reused)
        return [dead for dead in map(_dead_letter, found) if selection.matches(dead)]

    async def dead_letters(self, selection: Selection, limit: int) -> list[DeadLetter]:
        return await self._find(selection, limit=limit)

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        found = await self._find(Selection.of([dead_letter_id]), limit=1)
        return found[0] if found else None

    async def replay(self, selection: Selection, prepare: Prepare) -> int:
        which = self._filter(selection)
        if which is None:
            return 0
        # Only what is dead now: a replayed message that dies again at once must not be
        # met (and replayed) again by this very loop.
        upto = await self.client.last_dead_letter()
        replayed, after = 0, 0
        while batch := await self.client.find_dead_letters(
            which, limit=_BATCH, after=after, upto=upto
        ):
            after = batch[-1].id
            chosen = [dead for dead in map(_dead_letter, batch) if selection.matches(dead)]
            if chosen:
                await prepare(chosen)
                rows = [r for dead in chosen if (r := _row_of(dead.id)) is not None]
                replayed += await self.client.replay_dead_letters(rows)
        return replayed

    async def purge(self, selection: Selection) -> int:
        which = self._filter(selection)
        if which is None:
            return 0
        if selection.ids is None:
            return await self.client.delete_dead_letters(which)
        chosen = await self._find(selection, limit=len(selection.ids))
        rows = [r for dead in chosen if (r := _row_of(dead.id)) is not None]
        if not rows:
            return 0
        return await self.client.delete_dead_letters(DeadLetterFilter(ids=rows))
