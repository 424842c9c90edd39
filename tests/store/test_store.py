"""The store contract: every test runs against ``SqliteStore`` and ``RedisStore``."""

from __future__ import annotations

import asyncio
import math
import time
from typing import Any

import pytest

from msgcore.exceptions import ConfigurationError, PayloadError, StorageError
from msgcore.store import FeedEvent, JobRecord, JobStatus, Store
from msgcore.store.base import AttemptOutcome
from msgcore.store.redis import RedisStore

from .conftest import OpenStore

DONE = JobStatus.COMPLETED


def job(job_id: str, channel: str = "emails", **kw: Any) -> JobRecord:
    return JobRecord(
        job_id=job_id, channel=channel, created_at=kw.pop("created_at", time.time()), **kw
    )


async def start(store: Store, job_id: str, attempt: int = 1, channel: str = "emails") -> JobRecord:
    return await store.start_attempt(
        job_id, channel=channel, attempt=attempt, worker_id="w1", now=time.time()
    )


async def finish(
    store: Store, job_id: str, status: JobStatus = DONE, *, attempt: int = 1, **kw: Any
) -> bool:
    kw.setdefault("retention", 60.0)
    outcome = AttemptOutcome(status=status, attempt=attempt, now=time.time(), **kw)
    return await store.finish_attempt(job_id, outcome)


# -- create / get --------------------------------------------------------------------------


async def test_create_is_idempotent(store: Store) -> None:
    first = job("j1", extra={"user": 7})
    [(stored, created)] = await store.create_jobs([first])
    assert (stored, created) == (first, True)

    [(again, created)] = await store.create_jobs([job("j1", channel="other")])
    assert created is False
    assert again == first  # the stored record, not the second submit's
    assert await store.get_job("j1") == first


async def test_same_id_twice_in_one_batch_is_created_once(store: Store) -> None:
    a, b = job("dup", channel="a"), job("dup", channel="b")
    assert await store.create_jobs([a, b]) == [(a, True), (a, False)]


async def test_batch_create_of_2000_records(store: Store) -> None:
    records = [job(f"b{i}", created_at=1000.0 + i) for i in range(2000)]
    result = await store.create_jobs(records)
    assert result == [(r, True) for r in records]
    again = await store.create_jobs([*records[1990:], job("new")])
    assert [created for _, created in again] == [False] * 10 + [True]
    assert (await store.count_jobs())[JobStatus.PENDING] == 2001


async def test_get_jobs_batches_thousands_of_ids(store: Store) -> None:
    await store.create_jobs([job(f"g{i}") for i in range(2000)])
    ids = [f"g{i}" for i in range(3000)]  # a third of them do not exist
    before = store.queries
    found = await store.get_jobs(ids)
    assert set(found) == {f"g{i}" for i in range(2000)}
    assert found["g1234"].job_id == "g1234"
    # chunked: more than one round trip, far fewer than one per id
    assert 2 <= store.queries - before <= 12
    assert await store.get_jobs([]) == {}
    assert await store.get_job("missing") is None


# -- attempts ------------------------------------------------------------------------------


async def test_start_then_complete_with_result(store: Store) -> None:
    await store.create_jobs([job("j")])
    running = await start(store, "j")
    assert running.status is JobStatus.RUNNING
    assert (running.attempts, running.worker_id) == (1, "w1")
    assert running.started_at is not None

    assert await finish(store, "j", result=b'{"ok": true}', has_result=True, cached=True)
    record = await store.get_job("j")
    assert record is not None
    assert record.status is DONE and record.done
    assert (record.result, record.has_result, record.cached) == (b'{"ok": true}', True, True)
    assert record.finished_at is not None and record.expires_at is not None
    assert record.expires_at == pytest.approx(record.finished_at + 60.0)
    assert record.channel == "emails"


async def test_finish_is_refused_once_terminal(store: Store) -> None:
    await start(store, "j")
    assert await finish(store, "j", result=b"1", has_result=True)
    assert not await finish(store, "j", JobStatus.DEAD, error_type="Late")
    assert not await finish(store, "j", result=b"2", has_result=True)
    record = await store.get_job("j")
    assert record is not None
    assert (record.status, record.result, record.error_type) == (DONE, b"1", None)


