"""Per-key locks: the policy, lock keys from payloads, and taking/keeping/releasing a
lock on a SQLite store (the store contract runs on Redis too: tests/store)."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from msgcore import (
    Client,
    ConfigurationError,
    LockKeyError,
    LockPolicy,
    LockTimeoutError,
    Router,
    Settings,
    create_broker,
)
from msgcore.cache.keys import body_value
from msgcore.failures import INVALID_PAYLOAD
from msgcore.locks import acquire
from msgcore.locks.lock import _releases
from msgcore.store.sqlite import SqliteStore
from tests.contract.harness import wait_until


def customer_of(order: Any) -> Any:
    return order["customer"]["id"]


class _Opaque:
    pass


def no_json_form(order: Any) -> Any:
    return _Opaque()


def lock_for(policy: LockPolicy, **settings: Any) -> Any:
    return policy.resolve("orders", Settings(**settings))


def key_of(policy: LockPolicy, body: bytes, content_type: str = "application/json") -> str:
    return str(lock_for(policy).lock_key(body_value(body, content_type)))


# -- the policy ---------------------------------------------------------------------------


def test_defaults_come_from_settings_and_scope_from_the_channel() -> None:
    lock = lock_for(LockPolicy("customer_id"), locks={"wait": 7, "lease": 90})
    assert (lock.scope, lock.wait, lock.lease) == ("orders", 7, 90)
    lock = lock_for(LockPolicy("customer_id", scope="customer", wait=timedelta(0), lease=5))
    assert (lock.scope, lock.wait, lock.lease) == ("customer", 0, 5)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"key": ""},
        {"key": "customer..id"},
        {"key": 42},
        {"key": "id", "scope": ""},
        {"key": "id", "wait": -1},
        {"key": "id", "lease": 0},
        # NaN never times out; inf broke Redis' millisecond leases; strings reached
        # arithmetic as bare TypeErrors
        {"key": "id", "wait": math.nan},
        {"key": "id", "lease": math.inf},
        {"key": "id", "lease": "60"},
        {"key": "id", "lease": True},
        {"key": "id", "lease": 1e20},
        {"key": "id", "scope": 5},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        LockPolicy(**kwargs)


def test_router_takes_a_field_a_function_or_a_policy() -> None:
    router = Router()

    @router.subscriber("a", lock="customer_id")
    async def a(order: dict[str, Any]) -> None: ...

    @router.subscriber("b", lock=customer_of)
    async def b(order: dict[str, Any]) -> None: ...

    @router.subscriber("c", lock=LockPolicy("id", scope="customer"))
    async def c(order: dict[str, Any]) -> None: ...

    @router.subscriber("d")
    async def d(order: dict[str, Any]) -> None: ...

    locks = [decl.lock for decl in router.subscribers]
    policy_c = LockPolicy("id", scope="customer")
    assert locks == [LockPolicy("customer_id"), LockPolicy(customer_of), policy_c, None]
    with pytest.raises(ConfigurationError):
        router.subscriber("e", lock="")


# -- lock keys from payloads ----------------------------------------------------------------


def test_lock_keys_from_fields_nested_fields_and_functions() -> None:
    body = b'{"customer": {"id": 42, "name": "Ada"}, "customer_id": "c-42"}'
    assert key_of(LockPolicy("customer_id"), body) == "orders:c-42"
    assert key_of(LockPolicy("customer.id"), body) == "orders:42"
    assert key_of(LockPolicy(customer_of, scope="customer"), body) == "customer:42"
    # values that are not strings are keyed by their canonical JSON
    assert key_of(LockPolicy("customer"), body) == 'orders:{"id":42,"name":"Ada"}'
    assert key_of(LockPolicy("n"), b'{"n": 2.0}') == key_of(LockPolicy("n"), b'{"n": 2}')


@pytest.mark.parametrize(
    ("policy", "body", "content_type", "says"),
    [
        (LockPolicy("customer_id"), b'{"id": 1}', "application/json", "no 'customer_id' field"),
        (LockPolicy("customer.id"), b'{"customer": 7}', "application/json", "no 'customer.id'"),
        (LockPolicy("customer_id"), b"[1, 2]", "application/json", "no 'customer_id' field"),
        (LockPolicy("customer_id"), b"plain words", "text/plain", "no 'customer_id' field"),
        (LockPolicy("customer_id"), b'{"customer_id": null}', "application/json", "is null"),
        (LockPolicy(customer_of), b'{"id": 1}', "application/json", "customer_of"),
        # an object with no JSON form: its str() held its address, so every message got a
        # key of its own and the lock excluded nothing
        (LockPolicy(no_json_form), b'{"id": 1}', "application/json", "no_json_form"),
    ],
)
def test_a_message_without_a_key_is_an_invalid_payload(
    policy: LockPolicy, body: bytes, content_type: str, says: str
) -> None:
    with pytest.raises(LockKeyError) as caught:
        key_of(policy, body, content_type)
    assert says in str(caught.value)
    assert "dead-lettered" in str(caught.value)
    # the transports dead-letter it at once: no retry gives a payload its key
    assert isinstance(caught.value, INVALID_PAYLOAD)


# -- taking, keeping and releasing --------------------------------------------------------


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[SqliteStore]:
    async with SqliteStore(f"sqlite:///{tmp_path / 'locks.db'}") as store:
        yield store


async def test_a_release_in_this_process_wakes_a_waiter(store: SqliteStore) -> None:
    held = await acquire(store, "k", holder="first", lease=30, wait=0)
    waiter = asyncio.create_task(acquire(store, "k", holder="second", lease=30, wait=30))
    await asyncio.sleep(0.3)  # the waiter is in its longest backoff pause by now
    assert not waiter.done()
    queries = store.queries
    await held.release()
    second = await asyncio.wait_for(waiter, 5)
    assert second.waited >= 0.3
    # woken by the release: one acquire, not a poll after a timer
    assert store.queries - queries <= 3
    assert [h.holder for h in await store.list_locks(now=time.time())] == ["second"]
    await second.release()
    assert await store.list_locks(now=time.time()) == []


async def test_timeout_names_the_holder(store: SqliteStore) -> None:
    held = await acquire(store, "report", holder="job j1 on host:7", lease=30, wait=0)
    with pytest.raises(LockTimeoutError) as caught:
        await acquire(store, "report", holder="job j2", lease=30, wait=0.2)
    error = caught.value
    assert (error.key, error.holder) == ("report", "job j1 on host:7")
    assert error.waited >= 0.2
    assert "held by job j1 on host:7" in str(error) and "MSGCORE_LOCKS__WAIT" in str(error)
    assert isinstance(error, TimeoutError)
    with pytest.raises(LockTimeoutError):
        await acquire(store, "report", holder="job j3", lease=30, wait=0)
    await held.release()
    assert _releases().waiting == {}  # nothing kept for keys nobody waits for


async def test_a_held_lock_outlives_its_lease_while_held(store: SqliteStore) -> None:
    held = await acquire(store, "k", holder="long", lease=0.6, wait=0)
    await asyncio.sleep(1.5)  # two and a half leases: refreshed every 0.2 s
    with pytest.raises(LockTimeoutError):
        await acquire(store, "k", holder="other", lease=0.6, wait=0)
    assert not held.lost
    await held.release()
    await held.release()  # idempotent
    again = await acquire(store, "k", holder="other", lease=0.3, wait=0)
    await again.release()


async def test_a_lock_taken_over_after_its_lease_is_reported_lost(
    store: SqliteStore, caplog: pytest.LogCaptureFixture
) -> None:
    held = await acquire(store, "k", holder="stalled", lease=0.3, wait=0)
    # what a process stalled past its lease looks like: the row ran out, another took it
    await store.lock_release("k", held.token)
    other = await acquire(store, "k", holder="other", lease=30, wait=0)
    await wait_until(lambda: held.lost, within=5, what="the next refresh to find it lost")
    assert "ran out while held" in caplog.text
    await held.release()  # releases nothing of the new holder's
    assert [h.holder for h in await store.list_locks(now=time.time())] == ["other"]
    await other.release()


async def test_a_cancelled_waiter_leaves_no_lock_behind(store: SqliteStore) -> None:
    held = await acquire(store, "k", holder="first", lease=30, wait=0)
    waiter = asyncio.create_task(acquire(store, "k", holder="second", lease=30, wait=30))
    await asyncio.sleep(0.05)
    waiter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
    await held.release()
    await asyncio.sleep(0.05)  # the cancelled acquire's background release
    assert await store.list_locks(now=time.time()) == []
    assert _releases().waiting == {}


async def test_many_contenders_run_one_at_a_time(store: SqliteStore) -> None:
    inside: list[int] = []
    overlaps: list[int] = []

    async def worker(n: int) -> None:
        async with await acquire(store, "shared", holder=f"w{n}", lease=30, wait=30):
            if inside:
                overlaps.append(n)
            inside.append(n)
            await asyncio.sleep(0.005)
            inside.remove(n)

    await asyncio.gather(*(worker(n) for n in range(20)))
    assert overlaps == []
    assert _releases().waiting == {}
    assert await store.list_locks(now=time.time()) == []


def test_client_lock_refuses_bad_waits_and_leases(tmp_path: Path) -> None:
    client = Client(settings=Settings(url=f"sqlite:///{tmp_path / 'c.db'}"))
    with pytest.raises(ConfigurationError, match=re.escape("wait=...) must be zero or more")):
        client.lock("k", wait=-1)
    with pytest.raises(ConfigurationError, match=re.escape("lease=...) must be positive")):
        client.lock("k", lease=0)
    with pytest.raises(ConfigurationError, match="needs a key"):
        client.lock("")
    for key in (b"k", 7, ("k",)):
        with pytest.raises(ConfigurationError, match="non-empty str"):
            client.lock(key)  # type: ignore[arg-type]
    for bad in (math.nan, "3", [1]):
        with pytest.raises(ConfigurationError, match=re.escape("wait=...)")):
            client.lock("k", wait=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="at most 100 years"):
        client.lock("k", lease=math.inf)
    assert client.lock("k", wait=math.inf).wait == math.inf  # waits with no end
    assert client.lock("k", wait=timedelta(seconds=3)).wait == 3.0


async def test_a_cached_locked_handler_decodes_each_body_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the cache key and the lock key are both made from the decoded body: one decode
    from msgcore.jobs import tracking

    decoded: list[bytes] = []
    real = tracking.body_value

    def counting(body: bytes, content_type: str | None) -> Any:
        decoded.append(body)
        return real(body, content_type)

    monkeypatch.setattr(tracking, "body_value", counting)
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    settings = Settings(url=f"sqlite:///{tmp_path / 'orders.db'}", log_messages=False)
    router = Router()

    @router.subscriber("orders", cache=True, lock="customer")
    async def handle(order: dict[str, Any]) -> int:
        return int(order["n"]) * 2

    async with (
        create_broker(router, settings=settings) as broker,
        Client(settings=settings) as client,
    ):
        await broker.start()
        job = await client.submit("orders", {"customer": "ada", "n": 21})
        assert await job.result(timeout=10) == 42
        again = await client.submit("orders", {"customer": "ada", "n": 21})
        assert await again.result(timeout=10) == 42
        assert again.record.cached  # answered from the cache: no message, no decode
    assert len(decoded) == 1, decoded
