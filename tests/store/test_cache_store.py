"""The result cache's store contract: every test runs against SQLite and Redis."""

from __future__ import annotations

import asyncio
import json
import time

from msgcore.store import JobRecord, JobStatus, Store
from msgcore.store.base import AttemptOutcome
from msgcore.store.cache import CacheCheck, CacheFill, CacheSubmit, ClaimKind

from .conftest import OpenStore

CH = "render"
POLICY = json.dumps({"version": "1", "ttl": 60, "max_entries": None, "lease": 30, "key": None})


def req(key: str, job_id: str, *, version: str = "1", lease: float = 30.0) -> CacheSubmit:
    record = JobRecord(job_id=job_id, channel=CH, created_at=time.time())
    return CacheSubmit(key=key, record=record, version=version, lease=lease, retention=60.0)


def fill(key: str, *, ttl: float | None = 60.0, cap: int | None = None) -> CacheFill:
    return CacheFill(key=key, channel=CH, ttl=ttl, max_entries=cap)


async def complete(store: Store, job_id: str, key: str, result: bytes = b'"out"') -> bool:
    outcome = AttemptOutcome(
        status=JobStatus.COMPLETED,
        attempt=1,
        now=time.time(),
        retention=60.0,
        result=result,
        has_result=True,
        cache=fill(key),
    )
    return await store.finish_attempt(job_id, outcome)


async def start(store: Store, job_id: str, key: str, *, read: bool = True) -> JobRecord:
    return await store.start_attempt(
        job_id,
        channel=CH,
        attempt=1,
        worker_id="w1",
        now=time.time(),
        cache=CacheCheck(key=key, lease=30.0, retention=60.0, read=read),
    )


async def registered(store: Store) -> Store:
    await store.cache_register(CH, POLICY)
    return store


async def test_policy_round_trip(store: Store) -> None:
    assert await store.cache_policy(CH) is None
    await store.cache_register(CH, POLICY)
    assert await store.cache_policy(CH) == POLICY
    newer = POLICY.replace('"version":"1"', '"version":"2"').replace(
        '"version": "1"', '"version": "2"'
    )
    await store.cache_register(CH, newer)
    assert await store.cache_policy(CH) == newer
    [stats] = await store.cache_stats(channel=CH)
    assert stats.version == "2"


async def test_claim_then_join_then_hit(store: Store) -> None:
    await registered(store)
    [first] = await store.cache_submit([req("k1", "a")], now=time.time())
    assert first.kind is ClaimKind.CLAIMED
    assert first.record is not None and first.record.job_id == "a"
    assert first.record.status is JobStatus.PENDING

    [second] = await store.cache_submit([req("k1", "b")], now=time.time())
    assert second.kind is ClaimKind.JOINED
    assert second.record is not None and second.record.job_id == "a"
    assert await store.get_job("b") is None  # nothing queued for the duplicate

    running = await start(store, "a", "k1")
    assert running.status is JobStatus.RUNNING
    [third] = await store.cache_submit([req("k1", "c")], now=time.time())
    assert third.kind is ClaimKind.JOINED  # running jobs are joined too

    assert await complete(store, "a", "k1", b'{"png": 1}')
    position = await store.feed_position()
    [hit] = await store.cache_submit([req("k1", "d")], now=time.time())
    assert hit.kind is ClaimKind.HIT
    assert hit.record is not None
    assert (hit.record.job_id, hit.record.status, hit.record.cached) == (
        "d",
        JobStatus.COMPLETED,
        True,
    )
    assert hit.record.result == b'{"png": 1}'
    stored = await store.get_job("d")
    assert stored is not None and stored.cached and stored.result == b'{"png": 1}'
    # a hit is a terminal transition like any other: waiters see it on the feed
    _, events = await store.read_feed(position, timeout=1.0)
    assert [e.job_id for e in events] == ["d"]

    [stats] = await store.cache_stats(channel=CH)
    assert (stats.hits, stats.misses, stats.joined, stats.entries) == (1, 1, 2, 1)
    assert stats.bytes == len(b'{"png": 1}')
    assert stats.hit_ratio == 0.5


async def test_equal_keys_in_one_batch_are_queued_once(store: Store) -> None:
    await registered(store)
    claims = await store.cache_submit(
        [req("x", "1"), req("y", "2"), req("x", "3"), req("x", "4")], now=time.time()
    )
    assert [c.kind for c in claims] == [
        ClaimKind.CLAIMED,
        ClaimKind.CLAIMED,
        ClaimKind.JOINED,
        ClaimKind.JOINED,
    ]
    assert [c.record.job_id for c in claims if c.record] == ["1", "2", "1", "1"]


