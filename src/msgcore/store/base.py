"""The store seam: where job records, the completion feed and application state live.

Two backends implement :class:`Store` (``sqlite.py``, ``redis.py``); everything above
(workers, ``Client``, the CLI) talks to this interface only. Terminal transitions of
jobs are appended to an ordered *completion feed* in the same write as the record, so
a waiter reads "what finished since position P" in one query per wake-up instead of
polling each job.
"""

from __future__ import annotations

import asyncio
import enum
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self

if TYPE_CHECKING:
    from msgcore.store.cache import (
        CacheCheck,
        CacheClaim,
        CacheEntry,
        CacheFill,
        CacheStats,
        CacheSubmit,
    )
    from msgcore.store.locks import LockHolder

__all__ = [
    "TERMINAL",
    "AttemptOutcome",
    "FeedEvent",
    "JobRecord",
    "JobStatus",
    "Store",
]


class JobStatus(enum.StrEnum):
    """Where a job is in its life: ``pending → running → completed``, or after a failed
    attempt ``retrying`` (another attempt follows) or ``dead`` (it went to the dead
    letters: attempts exhausted, invalid payload, crash loop); ``cancelled`` only from
    ``pending``."""

    PENDING = "pending"
    RUNNING = "running"
    COMPLETED = "completed"
    RETRYING = "retrying"
    DEAD = "dead"
    CANCELLED = "cancelled"


TERMINAL: frozenset[JobStatus] = frozenset(
    {JobStatus.COMPLETED, JobStatus.DEAD, JobStatus.CANCELLED}
)
"""States a job never leaves (until its record expires)."""


@dataclass(frozen=True)
class JobRecord:
    """One job as the store holds it. Times are epoch seconds."""

    job_id: str
    channel: str
    status: JobStatus = JobStatus.PENDING
    attempts: int = 0
    worker_id: str | None = None
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    result: bytes | None = None
    """The handler's return value as JSON (``None``: no result yet, or it returned None
    and ``has_result`` is True)."""
    has_result: bool = False
    error_type: str | None = None
    error_message: str | None = None
    cached: bool = False
    expires_at: float | None = None
    """When the record is deleted (set once it is terminal, from the retention TTL)."""
    extra: Mapping[str, Any] = field(default_factory=dict)

    @property
    def done(self) -> bool:
        return self.status in TERMINAL

    def evolve(self, **changes: Any) -> JobRecord:
        """A copy with ``changes``: what ``dataclasses.replace`` makes, without the frozen
        ``__init__``'s call per field (~2 µs instead of ~10; a worker makes one per
        attempt)."""
        if not changes.keys() <= _FIELD_NAMES:
            unknown = ", ".join(sorted(changes.keys() - _FIELD_NAMES))
            raise TypeError(f"JobRecord has no field {unknown}")
        return record_of({**self.__dict__, **changes})


STATUS: dict[str, JobStatus] = {s.value: s for s in JobStatus}
"""Each status by its stored text (a dict lookup, cheaper than ``JobStatus(text)``)."""

_DEFAULTS = {f.name: f.default for f in fields(JobRecord) if f.default is not MISSING}
_FIELD_NAMES = frozenset(f.name for f in fields(JobRecord))
_new_record = object.__new__


def record_of(fields: dict[str, Any]) -> JobRecord:
    """The record whose fields are ``fields``, which must name every field: taken as the
    record's ``__dict__``, for a store's row reader (half the time of ``new_record``)."""
    record: JobRecord = _new_record(JobRecord)
    object.__setattr__(record, "__dict__", fields)
    return record


def new_record(job_id: str, channel: str, **values: Any) -> JobRecord:
    """``JobRecord(job_id, channel, **values)``, filled in place: the frozen dataclass's
    ``__init__`` makes one ``object.__setattr__`` call per field, five times the time,
    and the stores build a record per job they read. tests/store pins the two to the
    same result."""
    record: JobRecord = _new_record(JobRecord)
    filled = record.__dict__
    filled.update(_DEFAULTS, job_id=job_id, channel=channel, extra={})
    filled.update(values)
    return record


@dataclass(frozen=True)
class AttemptOutcome:
    """How one attempt of a job ended, as ``finish_attempt`` records it."""

    status: JobStatus
    attempt: int
    now: float
    retention: float | None
    """Seconds a terminal record is kept (None: for ever); ignored for ``retrying``."""
    result: bytes | None = None
    has_result: bool = False
    error_type: str | None = None
    error_message: str | None = None
    cached: bool = False
    cache: CacheFill | None = None
    """The handler caches its results: a completed attempt fills this entry (and
    releases the key's in-flight claim); a dead one releases the claim only."""

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


_OUTCOME_DEFAULTS = {f.name: f.default for f in fields(AttemptOutcome) if f.default is not MISSING}


