"""The result cache as the store holds it: entries, in-flight claims, per-channel counters.

A *key* is the hex digest ``msgcore.cache.keys`` computes from a channel, its handler's
declared version and the canonical payload. The store keeps, per key, at most one
*entry* (the completed result, until its TTL) and at most one *in-flight claim* (the job
computing it, until its lease runs out), and per channel the registered policy and the
hit/miss/join counters ``msgcore cache stats`` shows.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from msgcore.store.base import JobRecord

__all__ = [
    "CacheCheck",
    "CacheClaim",
    "CacheEntry",
    "CacheFill",
    "CacheStats",
    "CacheSubmit",
    "ClaimKind",
]


@dataclass(frozen=True)
class CacheEntry:
    """A cached result."""

    key: str
    channel: str
    result: bytes | None
    """The handler's return value as JSON, as a job record keeps it."""
    created_at: float
    expires_at: float | None
    job_id: str | None
    """The job whose run filled the entry (None: a request or a plain publish)."""


@dataclass(frozen=True)
class CacheSubmit:
    """One cached submit: the job to create unless the key is filled or in flight."""

    key: str
    record: JobRecord
    version: str
    """The handler version the client keyed with: a store whose registered version
    differs answers ``STALE`` and the client reloads the policy."""
    lease: float
    """Seconds the claim holds before a worker starts the job (and refreshes it)."""
    retention: float | None
    """Retention of the completed record a hit creates."""


class ClaimKind(enum.StrEnum):
    """What a cached submit found."""

    EXISTS = "exists"
    """The job id exists already (idempotent submit): that job, nothing else done."""
    HIT = "hit"
    """The key is filled: a completed, ``cached`` record was created with the result."""
    JOINED = "joined"
    """Another job computes the key right now: that job's record (single-flight)."""
    CLAIMED = "claimed"
    """Nobody had the key: the record was created and holds the claim; publish it."""
    STALE = "stale"
    """The channel's registered version is not the one keyed with: nothing was done."""


@dataclass(frozen=True)
class CacheClaim:
    kind: ClaimKind
    record: JobRecord | None
    """The job to hand back (None only for ``STALE``)."""


@dataclass(frozen=True)
class CacheCheck:
    """What a worker passes to ``start_attempt`` for a handler with a cache."""

    key: str
    lease: float
    retention: float | None
    """Retention of the record a hit completes."""
    read: bool = True
    """False: the submitter bypassed the cache (run the handler, refill the entry)."""


@dataclass(frozen=True)
class CacheFill:
    """Where a completed attempt's result is cached."""

    key: str
    channel: str
    ttl: float | None
    max_entries: int | None
    """Entries kept for the channel; the oldest beyond it are evicted (None: no cap)."""


@dataclass(frozen=True)
class CacheStats:
    """One channel's cache as ``msgcore cache stats`` shows it."""

    channel: str
    hits: int
    """Results given without running the handler (at submit, or at the worker)."""
    misses: int
    """Handler runs whose result filled the cache."""
    joined: int
    """Submits that joined a job already computing their key."""
    entries: int
    bytes: int
    """Size of the cached results (JSON)."""
    version: str | None = None
    """The handler version the workers registered (None: no worker registered it)."""

    @property
    def hit_ratio(self) -> float:
        looked = self.hits + self.misses
        return self.hits / looked if looked else 0.0