async def test_existing_job_id_wins_over_the_cache(store: Store) -> None:
    await registered(store)
    await store.cache_submit([req("k", "order-42")], now=time.time())
    [again] = await store.cache_submit([req("other-key", "order-42")], now=time.time())
    assert again.kind is ClaimKind.EXISTS
    assert again.record is not None and again.record.job_id == "order-42"


async def test_a_version_the_store_does_not_know_is_stale(store: Store) -> None:
    [unregistered] = await store.cache_submit([req("k", "a")], now=time.time())
    assert unregistered.kind is ClaimKind.STALE and unregistered.record is None
    await registered(store)
    [old] = await store.cache_submit([req("k", "a", version="0")], now=time.time())
    assert old.kind is ClaimKind.STALE
    assert await store.get_job("a") is None


async def test_failures_are_never_cached_and_free_the_key(store: Store) -> None:
    await registered(store)
    await store.cache_submit([req("k", "a")], now=time.time())
    await start(store, "a", "k")
    retry = AttemptOutcome(
        status=JobStatus.RETRYING, attempt=1, now=time.time(), retention=None, cache=fill("k")
    )
    assert await store.finish_attempt("a", retry)
    [joined] = await store.cache_submit([req("k", "b")], now=time.time())
    assert joined.kind is ClaimKind.JOINED  # it will be retried: still the one computing

    dead = AttemptOutcome(
        status=JobStatus.DEAD,
        attempt=2,
        now=time.time(),
        retention=60.0,
        error_type="Boom",
        cache=fill("k"),
    )
    assert await store.finish_attempt("a", dead)
    assert await store.cache_lookup("k", now=time.time()) is None
    [fresh] = await store.cache_submit([req("k", "c")], now=time.time())
    assert fresh.kind is ClaimKind.CLAIMED


async def test_a_claim_whose_lease_ran_out_is_taken_again(store: Store) -> None:
    await registered(store)
    await store.cache_submit([req("k", "a", lease=0.05)], now=time.time())
    await asyncio.sleep(0.1)
    [again] = await store.cache_submit([req("k", "b")], now=time.time())
    assert again.kind is ClaimKind.CLAIMED
    assert again.record is not None and again.record.job_id == "b"


async def test_extend_and_release_only_touch_the_holders_claim(store: Store) -> None:
    await registered(store)
    await store.cache_submit([req("k", "a", lease=0.2)], now=time.time())
    assert not await store.cache_extend("k", "someone-else", lease=30, now=time.time())
    assert await store.cache_extend("k", "a", lease=30, now=time.time())
    await asyncio.sleep(0.3)
    [joined] = await store.cache_submit([req("k", "b")], now=time.time())
    assert joined.kind is ClaimKind.JOINED  # extended beyond the first lease

    await store.cache_release([("k", "someone-else")])
    [still] = await store.cache_submit([req("k", "c")], now=time.time())
    assert still.kind is ClaimKind.JOINED
    await store.cache_release([("k", "a")])
    [free] = await store.cache_submit([req("k", "d")], now=time.time())
    assert free.kind is ClaimKind.CLAIMED


async def test_a_worker_completes_a_job_whose_key_was_filled_meanwhile(store: Store) -> None:
    await registered(store)
    await store.cache_fill(fill("k"), b"42", job_id=None, now=time.time())
    # queued before the fill (no claim), started after it
    await store.create_jobs([JobRecord(job_id="late", channel=CH, created_at=time.time())])
    position = await store.feed_position()
    record = await start(store, "late", "k")
    assert record.done and record.cached
    assert (record.status, record.result) == (JobStatus.COMPLETED, b"42")
    _, events = await store.read_feed(position, timeout=1.0)
    assert [(e.job_id, e.status) for e in events] == [("late", JobStatus.COMPLETED)]
    [stats] = await store.cache_stats(channel=CH)
    assert (stats.hits, stats.misses) == (1, 1)


async def test_a_bypassing_attempt_runs_and_takes_the_claim(store: Store) -> None:
    await registered(store)
    await store.cache_fill(fill("k"), b"old", job_id=None, now=time.time())
    record = await start(store, "forced", "k", read=False)
    assert record.status is JobStatus.RUNNING
    assert await complete(store, "forced", "k", b'"new"')
    found = await store.cache_lookup("k", now=time.time(), count=False)
    assert found is not None and found.result == b'"new"' and found.job_id == "forced"