async def test_retrying_keeps_error_and_attempts_then_dead(store: Store) -> None:
    await start(store, "j")
    position = await store.feed_position()
    assert await finish(
        store, "j", JobStatus.RETRYING, error_type="ValueError", error_message="bad"
    )
    record = await store.get_job("j")
    assert record is not None
    assert (record.status, record.attempts) == (JobStatus.RETRYING, 1)
    assert (record.error_type, record.error_message) == ("ValueError", "bad")
    assert record.finished_at is None and record.expires_at is None
    assert await store.read_feed(position, timeout=0) == (position, [])  # not terminal

    second = await start(store, "j", attempt=2)
    assert (second.status, second.attempts, second.error_type) == (
        JobStatus.RUNNING,
        2,
        "ValueError",
    )
    assert await finish(
        store, "j", JobStatus.DEAD, attempt=2, error_type="KeyError", error_message="x"
    )
    dead = await store.get_job("j")
    assert dead is not None and dead.done
    assert (dead.status, dead.attempts, dead.error_type) == (JobStatus.DEAD, 2, "KeyError")


async def test_an_attempt_that_ends_at_once_keeps_its_start(store: Store) -> None:
    """A short handler's result is written before (SQLite: with) its start: the
    record still names the worker and the start time."""
    [(created, _)] = await store.create_jobs([job("quick")])
    started = await start(store, "quick", channel="emails")
    assert (started.status, started.attempts, started.created_at) == (
        JobStatus.RUNNING,
        1,
        created.created_at,
    )
    assert await finish(store, "quick", result=b"7", has_result=True)
    record = await store.get_job("quick")
    assert record is not None
    assert (record.status, record.result, record.worker_id) == (DONE, b"7", "w1")
    assert record.started_at is not None and record.started_at >= created.created_at
    assert record.channel == "emails"


async def test_a_job_cancelled_before_its_start_is_not_started(store: Store) -> None:
    await store.create_jobs([job("stop")])
    assert await store.cancel_job("stop", now=time.time(), retention=60.0)
    refused = await start(store, "stop")
    assert refused.status is JobStatus.CANCELLED
    assert not await finish(store, "stop", result=b"1", has_result=True)
    record = await store.get_job("stop")
    assert record is not None and record.status is JobStatus.CANCELLED


async def test_finish_of_an_unknown_job_creates_it(store: Store) -> None:
    assert await finish(store, "ghost", result=b"null", has_result=True)
    record = await store.get_job("ghost")
    assert record is not None
    assert (record.status, record.has_result, record.result) == (DONE, True, b"null")


async def test_start_attempt_of_an_unknown_id_creates_it(store: Store) -> None:
    record = await start(store, "fresh", channel="imports")
    assert (record.job_id, record.channel, record.status) == ("fresh", "imports", "running")
    assert record.created_at > 0
    assert await store.get_job("fresh") == record


async def test_cancel_only_from_pending(store: Store) -> None:
    await store.create_jobs([job("p"), job("r")])
    await start(store, "r")
    now = time.time()
    assert await store.cancel_job("p", now=now, retention=60)
    assert not await store.cancel_job("p", now=now, retention=60)  # cancelled already
    assert not await store.cancel_job("r", now=now, retention=60)  # running
    assert not await store.cancel_job("nobody", now=now, retention=60)
    cancelled = await store.get_job("p")
    assert cancelled is not None
    assert (cancelled.status, cancelled.finished_at) == (JobStatus.CANCELLED, now)
    assert not await finish(store, "p")


async def test_a_cancel_right_after_the_start_is_refused(store: Store) -> None:
    """A start whose write this store object has not committed yet still counts: the
    cancel that follows it is refused (SQLite writes the start at the next loop turn)."""
    await store.create_jobs([job("r")])
    await start(store, "r")
    assert not await store.cancel_job("r", now=time.time(), retention=60)
    record = await store.get_job("r")
    assert record is not None and record.status is JobStatus.RUNNING


async def test_start_attempt_of_a_cancelled_job_returns_it_unchanged(store: Store) -> None:
    await store.create_jobs([job("c")])
    assert await store.cancel_job("c", now=time.time(), retention=None)
    record = await start(store, "c")
    assert record.status is JobStatus.CANCELLED and record.done
    assert (record.attempts, record.worker_id, record.started_at) == (0, None, None)
    assert await store.get_job("c") == record


