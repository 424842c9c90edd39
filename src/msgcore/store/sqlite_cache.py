"""The result cache's transactions on SQLite: what each ``SqliteStore.cache_*`` call and
the cache parts of ``start_attempt``/``finish_attempt`` do inside one write.

Every function here runs inside a transaction the caller opened (``Op``), so a claim, a
hit's completed record and the counters change together or not at all.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from msgcore.store import queries as q
from msgcore.store.base import JobRecord, JobStatus
from msgcore.store.cache import (
    CacheCheck,
    CacheClaim,
    CacheEntry,
    CacheFill,
    CacheStats,
    CacheSubmit,
    ClaimKind,
)
from msgcore.store.sqlite_rows import Op, job_from_row, job_row

__all__ = [
    "bump",
    "claim",
    "entry",
    "fill",
    "hit_record",
    "registered_version",
    "release",
    "stats",
    "submit",
]


def bump(sql: Op[Any], channel: str, **counts: int) -> None:
    params = {"channel": channel, "hits": 0, "misses": 0, "joined": 0, "entries": 0}
    params.update(counts)
    sql.change(q.BUMP_COUNTERS, params)


def entry(sql: Op[Any], key: str, now: float) -> CacheEntry | None:
    row = sql.row(q.CACHE_ENTRY, {"key": key, "now": now})
    if row is None:
        return None
    key, channel, result, created_at, expires_at, job_id = row
    return CacheEntry(
        key=key,
        channel=channel,
        result=None if result is None else bytes(result),
        created_at=created_at,
        expires_at=expires_at,
        job_id=job_id,
    )


def registered_version(sql: Op[Any], channel: str) -> str | None:
    row = sql.row(q.CACHE_POLICY, (channel,))
    if row is None or row[0] is None:
        return None
    version = json.loads(row[0]).get("version")
    return None if version is None else str(version)


def hit_record(
    sql: Op[Any], record: JobRecord, found: CacheEntry, *, now: float, retention: float | None
) -> JobRecord:
    """Insert ``record`` as completed with the cached result, in the completion feed."""
    done = record.evolve(
        status=JobStatus.COMPLETED,
        started_at=now,
        finished_at=now,
        result=found.result,
        has_result=True,
        cached=True,
        expires_at=None if retention is None else now + retention,
    )
    sql.change(q.INSERT_JOB, job_row(done))
    sql.change(q.SET_FEED_SEQ, (done.job_id,))
    sql.change(q.ADVANCE_FEED_SEQ)
    bump(sql, found.channel, hits=1)
    return done


def claim(sql: Op[Any], key: str, job_id: str, *, lease: float, now: float) -> None:
    sql.change(q.CLAIM_KEY, {"key": key, "job_id": job_id, "expires_at": now + lease})


def release(sql: Op[Any], key: str, job_id: str) -> None:
    sql.change(q.RELEASE_CLAIM, (key, job_id))


def submit(sql: Op[Any], items: Sequence[CacheSubmit], now: float) -> list[CacheClaim]:
    versions: dict[str, str | None] = {}
    out: list[CacheClaim] = []
    for item in items:
        r = item.record
        row = sql.row(q.GET_JOB, {"id": r.job_id, "now": now})
        if row is not None:
            out.append(CacheClaim(ClaimKind.EXISTS, job_from_row(row)))
            continue
        if r.channel not in versions:
            versions[r.channel] = registered_version(sql, r.channel)
        if versions[r.channel] != item.version:
            out.append(CacheClaim(ClaimKind.STALE, None))
            continue
        found = entry(sql, item.key, now)
        if found is not None:
            done = hit_record(sql, r, found, now=now, retention=item.retention)
            out.append(CacheClaim(ClaimKind.HIT, done))
            continue
        running = sql.row(q.INFLIGHT_JOB, {"key": item.key, "now": now})
        if running is not None:
            bump(sql, r.channel, joined=1)
            out.append(CacheClaim(ClaimKind.JOINED, job_from_row(running)))
            continue
        # An expired row of the same id (not purged yet) gives way.
        sql.change(q.INSERT_JOB, job_row(r))
        claim(sql, item.key, r.job_id, lease=item.lease, now=now)
        out.append(CacheClaim(ClaimKind.CLAIMED, r))
    return out


def fill(
    sql: Op[Any], target: CacheFill, result: bytes | None, *, job_id: str | None, now: float
) -> None:
    """Store a computed result (a miss), release the job's claim, keep the size cap."""
    new = sql.row(q.CACHE_ENTRY_EXISTS, (target.key,)) is None
    sql.change(
        q.PUT_ENTRY,
        {
            "key": target.key,
            "channel": target.channel,
            "result": result,
            "job_id": job_id,
            "now": now,
            "expires_at": None if target.ttl is None else now + target.ttl,
        },
    )
    bump(sql, target.channel, misses=1, entries=int(new))
    if job_id is not None:
        release(sql, target.key, job_id)
    if target.max_entries is not None and new:
        (count,) = sql.row(q.CACHE_ENTRY_COUNT, (target.channel,))
        excess = count - target.max_entries
        if excess > 0:
            evicted = sql.change(q.EVICT_OLDEST, {"channel": target.channel, "n": excess})
            bump(sql, target.channel, entries=-evicted)


def start_check(
    sql: Op[Any],
    check: CacheCheck,
    *,
    now: float,
) -> CacheEntry | None:
    """The entry a starting attempt may complete with (None: run the handler)."""
    return entry(sql, check.key, now) if check.read else None


def stats(sql: Op[Any], channel: str | None, now: float) -> list[CacheStats]:
    names = [channel] if channel is not None else [n for (n,) in sql.rows(q.CACHE_CHANNEL_NAMES)]
    out: list[CacheStats] = []
    for name in names:
        row = sql.row(q.CACHE_CHANNEL_ROW, (name,))
        policy, hits, misses, joined = row if row is not None else (None, 0, 0, 0)
        count, size = sql.row(q.CACHE_SIZE, {"channel": name, "now": now})
        version = json.loads(policy).get("version") if policy else None
        out.append(
            CacheStats(
                channel=name,
                hits=hits,
                misses=misses,
                joined=joined,
                entries=count,
                bytes=size,
                version=None if version is None else str(version),
            )
        )
    return out


def clear(sql: Op[Any], channel: str | None) -> int:
    if channel is None:
        deleted = sql.change(q.CLEAR_ALL_ENTRIES)
        sql.change(q.RESET_ALL_COUNTERS)
    else:
        deleted = sql.change(q.CLEAR_ENTRIES, (channel,))
        sql.change(q.RESET_COUNTERS, (channel,))
    return deleted


def purge(sql: Op[Any], now: float) -> int:
    channels = [c for (c,) in sql.rows(q.PURGE_ENTRIES, {"now": now})]
    per_channel: dict[str, int] = {}
    for c in channels:
        per_channel[c] = per_channel.get(c, 0) + 1
    for c, n in per_channel.items():
        sql.change(q.UNCOUNT_ENTRIES, (n, c))
    sql.change(q.PURGE_CLAIMS, {"now": now})
    return len(channels)
