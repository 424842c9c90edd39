"""The seam between the SQLite broker and its storage.

The broker, subscribers and producers speak only this interface; ``SqliteClient``
implements it on aiosqlite. Keeping it small (the verbs of a leased queue) lets
tests inject faults at one place and keeps SQL out of the FastStream classes.
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from .headers import decode_headers

if TYPE_CHECKING:
    from msgcore.sqlite.subscriber.settlement import Settlement

__all__ = [
    "Claim",
    "DeadLetter",
    "OutgoingMessage",
    "QueueTransport",
    "StoredMessage",
]


@dataclass(slots=True)
class OutgoingMessage:
    """One encoded message on its way into a queue."""

    queue: str
    body: bytes
    headers: dict[str, Any] | None
    content_type: str | None
    correlation_id: str | None
    message_id: str
    reply_to: str
    priority: int
    visible_at: float
    created_at: float
    expires_at: float | None = None


@dataclass(slots=True, eq=False)
class StoredMessage:
    """A row as a consumer received it: FastStream's raw message for this transport."""

    id: int
    queue: str
    group: str
    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    correlation_id: str | None
    message_id: str | None
    reply_to: str
    priority: int
    attempts: int
    created_at: float
    lease_token: str | None = None

    # Consumer-side state, never stored.
    settlement: Settlement | None = field(default=None, repr=False)
    """Who acks/nacks this row; ``None`` for rows with nothing to settle (tests, replies)."""
    error: BaseException | None = field(default=None, repr=False)
    """The exception the handler raised, recorded for nack and the dead-letter table."""
    outbox: list[OutgoingMessage] | None = field(default=None, repr=False)
    """Publishes made while handling this row; committed in the ack's transaction."""
    after_ack: list[Callable[[], None]] | None = field(default=None, repr=False)
    """Run once the ack committed (replies handed over in memory to a local requester)."""
    started: bool = False
    settled: bool = False


@dataclass(slots=True, frozen=True)
class Claim:
    messages: list[StoredMessage]
    next_due: float | None
    """When the earliest row not claimable now becomes claimable; known when drained."""
    drained: bool
    """Fewer rows than asked for were claimable: the queue was empty for this group."""


@dataclass(slots=True, frozen=True)
class DeadLetter:
    """A message that will not be retried, with why."""

    id: int
    queue: str
    group: str
    body: bytes
    headers: dict[str, Any]
    content_type: str | None
    correlation_id: str | None
    message_id: str | None
    reply_to: str
    priority: int
    attempts: int
    created_at: float
    failed_at: float
    reason: str
    error: str | None

    @classmethod
    def from_row(cls, r: Sequence[Any]) -> DeadLetter:
        """A row of the dead-letter queries (``LIST_DEAD_LETTERS`` and friends)."""
        return cls(
            id=r[0],
            queue=r[1],
            group=r[2],
            body=bytes(r[3]),
            headers=decode_headers(r[4]),
            content_type=r[5],
            correlation_id=r[6],
            message_id=r[7],
            reply_to=r[8],
            priority=r[9],
            attempts=r[10],
            created_at=r[11],
            failed_at=r[12],
            reason=r[13],
            error=r[14],
        )


class QueueTransport(ABC):
    """A durable queue with leases: the operations the SQLite broker needs."""

    @abstractmethod
    async def publish(self, messages: Sequence[OutgoingMessage]) -> None:
        """Store messages, fanned out to every group registered on their queue."""

    @abstractmethod
    async def register_group(self, queue: str, group: str) -> None: ...

    @abstractmethod
    async def claim(
        self,
        queue: str,
        group: str,
        *,
        limit: int,
        lease_seconds: float,
        worker_id: str,
    ) -> Claim:
        """Lease up to ``limit`` claimable rows, oldest first within priority."""

    @abstractmethod
    async def ack(self, row_id: int, token: str, outbox: Sequence[OutgoingMessage] = ()) -> bool:
        """Delete a row and store ``outbox`` atomically; False if the lease was lost."""

    def queue_ack(
        self, row_id: int, token: str, outbox: Sequence[OutgoingMessage] = ()
    ) -> asyncio.Future[bool]:
        """``ack`` started now, its result later. A transport with group commits queues
        it at once, so that writes queued just before it (a job's result) share its
        transaction."""
        return asyncio.ensure_future(self.ack(row_id, token, outbox))

    @abstractmethod
    async def nack(
        self, row_id: int, token: str, *, queue: str, retry_at: float, error: str | None
    ) -> bool:
        """Return a row for a later attempt; False if the lease was lost."""

    @abstractmethod
    async def dead_letter(self, row_id: int, token: str, *, reason: str, error: str | None) -> bool:
        """Move a row to the dead-letter table; False if the lease was lost."""

    @abstractmethod
    async def release(self, rows: Sequence[tuple[int, str]], *, queue: str, uncount: bool) -> int:
        """Hand leased rows back at once; ``uncount`` undoes the claim's attempt count."""

    @abstractmethod
    async def extend_leases(self, tokens: Sequence[str], lease_seconds: float) -> None: ...

    @abstractmethod
    async def take_replies(self, queue: str) -> list[StoredMessage]: ...

    @abstractmethod
    async def delete_queue(self, queue: str) -> None: ...

    @abstractmethod
    async def data_version(self) -> int:
        """A number that changes when another connection commits."""

    @abstractmethod
    async def dead_letters(
        self, queue: str | None = None, limit: int = 100
    ) -> list[DeadLetter]: ...

    @abstractmethod
    async def replay_dead_letter(self, dead_letter_id: int) -> bool: ...

    @abstractmethod
    async def depth(self, queue: str, group: str | None = None) -> int: ...

    @abstractmethod
    async def ping(self) -> bool: ...

    @abstractmethod
    async def close(self) -> None: ...
