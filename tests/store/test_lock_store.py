"""Per-key locks in the store: every test runs against ``SqliteStore`` and ``RedisStore``,
with a second store object on the same data standing in for another process."""

from __future__ import annotations

import asyncio
import time

from msgcore.store import Store

from .conftest import OpenStore


async def take(store: Store, key: str, token: str, lease: float = 5.0, holder: str = "") -> bool:
    held = await store.lock_acquire(
        key, token, holder=holder or f"holder-{token}", lease=lease, now=time.time()
    )
    return held is None


async def test_one_holder_at_a_time_across_store_objects(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    assert await take(one, "orders:42", "t1", holder="job a on host:1")
    now = time.time()
    other = await two.lock_acquire("orders:42", "t2", holder="job b", lease=5.0, now=now)
    assert other is not None
    assert other.key == "orders:42"
    assert other.holder == "job a on host:1"
    assert now + 4.0 < other.expires_at <= now + 5.1
    # the holder taking it again keeps it (and renews the lease); other keys are free
    assert await take(one, "orders:42", "t1")
    assert await take(two, "orders:43", "t2")


async def test_release_and_extend_need_the_holders_token(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    assert await take(one, "k", "t1")
    assert not await two.lock_release("k", "t2")
    assert not await two.lock_extend("k", "t2", lease=5.0, now=time.time())
    assert not await take(two, "k", "t2")
    assert await one.lock_extend("k", "t1", lease=5.0, now=time.time())
    assert await one.lock_release("k", "t1")
    assert not await one.lock_release("k", "t1")  # once only
    assert await take(two, "k", "t2")


async def test_a_silent_holders_lease_runs_out(open_store: OpenStore) -> None:
    one, two = await open_store(), await open_store()
    assert await take(one, "k", "t1", lease=0.5)
    assert not await take(two, "k", "t2")
    await asyncio.sleep(0.7)
    assert await two.list_locks(now=time.time()) == []
    assert await take(two, "k", "t2")
    # the old holder can neither refresh nor release what is someone else's now
    assert not await one.lock_extend("k", "t1", lease=5.0, now=time.time())
    assert not await one.lock_release("k", "t1")
    assert [h.holder for h in await one.list_locks(now=time.time())] == ["holder-t2"]


async def test_list_locks_by_prefix_literally(open_store: OpenStore) -> None:
    store = await open_store()
    for key in ("orders:1", "orders:2", "ord*rs:3", "refunds:1"):
        assert await take(store, key, f"t-{key}")
    listed = await store.list_locks(now=time.time())
    assert [h.key for h in listed] == sorted(["orders:1", "orders:2", "ord*rs:3", "refunds:1"])
    assert [h.key for h in await store.list_locks(now=time.time(), prefix="orders:")] == [
        "orders:1",
        "orders:2",
    ]
    # glob characters in a prefix match themselves only
    assert [h.key for h in await store.list_locks(now=time.time(), prefix="ord*")] == ["ord*rs:3"]
    assert all(h.expires_at > time.time() for h in listed)


async def test_purge_deletes_run_out_locks(open_store: OpenStore) -> None:
    store = await open_store()
    assert await take(store, "gone", "t1", lease=0.05)
    assert await take(store, "kept", "t2", lease=60.0)
    await asyncio.sleep(0.1)
    await store.purge_expired(now=time.time())
    assert [h.key for h in await store.list_locks(now=time.time())] == ["kept"]
    assert await take(store, "gone", "t3")