async def test_delete_jobs(store: Store) -> None:
    await store.create_jobs([job("d1"), job("d2")])
    assert await store.delete_jobs(["d1", "d2", "d3"]) == 2  # type: ignore[attr-defined]
    assert await store.get_jobs(["d1", "d2"]) == {}


# -- completion feed -----------------------------------------------------------------------


async def test_feed_reports_terminal_transitions_in_order(store: Store) -> None:
    await store.create_jobs([job("a"), job("b"), job("c")])
    position = await store.feed_position()
    assert await finish(store, "b")
    assert await finish(store, "a", JobStatus.DEAD)
    assert await store.cancel_job("c", now=time.time(), retention=60)

    new_position, events = await store.read_feed(position, timeout=1)
    assert events == [
        FeedEvent("b", DONE),
        FeedEvent("a", JobStatus.DEAD),
        FeedEvent("c", JobStatus.CANCELLED),
    ]
    assert new_position != position
    assert await store.feed_position() == new_position
    assert await store.read_feed(new_position, timeout=0.05) == (new_position, [])


async def test_read_feed_times_out_empty(store: Store) -> None:
    position = await store.feed_position()
    started = time.monotonic()
    assert await store.read_feed(position, timeout=0.2) == (position, [])
    assert 0.15 <= time.monotonic() - started < 1.0


async def test_own_write_wakes_a_waiting_reader(store: Store) -> None:
    position = await store.feed_position()
    reader = asyncio.create_task(store.read_feed(position, timeout=5))
    await asyncio.sleep(0.1)  # the reader is waiting
    started = time.monotonic()
    assert await finish(store, "x")
    _, events = await asyncio.wait_for(reader, 2)
    assert events == [FeedEvent("x", DONE)]
    assert time.monotonic() - started < 0.5


async def test_write_from_another_connection_wakes_a_waiting_reader(
    store: Store, open_store: OpenStore
) -> None:
    other = await open_store()
    position = await store.feed_position()
    reader = asyncio.create_task(store.read_feed(position, timeout=5))
    await asyncio.sleep(0.3)  # long enough for the reader's polling to back off
    started = time.monotonic()
    assert await finish(other, "y", JobStatus.DEAD)
    _, events = await asyncio.wait_for(reader, 2)
    assert events == [FeedEvent("y", JobStatus.DEAD)]
    assert time.monotonic() - started < 0.5


# -- retention -----------------------------------------------------------------------------


async def test_finished_job_expires_after_its_retention(store: Store) -> None:
    await store.create_jobs([job("short"), job("kept")])
    assert await finish(store, "short", retention=0.2)
    assert await finish(store, "kept", retention=None)
    assert await store.get_job("short") is not None
    await asyncio.sleep(0.35)
    assert await store.get_job("short") is None  # gone before any purge
    assert [r.job_id for r in await store.list_jobs()] == ["kept"]
    assert (await store.count_jobs())[DONE] == 1
    purged = await store.purge_expired(now=time.time())
    assert purged == (0 if isinstance(store, RedisStore) else 1)
    assert await store.get_jobs(["short", "kept"]) == {"kept": await store.get_job("kept")}
    kept = await store.get_job("kept")
    assert kept is not None and kept.expires_at is None


async def test_an_expired_job_id_can_be_used_again(store: Store) -> None:
    assert await finish(store, "again", retention=0.05)
    await asyncio.sleep(0.1)
    [(record, created)] = await store.create_jobs([job("again")])
    assert created and record.status is JobStatus.PENDING
    assert (await start(store, "again")).status is JobStatus.RUNNING


# -- listing -------------------------------------------------------------------------------


async def test_list_jobs_filters_newest_first(store: Store) -> None:
    t = time.time()
    await store.create_jobs(
        [
            job("old", "a", created_at=t - 30),
            job("mid", "b", created_at=t - 20),
            job("new", "a", created_at=t - 10),
        ]
    )
    await start(store, "mid")
    await start(store, "new")
    assert [r.job_id for r in await store.list_jobs()] == ["new", "mid", "old"]
    assert [r.job_id for r in await store.list_jobs(limit=2)] == ["new", "mid"]
    assert [r.job_id for r in await store.list_jobs(channel="a")] == ["new", "old"]
    running = await store.list_jobs(status=JobStatus.RUNNING)
    assert [r.job_id for r in running] == ["new", "mid"]
    both = await store.list_jobs(status=JobStatus.RUNNING, channel="a")
    assert [r.job_id for r in both] == ["new"]
    assert await store.list_jobs(channel="none") == []


