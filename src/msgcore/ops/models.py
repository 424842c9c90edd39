"""What ``msgcore.ops`` reports: per-group counts, and dead letters with a stable id."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, fields

from msgcore.adapters.base import DeadLetterRecord

__all__ = ["DeadLetter", "GroupStats", "Selection"]


@dataclass(frozen=True)
class GroupStats:
    """The messages of one consumer group of one channel, as its transport can tell.

    ``None`` means the transport cannot tell (not zero). Per transport:

    ``waiting``
        Ready for the group, not delivered yet. SQLite: claimable rows (an expired lease
        included). Redis: stream entries after the group's last delivered one (``lag``)
        plus ready entries of the group's retry stream, plus delayed messages and retries
        that are due but not moved into their stream yet (no worker runs to move them).
        RabbitMQ: the ready count of the group queue ``C.G``.
    ``running``
        Delivered to a worker of the group and not settled. SQLite: leased rows. Redis:
        the group's pending entries (``XPENDING``; read-ahead included). RabbitMQ:
        ``None``, AMQP does not report unacknowledged messages.
    ``delayed``
        Published with ``delay=``/``not_before=`` and not due yet. SQLite: rows never
        attempted whose time has not come. Redis: the channel's delayed set (shared by
        every group: each gets every message). RabbitMQ: the channel's delay queues
        ``E.delay.N.C`` (every group).
    ``retrying``
        Waiting out a retry backoff. SQLite: attempted rows whose time has not come (a
        nack's backoff). Redis: the group's retry set. RabbitMQ: the group's wait queues
        ``C.G.wait.N``, which also hold the later hops of long delays.
    ``dead``
        Dead letters of this channel and group.
    ``oldest_age``
        Seconds since the oldest waiting message was published. SQLite: its publish time.
        Redis: the time its stream entry was added (a retry: its original entry's; a due
        message not moved yet: its due time). RabbitMQ: ``None``.
    ``delivered``
        Cumulative deliveries to the group, for a rate between two readings. Redis: the
        group's ``entries-read`` on the channel stream plus on its retry stream. SQLite
        and RabbitMQ: ``None``.
    ``consumers``
        Consumers attached to the group. Redis: consumer names in the group (a stopped
        worker's name lingers until it is removed). RabbitMQ: consumers of ``C.G``.
        SQLite: ``None`` (workers poll the file and leave no trace while idle).
    """

    channel: str
    group: str
    waiting: int
    running: int | None
    delayed: int | None
    retrying: int | None
    dead: int
    oldest_age: float | None
    delivered: int | None
    consumers: int | None = None


@dataclass(frozen=True, kw_only=True)
class DeadLetter(DeadLetterRecord):
    """A dead letter with an ``id`` that names it for ``get``/``replay``/``purge``.

    The id is opaque text, stable while the dead letter exists and never reused for
    another one: on SQLite ``{failed_ms}-{row}``, on Redis ``{entry}@{channel}``, on
    RabbitMQ ``{token}@{dead-letter queue}``.
    """

    id: str

    @classmethod
    def of(cls, record: DeadLetterRecord, dead_letter_id: str) -> DeadLetter:
        """``record`` named ``dead_letter_id``."""
        values = {f.name: getattr(record, f.name) for f in fields(DeadLetterRecord)}
        return cls(id=dead_letter_id, **values)


@dataclass(frozen=True)
class Selection:
    """The dead letters an operation applies to. ``None`` fields match anything; all
    given fields must match."""

    ids: frozenset[str] | None = None
    channel: str | None = None
    group: str | None = None
    failed_before: float | None = None
    """Epoch seconds: only dead letters that failed before then."""

    @classmethod
    def of(
        cls,
        ids: Sequence[str] | None,
        *,
        channel: str | None = None,
        group: str | None = None,
        failed_before: float | None = None,
    ) -> Selection:
        return cls(
            None if ids is None else frozenset(ids),
            channel=channel,
            group=group,
            failed_before=failed_before,
        )

    def matches(self, dead: DeadLetter) -> bool:
        return (
            (self.ids is None or dead.id in self.ids)
            and (self.channel is None or dead.channel == self.channel)
            and (self.group is None or dead.group == self.group)
            and (self.failed_before is None or dead.failed_at < self.failed_before)
        )

    @property
    def empty(self) -> bool:
        """An explicit empty list of ids: nothing to do."""
        return self.ids is not None and not self.ids