def completed_outcome(
    attempt: int, now: float, retention: float | None, result: bytes | None, cache: CacheFill | None
) -> AttemptOutcome:
    """``AttemptOutcome(COMPLETED, attempt, now, retention, result=result,
    has_result=True, cache=cache)``, filled in place: the frozen ``__init__`` sets each
    of the ten fields through ``object.__setattr__`` (~1.4 µs against ~0.4 here, on
    every successful job). tests/store pins the two to the same result."""
    outcome: AttemptOutcome = _new_record(AttemptOutcome)
    filled = outcome.__dict__
    filled.update(
        _OUTCOME_DEFAULTS,
        status=JobStatus.COMPLETED,
        attempt=attempt,
        now=now,
        retention=retention,
        result=result,
        has_result=True,
        cache=cache,
    )
    return outcome


@dataclass(frozen=True)
class FeedEvent:
    """A terminal transition, as the completion feed reports it."""

    job_id: str
    status: JobStatus


class Store(ABC):
    """Job records, the completion feed and a small key/value + hash state API.

    Backends are opened with ``await store.open()`` or ``async with store:`` and are
    safe to share between tasks of one event loop.
    """

    url: str
    """Where the store lives (redacted when printed)."""

    # -- lifecycle -----------------------------------------------------------------------

    @abstractmethod
    async def open(self) -> None: ...

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    # -- jobs ----------------------------------------------------------------------------

    @abstractmethod
    async def create_jobs(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        """Insert each record unless its ``job_id`` exists (idempotent submit).

        Returns, in order, the stored record and whether this call created it.
        """

    @abstractmethod
    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        """The records that exist among ``job_ids`` (batched: one round trip per chunk)."""

    async def create_jobs_publishing(
        self,
        records: Sequence[JobRecord],
        publish: Callable[[], Awaitable[None]],
        *,
        fresh: bool = False,
    ) -> list[tuple[JobRecord, bool]] | None:
        """``create_jobs`` and the messages ``publish()`` sends, in one transaction: only
        the messages of records this call created are kept (each carries its job id in
        the ``x-msgcore-job-id`` header). ``fresh``: the ids were generated for this
        call, no record can hold them (a store may skip looking).

        None: this store cannot (it does not share the transport's writer); create the
        records, then publish.
        """
        return None

    @abstractmethod
    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        """Delete job records whatever their state (a submit whose publish failed)."""

    async def get_job(self, job_id: str) -> JobRecord | None:
        return (await self.get_jobs([job_id])).get(job_id)

    @abstractmethod
    async def start_attempt(
        self,
        job_id: str,
        *,
        channel: str,
        attempt: int,
        worker_id: str,
        now: float,
        cache: CacheCheck | None = None,
    ) -> JobRecord:
        """Mark the job ``running`` for ``attempt`` unless it is terminal already.

        A job that does not exist yet (published without ``Client``) is created. The
        returned record says whether to run the handler: a terminal one (cancelled, or
        completed by an earlier delivery) must be acknowledged without running it.

        ``cache``: the handler caches its results. A filled key completes the job right
        here with the cached result (``cached=True``, a hit); otherwise the job takes
        the key's in-flight claim for ``cache.lease`` seconds.
        """

    @abstractmethod
    async def finish_attempt(
        self, job_id: str, outcome: AttemptOutcome, *, alone: bool = False
    ) -> bool:
        """Record how ``attempt`` ended; terminal states go to the feed in the same write.

        Refused (False) when the job is terminal already, so a late duplicate cannot
        overwrite the one completed record. ``alone``: no other attempt is running in
        this process, so a store that commits concurrent writes together may commit
        this one at once instead of waiting for company.
        """

    @property
    def shares_transport_writer(self) -> bool:
        """True when the store writes through the transport's own connection (SQLite
        store on the SQLite transport's file): ``queue_finish_attempt`` then commits with
        the ack."""
        return False

    def queue_finish_attempt(
        self, job_id: str, outcome: AttemptOutcome
    ) -> asyncio.Future[bool] | None:
        """Queue ``finish_attempt`` into the transport's next commit without waiting.

        Everything the transport queues later (the message's ack) commits in the same
        transaction or a later one, so the record is never behind the ack. None: this
        store has no shared writer; call ``finish_attempt``.
        """
        return None

    @abstractmethod
    async def cancel_job(self, job_id: str, *, now: float, retention: float | None) -> bool:
        """Cancel a job that no worker has started; False otherwise. A store on the
        transport (SQLite file, Redis server) also deletes the job's message, and refuses
        once a worker has claimed it (workers run such a message's first delivery without
        reading the record)."""

    @abstractmethod
    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        channel: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        """Newest first."""

    @abstractmethod
    async def count_jobs(self, *, channel: str | None = None) -> dict[JobStatus, int]: ...

    # -- result cache --------------------------------------------------------------------
    # (types in msgcore.store.cache; keys from msgcore.cache.keys)

    @abstractmethod
    async def cache_register(self, channel: str, policy: str) -> None:
        """Publish ``channel``'s cache policy (JSON) for clients; workers do it at start."""

    @abstractmethod
    async def cache_policy(self, channel: str) -> str | None:
        """The policy a worker registered for ``channel`` (None: the channel has none)."""

    @abstractmethod
    async def cache_submit(self, items: Sequence[CacheSubmit], *, now: float) -> list[CacheClaim]:
        """For each item, atomically: the existing job of its id, or a hit (a completed
        cached record is created), or the job computing its key (joined), or a new
        pending record holding the key's claim. Items of one call see each other (two
        equal keys: the second joins the first)."""

    @abstractmethod
    async def cache_lookup(self, key: str, *, now: float, count: bool = True) -> CacheEntry | None:
        """The live entry of ``key``; ``count``: a found entry counts as a hit."""

    @abstractmethod
    async def cache_fill(
        self, fill: CacheFill, result: bytes, *, job_id: str | None, now: float
    ) -> None:
        """Cache ``result`` under ``fill.key`` (a miss; requests and plain publishes)."""

    @abstractmethod
    async def cache_extend(self, key: str, job_id: str, *, lease: float, now: float) -> bool:
        """Keep ``job_id``'s in-flight claim on ``key`` for ``lease`` more seconds."""

    @abstractmethod
    async def cache_release(self, claims: Sequence[tuple[str, str]]) -> None:
        """Drop in-flight claims ``(key, job_id)`` (a submit whose publish failed)."""

    @abstractmethod
    async def cache_stats(self, *, channel: str | None = None) -> list[CacheStats]:
        """Per channel (every channel with a policy, entries or counters)."""

    @abstractmethod
    async def cache_clear(self, *, channel: str | None = None) -> int:
        """Delete the entries (of ``channel``) and zero its counters; how many entries.

        The registered policy and in-flight claims stay: a claim belongs to a job that
        is still queued or running, and dropping it would let a duplicate run."""

    # -- per-key locks -------------------------------------------------------------------
    # (types in msgcore.store.locks; the waiting and refreshing in msgcore.locks)

    @abstractmethod
    async def lock_acquire(
        self, key: str, token: str, *, holder: str, lease: float, now: float
    ) -> LockHolder | None:
        """Take ``key`` for ``token`` until ``now + lease`` if it is free (or its lease
        ran out, or ``token`` holds it already). None: taken; else who holds it."""

    @abstractmethod
    async def lock_extend(self, key: str, token: str, *, lease: float, now: float) -> bool:
        """Hold ``key`` until ``now + lease`` more; False if ``token`` no longer holds it."""

    @abstractmethod
    async def lock_release(self, key: str, token: str) -> bool:
        """Free ``key`` if ``token`` holds it; False otherwise (it ran out, or never held)."""

    def queue_lock_release(self, key: str, token: str) -> asyncio.Future[bool] | None:
        """Queue ``lock_release`` into the transport's next commit without waiting, as
        ``queue_finish_attempt`` does: a worker's key is then freed in the transaction
        of its message's ack (or an earlier one), never after it. None: this store has
        no shared writer; call ``lock_release``."""
        return None

    @abstractmethod
    async def list_locks(self, *, now: float, prefix: str = "") -> list[LockHolder]:
        """The held locks whose key starts with ``prefix``, by key."""

    # -- subscriber registry -------------------------------------------------------------
    # Not abstract: a store that keeps no registry simply knows of no subscribers.

    async def register_subscribers(self, entries: Sequence[tuple[str, str]]) -> None:
        """Record that a worker declares these ``(channel, group)`` subscribers, now.

        Idempotent: a pair registered again only has its last-seen time updated. Workers
        call it at start; tools that cannot list a transport's queues (``msgcore.ops`` on
        RabbitMQ) read the pairs back with ``registered_subscribers``.
        """
        return None

    async def registered_subscribers(self) -> list[tuple[str, str]]:
        """Every ``(channel, group)`` a worker ever registered, sorted."""
        return []

    # -- completion feed -----------------------------------------------------------------

    @abstractmethod
    async def feed_position(self) -> str:
        """The feed's current end: events after it are what finishes from now on."""

    @abstractmethod
    async def read_feed(self, position: str, *, timeout: float) -> tuple[str, list[FeedEvent]]:
        """Events after ``position``; waits up to ``timeout`` seconds for the first one."""

    # -- application state ---------------------------------------------------------------

    @abstractmethod
    async def get(self, key: str) -> str | None: ...

    @abstractmethod
    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None: ...

    @abstractmethod
    async def delete(self, *keys: str) -> int:
        """Delete keys (plain or hash); how many existed."""

    @abstractmethod
    async def hset(self, key: str, mapping: Mapping[str, str], *, ttl: float | None = None) -> None:
        """Set fields of a hash; ``ttl`` (re)sets the whole hash's expiry."""

    @abstractmethod
    async def hgetall(self, key: str) -> dict[str, str]: ...

    @abstractmethod
    async def expire(self, key: str, ttl: float) -> bool:
        """Expire ``key`` in ``ttl`` seconds; False if it does not exist."""

    # -- housekeeping --------------------------------------------------------------------

    @abstractmethod
    async def purge_expired(self, *, now: float) -> int:
        """Delete expired job records and keys now; how many. (Redis expires by itself.)"""

    # -- metrics for tests and benchmarks -------------------------------------------------

    queries: int = 0
    """Round trips this store object made (statements on SQLite, commands on Redis)."""