async def test_count_jobs(store: Store) -> None:
    await store.create_jobs([job(f"a{i}", "a") for i in range(3)] + [job("b0", "b")])
    await start(store, "a0")
    assert await finish(store, "a1")
    counts = await store.count_jobs()
    assert counts == {
        JobStatus.PENDING: 2,
        JobStatus.RUNNING: 1,
        JobStatus.COMPLETED: 1,
        JobStatus.RETRYING: 0,
        JobStatus.DEAD: 0,
        JobStatus.CANCELLED: 0,
    }
    by_channel = await store.count_jobs(channel="a")
    assert (by_channel[JobStatus.PENDING], by_channel[JobStatus.RUNNING]) == (1, 1)


# -- application state ---------------------------------------------------------------------


async def test_kv_get_set_delete(store: Store) -> None:
    assert await store.get("k") is None
    await store.set("k", "v1")
    await store.set("k", "v2")
    assert await store.get("k") == "v2"
    await store.set("other", "x")
    assert await store.delete("k", "other", "missing") == 2
    assert await store.get("k") is None
    assert await store.delete() == 0


async def test_kv_ttl_and_expire(store: Store) -> None:
    await store.set("short", "1", ttl=0.1)
    await store.set("kept", "1", ttl=0.1)
    await store.set("kept", "2")  # ttl=None clears the earlier TTL
    await store.set("later", "1")
    assert await store.expire("later", 0.1)
    assert not await store.expire("missing", 1)
    assert await store.get("short") == "1"
    await asyncio.sleep(0.2)
    assert await store.get("short") is None
    assert await store.get("later") is None
    assert await store.get("kept") == "2"
    assert not await store.expire("short", 10)  # expired keys do not exist
    assert await store.delete("short") == 0
    await store.purge_expired(now=time.time())
    assert await store.get("kept") == "2"


async def test_hash_set_get_ttl_delete(store: Store) -> None:
    assert await store.hgetall("h") == {}
    await store.hset("h", {"a": "1", "b": "2"})
    await store.hset("h", {"b": "3", "c": "4"})
    assert await store.hgetall("h") == {"a": "1", "b": "3", "c": "4"}

    await store.hset("t", {"x": "1"}, ttl=0.1)
    await store.hset("t", {"y": "2"})  # keeps the hash's expiry, as Redis HSET does
    await store.hset("e", {"x": "1"})
    assert await store.expire("e", 0.1)
    await asyncio.sleep(0.2)
    assert await store.hgetall("t") == {}
    assert await store.hgetall("e") == {}
    await store.hset("t", {"z": "3"})  # a new hash: nothing of the expired one is back
    assert await store.hgetall("t") == {"z": "3"}

    assert await store.delete("h", "t", "e") == 2
    assert await store.hgetall("h") == {}
    await store.set("h", "plain")  # a string replaces a hash
    assert await store.get("h") == "plain"


