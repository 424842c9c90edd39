"""Dead letters from an operator's seat: list, show, replay, purge.

The same on every transport. A dead letter's ``id`` is opaque text naming it while it
exists (see ``DeadLetter``); ids of another transport or of dead letters that are gone
are ignored. Filters combine: ``ids``, ``channel``, ``group`` (and ``older_than`` for a
purge) must all match; ``ids=None`` with no filter means every dead letter.

Every function raises ``TransportUnreachableError`` (a ``StorageError``) when the
server or file does not answer, with the URL's password redacted in the message.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from msgcore.constants import MAX_LIMIT
from msgcore.exceptions import ConfigurationError
from msgcore.naming import check_channel_name, check_group_name
from msgcore.ops.backends import backend_for
from msgcore.ops.jobs import DeadJobs
from msgcore.ops.models import DeadLetter, Selection
from msgcore.settings import Settings, check_settings

__all__ = [
    "get_dead_letter",
    "list_dead_letters",
    "purge_dead_letters",
    "replay_dead_letters",
]


def _ids(ids: Any) -> Sequence[str] | None:
    # one id passed bare would otherwise be taken for a sequence of characters
    if ids is None:
        return None
    found = [ids] if isinstance(ids, str) else ids
    if not isinstance(found, Sequence) or not all(isinstance(i, str) for i in found):
        raise ConfigurationError(f"ids takes dead letter ids (str) or a list of them, got {ids!r}")
    return found


def _selection(settings: Any, channel: Any, group: Any) -> None:
    """The arguments every function takes, checked the same way on every transport."""
    check_settings(settings, "msgcore.ops")
    if channel is not None:
        check_channel_name(channel)
    check_group_name(group)


def _limit(limit: Any) -> int:
    if not isinstance(limit, int) or isinstance(limit, bool) or limit > MAX_LIMIT:
        raise ConfigurationError(f"limit takes an int of at most {MAX_LIMIT:,}, got {limit!r}")
    return limit


async def list_dead_letters(
    settings: Settings,
    *,
    channel: str | None = None,
    group: str | None = None,
    limit: int = 100,
) -> list[DeadLetter]:
    """Up to ``limit`` dead letters (of ``channel``, of ``group``), oldest first.

    Reading changes nothing. On RabbitMQ the groups are those workers registered in
    the job store plus a named channel's ``default`` group (see ``channel_stats``), and
    the messages are held for the read and handed back, in order.
    """
    _selection(settings, channel, group)
    if _limit(limit) <= 0:
        return []
    selection = Selection.of(None, channel=channel, group=group)
    async with backend_for(settings) as backend:
        return await backend.dead_letters(selection, limit)


async def get_dead_letter(settings: Settings, dead_letter_id: str) -> DeadLetter | None:
    """The dead letter named ``dead_letter_id``; None if there is none (any more)."""
    _selection(settings, None, None)
    _ids(dead_letter_id if isinstance(dead_letter_id, str) else [dead_letter_id])
    async with backend_for(settings) as backend:
        return await backend.dead_letter(dead_letter_id)


async def replay_dead_letters(
    settings: Settings,
    ids: Sequence[str] | None = None,
    *,
    channel: str | None = None,
    group: str | None = None,
) -> int:
    """Send the selected dead letters back to the group each died in (that group only,
    as a first attempt again) and remove them from the dead letters; how many.

    Unknown ids are skipped, not an error: the count says how many were replayed. A
    dead letter of a job submitted with ``Client`` has its ``dead`` job record deleted
    first (otherwise the worker would acknowledge it without running the handler); the
    worker records the job again when it runs it. On RabbitMQ a dead letter whose group
    queue no longer exists is left in place and ``DeliveryError`` is raised.
    """
    _selection(settings, channel, group)
    selection = Selection.of(_ids(ids), channel=channel, group=group)
    if selection.empty:
        return 0
    jobs = DeadJobs(settings)
    try:
        async with backend_for(settings) as backend:
            return await backend.replay(selection, jobs)
    finally:
        await jobs.close()


async def purge_dead_letters(
    settings: Settings,
    ids: Sequence[str] | None = None,
    *,
    channel: str | None = None,
    group: str | None = None,
    older_than: float | None = None,
) -> int:
    """Delete the selected dead letters for good; how many.

    ``older_than``: only dead letters that failed more than this many seconds ago.
    Unknown ids are skipped.
    """
    _selection(settings, channel, group)
    if older_than is not None and (
        not isinstance(older_than, int | float)
        or isinstance(older_than, bool)
        or math.isnan(older_than)
        or older_than < 0
    ):
        # NaN became a NULL bound on SQLite, which matched every dead letter: all purged
        raise ConfigurationError(f"older_than={older_than!r}: a number of seconds, 0 or more.")
    failed_before = None if older_than is None else time.time() - older_than
    selection = Selection.of(_ids(ids), channel=channel, group=group, failed_before=failed_before)
    if selection.empty:
        return 0
    async with backend_for(settings) as backend:
        return await backend.purge(selection)