async def test_a_worker_without_an_entry_claims_the_key(store: Store) -> None:
    await registered(store)
    await store.create_jobs([JobRecord(job_id="p", channel=CH, created_at=time.time())])
    assert (await start(store, "p", "k")).status is JobStatus.RUNNING
    [joined] = await store.cache_submit([req("k", "q")], now=time.time())
    assert joined.kind is ClaimKind.JOINED
    assert joined.record is not None and joined.record.job_id == "p"


async def test_lookup_counts_hits_only_when_asked(store: Store) -> None:
    assert await store.cache_lookup("nope", now=time.time()) is None
    await store.cache_fill(fill("k"), b"[1]", job_id=None, now=time.time())
    found = await store.cache_lookup("k", now=time.time(), count=False)
    assert found is not None
    assert (found.key, found.channel, found.result, found.job_id) == ("k", CH, b"[1]", None)
    assert found.expires_at is not None and found.expires_at > time.time()
    assert await store.cache_lookup("k", now=time.time())
    assert await store.cache_lookup("k", now=time.time())
    [stats] = await store.cache_stats(channel=CH)
    assert (stats.hits, stats.misses, stats.entries) == (2, 1, 1)


async def test_entries_expire_by_ttl(store: Store) -> None:
    await store.cache_fill(fill("short", ttl=0.05), b"1", job_id=None, now=time.time())
    await store.cache_fill(fill("forever", ttl=None), b"2", job_id=None, now=time.time())
    await asyncio.sleep(0.15)
    assert await store.cache_lookup("short", now=time.time()) is None
    kept = await store.cache_lookup("forever", now=time.time())
    assert kept is not None and kept.expires_at is None
    await store.purge_expired(now=time.time())
    [stats] = await store.cache_stats(channel=CH)
    assert stats.entries == 1


async def test_the_size_cap_evicts_the_oldest(store: Store) -> None:
    for i in range(8):
        await store.cache_fill(fill(f"k{i}", cap=5), b"x", job_id=None, now=time.time())
        await asyncio.sleep(0.002)  # distinct creation times
    [stats] = await store.cache_stats(channel=CH)
    assert stats.entries == 5
    for i in range(3):
        assert await store.cache_lookup(f"k{i}", now=time.time(), count=False) is None
    for i in range(3, 8):
        assert await store.cache_lookup(f"k{i}", now=time.time(), count=False) is not None
    # refilling an existing key does not evict anything
    await store.cache_fill(fill("k7", cap=5), b"y", job_id=None, now=time.time())
    assert (await store.cache_stats(channel=CH))[0].entries == 5


async def test_clear_one_channel_or_all(store: Store) -> None:
    await registered(store)
    await store.cache_fill(fill("a"), b"1", job_id=None, now=time.time())
    await store.cache_fill(fill("b"), b"22", job_id=None, now=time.time())
    other = CacheFill(key="c", channel="thumbs", ttl=None, max_entries=None)
    await store.cache_fill(other, b"333", job_id=None, now=time.time())
    await store.cache_lookup("a", now=time.time())
    everything = {s.channel: s for s in await store.cache_stats()}
    assert set(everything) == {CH, "thumbs"}
    assert (everything[CH].entries, everything[CH].bytes, everything[CH].hits) == (2, 3, 1)
    assert everything["thumbs"].version is None

    assert await store.cache_clear(channel=CH) == 2
    [cleared] = await store.cache_stats(channel=CH)
    assert (cleared.entries, cleared.hits, cleared.misses, cleared.joined) == (0, 0, 0, 0)
    assert cleared.version == "1"  # the workers' registration stays
    assert await store.cache_lookup("c", now=time.time(), count=False) is not None
    assert await store.cache_clear() == 1
    assert await store.cache_lookup("c", now=time.time(), count=False) is None


async def test_stats_of_an_unknown_channel_are_zero(store: Store) -> None:
    [stats] = await store.cache_stats(channel="never")
    assert (stats.channel, stats.hits, stats.entries, stats.bytes) == ("never", 0, 0, 0)
    assert await store.cache_stats() == []


async def test_a_second_connection_sees_the_same_cache(store: Store, open_store: OpenStore) -> None:
    other = await open_store()
    await registered(store)
    [claimed] = await store.cache_submit([req("k", "a")], now=time.time())
    assert claimed.kind is ClaimKind.CLAIMED
    [joined] = await other.cache_submit([req("k", "b")], now=time.time())
    assert joined.kind is ClaimKind.JOINED
    await start(other, "a", "k")
    await complete(other, "a", "k")
    [hit] = await store.cache_submit([req("k", "c")], now=time.time())
    assert hit.kind is ClaimKind.HIT