async def test_state_arguments_are_checked_the_same_way_on_both_backends(store: Store) -> None:
    """Each bad argument is refused before anything is written, with the same msgcore
    error on SQLite and Redis (SQLite stored None as 'None' and bytes as "b'x'", Redis
    turned a None key into 'None', a NaN ttl never expired on SQLite)."""
    bad: list[tuple[Any, type[Exception], str]] = [
        (store.set("k", None), PayloadError, "must be a str"),  # type: ignore[arg-type]
        (store.set("k", b"x"), PayloadError, "got bytes"),  # type: ignore[arg-type]
        (store.set("k", True), PayloadError, "got bool"),  # type: ignore[arg-type]
        (store.set("k", "\ud800"), PayloadError, "unpaired surrogate"),
        (store.set(None, "v"), PayloadError, "key must be a str"),  # type: ignore[arg-type]
        (store.set("k", "v", ttl=math.nan), ConfigurationError, "ttl=nan"),
        (store.set("k", "v", ttl=math.inf), ConfigurationError, "ttl=inf"),
        (store.set("k", "v", ttl=0), ConfigurationError, "above 0"),
        (store.set("k", "v", ttl=1e20), ConfigurationError, "at most 100 years"),
        (store.set("k", "v", ttl="60"), ConfigurationError, "ttl=str"),  # type: ignore[arg-type]
        (store.hset("h", [("a", "b")]), PayloadError, "mapping"),  # type: ignore[arg-type]
        (store.hset("h", {"a": None}), PayloadError, "field 'a'"),  # type: ignore[dict-item]
        (store.hset("h", {1: "b"}), PayloadError, "fields of hash"),  # type: ignore[dict-item]
        (store.expire("k", None), ConfigurationError, "ttl=None"),  # type: ignore[arg-type]
        (store.delete("k", None), PayloadError, "key must be a str"),  # type: ignore[arg-type]
    ]
    for call, error, match in bad:
        with pytest.raises(error, match=match):
            await call
    assert await store.get("k") is None
    assert await store.hgetall("h") == {}
    await store.set("n", 5)  # type: ignore[arg-type]
    await store.hset("h", {"f": 1.5})  # type: ignore[dict-item]
    assert (await store.get("n"), await store.hgetall("h")) == ("5", {"f": "1.5"})


async def test_a_key_used_as_the_other_kind_is_refused_the_same_way(store: Store) -> None:
    await store.set("plain", "v")
    await store.hset("hash", {"f": "v"})
    with pytest.raises(StorageError, match="holds a value, not a hash"):
        await store.hset("plain", {"f": "v"})
    with pytest.raises(StorageError, match="holds a value, not a hash"):
        await store.hgetall("plain")
    with pytest.raises(StorageError, match="holds a hash, not a value"):
        await store.get("hash")
    assert await store.get("plain") == "v"  # the refused hset changed nothing
    await store.set("hash", "now plain")  # set replaces a hash, as Redis SET does
    assert await store.get("hash") == "now plain"


async def test_a_bad_state_write_fails_alone(store: Store) -> None:
    """On SQLite a state write shares the group commit with others: the one that fails
    must not take the others down with it (it did, with its own binding error)."""
    results = await asyncio.gather(
        store.set("a", "1"),
        store.hset("plain-then-hash", {"f": "v"}),
        store.hset("b", {"f": "2"}),
        return_exceptions=True,
    )
    assert results == [None, None, None]
    await store.set("c", "3")
    results = await asyncio.gather(
        store.set("d", "4"),
        store.hset("c", {"f": "v"}),  # refused: c holds a value
        store.set("e", "5"),
        return_exceptions=True,
    )
    assert results[0] is None and results[2] is None
    assert isinstance(results[1], StorageError)
    assert [await store.get(k) for k in "acde"] == ["1", "3", "4", "5"]
    assert await store.hgetall("b") == {"f": "2"}


# -- metrics and errors --------------------------------------------------------------------


async def test_queries_are_counted(store: Store) -> None:
    before = store.queries
    await store.create_jobs([job("q")])
    await start(store, "q")
    await finish(store, "q")
    await store.get_job("q")
    await store.set("k", "v")
    assert store.queries - before >= 5


@pytest.mark.parametrize(
    "url", ["redis://127.0.0.1:1/0", "redis://u:secret@127.0.0.1:1/0"], ids=["plain", "auth"]
)
async def test_unreachable_redis_raises_storage_error(url: str) -> None:
    store = RedisStore(url)
    with pytest.raises(StorageError) as info:
        await store.open()
    message = str(info.value)
    assert "127.0.0.1:1" in message
    assert "secret" not in message
    assert "Check that Redis is running" in message


def test_a_redis_error_leaves_the_commands_arguments_out() -> None:
    """redis-py names a failed pipeline command with its arguments: stored values,
    which may be secrets, went into the StorageError's message."""
    from msgcore.store.redis import _without_arguments

    text = (
        "Command # 1 (HSET msgcore:_kv:session token s3cr3t) with a) paren) of pipeline "
        "caused error: WRONGTYPE Operation against a key holding the wrong kind of value"
    )
    assert _without_arguments(text) == (
        "Command # 1 (HSET ...) of pipeline caused error: WRONGTYPE Operation against a "
        "key holding the wrong kind of value"
    )
