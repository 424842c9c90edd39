"""The Redis adapter against a real Redis server: streams, groups, retries, leases, delays.

Every test gets its own stream prefix (``{unique}:``) and deletes its keys afterwards.
Behaviour FastStream's in-memory broker does not have (retries, leases, delays,
competing brokers) is tested on the server; ``TestClient`` is tested once at the end.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from faststream.exceptions import NackMessage, RejectMessage
from pydantic import BaseModel
from redis.asyncio import Redis

from msgcore import (
    Client,
    ConfigurationError,
    JobNotFoundError,
    Message,
    PayloadError,
    RedisSettings,
    RequestTimeoutError,
    RetryPolicy,
    Router,
    Settings,
    create_broker,
)
from msgcore.adapters.base import DeadLetterRecord
from msgcore.adapters.redis import MsgcoreRedisBroker, RedisAdapter
from msgcore.constants import HEADER_ATTEMPT
from msgcore.naming import redis_retry_stream, redis_stream
from msgcore.testing import TestClient

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Timers may fire a hair early (millisecond clocks); a busy box may add latency.
EARLY = 0.05
SLACK = 3.0


class Order(BaseModel):
    id: int
    item: str


# -- harness ----------------------------------------------------------------------------


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]], *, within: float = 10.0, what: str = "it"
) -> Any:
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(0.01)


class Sink:
    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(item)

    async def wait(self, n: int, within: float = 10.0) -> list[Any]:
        await wait_until(lambda: len(self.items) >= n, within=within, what=f"{n} items")
        return self.items


@pytest.fixture
def settings(redis_url: str, unique: str) -> Settings:
    return Settings(
        url=redis_url,
        log_messages=False,
        redis=RedisSettings(stream_prefix=f"{unique}:", polling_interval_ms=50),
    )


@asynccontextmanager
async def running(broker: MsgcoreRedisBroker) -> AsyncIterator[MsgcoreRedisBroker]:
    async with broker:
        await broker.start()
        yield broker


async def dead_letters(
    settings: Settings, broker: MsgcoreRedisBroker, channel: str | None
) -> list[DeadLetterRecord]:
    return await RedisAdapter(settings).dead_letters(broker, channel)


async def wait_dead_letters(
    settings: Settings, broker: MsgcoreRedisBroker, channel: str, n: int
) -> list[DeadLetterRecord]:
    found: list[DeadLetterRecord] = []

    async def enough() -> bool:
        found[:] = await dead_letters(settings, broker, channel)
        return len(found) >= n

    await wait_until(enough, what=f"{n} dead letters")
    return found


# -- publish, consume, groups -------------------------------------------------------------


async def test_publish_and_consume(settings: Settings, redis: Redis, unique: str) -> None:
    router = Router()
    orders = router.publisher("orders")
    seen = Sink()

    @router.subscriber("orders")
    async def handle(order: Order, msg: Message) -> None:
        seen.add((order, msg.attempt, msg.message_id, msg.correlation_id, msg.headers))

    broker = create_broker(router, settings=settings)
    assert isinstance(broker, MsgcoreRedisBroker)
    async with running(broker):
        await orders.publish(Order(id=1, item="book"), correlation_id="cid-1")
        [(order, attempt, message_id, cid, headers)] = await seen.wait(1)
        pending = await redis.xpending(redis_stream("orders", f"{unique}:"), "default")

    assert order == Order(id=1, item="book")
    assert attempt == 1
    assert cid == "cid-1"
    assert HEADER_ATTEMPT not in headers  # first deliveries look exactly as published
    # the message id is the stream entry id of the message
    assert message_id == (await redis.xrange(f"{unique}:orders"))[0][0].decode()
    assert pending["pending"] == 0, "acknowledged after the handler returned"


async def test_a_burst_beyond_the_pool_waits_for_connections(
    settings: Settings, redis: Redis, unique: str
) -> None:
    """More publishes in flight than the pool has connections: they wait for one instead
    of failing with redis-py's MaxConnectionsError."""
    small = settings.model_copy(update={"url": f"{settings.url}?max_connections=20"})
    router = Router()
    orders = router.publisher("orders")
    seen = Sink()

    @router.subscriber("orders", max_workers=8)
    async def handle(n: int) -> None:
        seen.add(n)

    async with running(create_broker(router, settings=small)):
        await asyncio.gather(*(orders.publish(n) for n in range(300)))
        assert sorted(await seen.wait(300)) == list(range(300))
    assert await redis.xlen(redis_stream("orders", f"{unique}:")) == 300


async def test_fan_out_across_groups(settings: Settings, redis: Redis) -> None:
    router = Router()
    orders = router.publisher("orders")
    billing, shipping = Sink(), Sink()

    @router.subscriber("orders", group="billing")
    async def bill(n: int) -> None:
        billing.add(n)

    @router.subscriber("orders", group="shipping")
    async def ship(n: int) -> None:
        shipping.add(n)

    async with running(create_broker(router, settings=settings)):
        for n in range(5):
            await orders.publish(n)
        await billing.wait(5)
        await shipping.wait(5)
        await asyncio.sleep(0.2)

    assert sorted(billing.items) == list(range(5))
    assert sorted(shipping.items) == list(range(5))


async def test_workers_of_one_group_compete_across_brokers(
    settings: Settings, redis: Redis
) -> None:
    total = 60
    handled = Sink()

    def member(name: str) -> Router:
        router = Router()

        @router.subscriber("jobs", group="workers")
        async def work(n: int) -> None:
            handled.add((name, n))
            await asyncio.sleep(0.01)

        return router

    producer = Router()
    jobs = producer.publisher("jobs")
    a = create_broker(member("a"), settings=settings)
    b = create_broker(member("b"), settings=settings)
    async with running(a), running(b), running(create_broker(producer, settings=settings)):
        for n in range(total):
            await jobs.publish(n)
        await handled.wait(total)
        await asyncio.sleep(0.3)

    per_message = Counter(n for _, n in handled.items)
    per_member = Counter(name for name, _ in handled.items)
    assert sorted(per_message) == list(range(total))
    assert max(per_message.values()) == 1, "handled more than once"
    assert set(per_member) == {"a", "b"}, f"both brokers share the work: {per_member}"


async def test_first_group_gets_messages_published_before_it_existed(
    settings: Settings, redis: Redis
) -> None:
    producer = Router()
    early = producer.publisher("early")
    first, late = Sink(), Sink()
    first_router, late_router = Router(), Router()

    @first_router.subscriber("early", group="first")
    async def on_first(body: str) -> None:
        first.add(body)

    @late_router.subscriber("early", group="late")
    async def on_late(body: str) -> None:
        late.add(body)

    async with create_broker(producer, settings=settings):  # connected, not started
        await early.publish("before any group")
        async with running(create_broker(first_router, settings=settings)):
            assert await first.wait(1) == ["before any group"]
            async with running(create_broker(late_router, settings=settings)):
                await early.publish("after both")
                await first.wait(2)
                await late.wait(1)
                await asyncio.sleep(0.2)

    assert first.items == ["before any group", "after both"]
    # a group that joins later starts at $, like a new queue bound to an exchange
    assert late.items == ["after both"]


async def test_max_workers_runs_handlers_concurrently(settings: Settings, redis: Redis) -> None:
    router = Router()
    jobs = router.publisher("jobs")
    running_now, peak = 0, 0
    done = Sink()

    @router.subscriber("jobs", max_workers=4)
    async def work(n: int) -> None:
        nonlocal running_now, peak
        running_now += 1
        peak = max(peak, running_now)
        await asyncio.sleep(0.2)
        running_now -= 1
        done.add(n)

    async with running(create_broker(router, settings=settings)):
        start = time.monotonic()
        for n in range(8):
            await jobs.publish(n)
        await done.wait(8)
        elapsed = time.monotonic() - start

    assert peak == 4
    assert elapsed < 1.2, f"8 x 0.2 s on 4 workers took {elapsed:.2f}s"


# -- onward publishes, headers, request/reply ---------------------------------------------


async def test_handler_publishes_onward(settings: Settings, redis: Redis, unique: str) -> None:
    router = Router()
    numbers = router.publisher("numbers")
    doubled = router.publisher("doubled", headers={"x-team": "core"})
    out = Sink()

    @router.subscriber("numbers")
    @doubled
    async def double(n: int) -> int:
        return n * 2

    @router.subscriber("doubled")
    async def collect(n: int, msg: Message) -> None:
        out.add((n, msg.correlation_id, msg.headers.get("x-team")))

    async with running(create_broker(router, settings=settings)):
        await numbers.publish(21, correlation_id="cid-onward")
        assert await out.wait(1) == [(42, "cid-onward", "core")]

    assert await redis.xlen(redis_stream("doubled", f"{unique}:")) == 1


async def test_headers_and_correlation_id_round_trip(settings: Settings, redis: Redis) -> None:
    router = Router()
    jobs = router.publisher("jobs", headers={"x-team": "core"})
    seen = Sink()

    @router.subscriber("jobs")
    async def handle(body: str, msg: Message) -> None:
        seen.add((dict(msg.headers), msg.correlation_id))

    headers = {"traceparent": TRACEPARENT, "x-tenant": "acme", "x-unicode": "zürich"}
    async with running(create_broker(router, settings=settings)):
        await jobs.publish("a", headers=headers, correlation_id="cid-h")
        await jobs.publish("b")
        [(got, cid), (_, other_cid)] = await seen.wait(2)

    assert {k: got.get(k) for k in [*headers, "x-team"]} == {**headers, "x-team": "core"}
    assert cid == "cid-h"
    assert other_cid
    assert other_cid != cid


async def test_a_header_the_entry_cannot_carry_is_refused_before_sending(
    settings: Settings, redis: Redis, unique: str
) -> None:
    router = Router()
    jobs = router.publisher("jobs")
    seen = Sink()

    @router.subscriber("jobs")
    async def handle(body: str, msg: Message) -> None:
        seen.add((body, msg.headers.get("k")))

    async with running(create_broker(router, settings=settings)):
        # bytes that are not UTF-8 made the whole entry unreadable (dead-lettered as an
        # invalid payload at the worker, after a publish that seemed to succeed): bytes
        # are refused on every transport now, and the envelope still refuses them
        with pytest.raises(PayloadError, match="got bytes"):
            await jobs.publish("a", headers={"k": b"\xff\xfe"})
        with pytest.raises(PayloadError, match="not UTF-8"):
            await jobs._publish("a", headers={"k": b"\xff\xfe"})
        with pytest.raises(PayloadError, match="at most 65535"):
            await jobs.publish("b", headers={"k": "x" * 70_000})
        await jobs.publish("c", headers={"k": "text"})
        assert await seen.wait(1) == [("c", "text")]
        await asyncio.sleep(0.2)
    assert seen.items == [("c", "text")]
    assert await redis.xlen(redis_stream("jobs", f"{unique}:")) == 1


async def test_request_reply_and_100_concurrent_requests(settings: Settings, redis: Redis) -> None:
    router = Router()
    echo = router.publisher("echo")

    @router.subscriber("echo", max_workers=16)
    async def handle(body: dict[str, Any], msg: Message) -> dict[str, Any]:
        await asyncio.sleep(0.01)
        return {"echo": body, "cid": msg.correlation_id, "tenant": msg.headers.get("x-tenant")}

    async with running(create_broker(router, settings=settings)):
        reply = await echo.request({"n": -1}, headers={"x-tenant": "acme"}, correlation_id="c1")
        start = time.monotonic()
        replies = await asyncio.gather(*(echo.request({"n": n}, timeout=10) for n in range(100)))
        elapsed = time.monotonic() - start

    assert reply == {"echo": {"n": -1}, "cid": "c1", "tenant": "acme"}
    assert [r["echo"] for r in replies] == [{"n": n} for n in range(100)]
    assert len({r["cid"] for r in replies}) == 100
    assert elapsed < 5.0, f"100 concurrent requests took {elapsed:.2f}s"


async def test_request_to_unserved_channel_times_out(settings: Settings, redis: Redis) -> None:
    router = Router()
    nobody = router.publisher("nobody")
    broker = create_broker(router, settings=settings.model_copy(update={"request_timeout": 0.3}))
    async with running(broker):
        start = time.monotonic()
        with pytest.raises(RequestTimeoutError):
            await nobody.request("anyone?")  # Settings.request_timeout applies
        elapsed = time.monotonic() - start
    assert 0.3 - EARLY <= elapsed < 0.3 + SLACK


# -- retries and dead letters ---------------------------------------------------------------


async def test_retries_with_backoff_then_dead_letter(
    settings: Settings, redis: Redis, unique: str
) -> None:
    router = Router()
    jobs = router.publisher("jobs")
    attempts = Sink()
    policy = RetryPolicy(max_attempts=3, backoff=0.2, backoff_factor=2.0, jitter=0.0)

    @router.subscriber("jobs", group="renderers", retry=policy)
    async def render(body: str, msg: Message) -> None:
        attempts.add(
            (msg.attempt, time.monotonic(), msg.message_id, msg.headers.get(HEADER_ATTEMPT))
        )
        raise ValueError(f"boom on attempt {msg.attempt}")

    broker = create_broker(router, settings=settings)
    async with running(broker):
        await jobs.publish(
            "payload",
            headers={"x-origin": "retry-test", "traceparent": TRACEPARENT},
            correlation_id="cid-retry",
        )
        got = await attempts.wait(3)
        [dead] = await wait_dead_letters(settings, broker, "jobs", 1)
        await asyncio.sleep(0.5)  # no fourth attempt
        again = await dead_letters(settings, broker, "jobs")
        retry_stream = redis_retry_stream("jobs", "renderers", f"{unique}:")
        assert await redis.xlen(retry_stream) == 0, "settled retry copies are deleted"
        pending = await redis.xpending(redis_stream("jobs", f"{unique}:"), "renderers")

    assert [a for a, *_ in got] == [1, 2, 3]
    assert [h for *_, h in got] == [None, "2", "3"]
    assert len({m for _, _, m, _ in got}) == 1, "the message id is stable across retries"
    gap1, gap2 = got[1][1] - got[0][1], got[2][1] - got[1][1]
    assert 0.2 - EARLY <= gap1 < 0.2 + SLACK
    assert 0.4 - EARLY <= gap2 < 0.4 + SLACK
    assert len(again) == 1
    assert pending["pending"] == 0
    assert dead.channel == "jobs"
    assert dead.group == "renderers"
    assert dead.attempts == 3
    assert dead.reason == "failed 3 of 3 attempts"
    assert dead.error == "builtins.ValueError: boom on attempt 3"
    assert dead.body == b"payload"
    assert dead.headers["x-origin"] == "retry-test"
    assert dead.headers["traceparent"] == TRACEPARENT
    assert dead.correlation_id == "cid-retry"
    assert dead.message_id == got[0][2]
    assert dead.failed_at == pytest.approx(time.time(), abs=30)


async def test_retry_goes_to_the_failing_group_only(settings: Settings, redis: Redis) -> None:
    router = Router()
    jobs = router.publisher("jobs")
    flaky, steady = Sink(), Sink()

    @router.subscriber("jobs", group="flaky", retry=RetryPolicy(max_attempts=3, backoff=0.05))
    async def fails_once(body: str, msg: Message) -> None:
        flaky.add(msg.attempt)
        if msg.attempt == 1:
            raise ConnectionError("transient")

    @router.subscriber("jobs", group="steady")
    async def fine(body: str, msg: Message) -> None:
        steady.add(msg.attempt)

    async with running(create_broker(router, settings=settings)):
        await jobs.publish("x")
        await flaky.wait(2)
        await asyncio.sleep(0.3)

    assert flaky.items == [1, 2]
    assert steady.items == [1]


async def test_invalid_payload_is_dead_lettered_at_once(settings: Settings, redis: Redis) -> None:
    router = Router()
    orders = router.publisher("orders")
    calls = Sink()

    @router.subscriber("orders", group="billing", retry=RetryPolicy(max_attempts=5, backoff=0.05))
    async def bill(order: Order) -> None:
        calls.add(order)

    broker = create_broker(router, settings=settings)
    async with running(broker):
        await orders.publish({"not": "an order"}, headers={"x-origin": "bad-client"})
        [dead] = await wait_dead_letters(settings, broker, "orders", 1)
        await asyncio.sleep(0.4)  # a retry loop would have delivered it again by now
        again = await dead_letters(settings, broker, "orders")
        await orders.publish(Order(id=1, item="book"))
        await calls.wait(1)

    assert calls.items == [Order(id=1, item="book")]
    assert len(again) == 1
    assert "invalid payload" in dead.reason
    assert dead.attempts == 1
    assert dead.group == "billing"
    assert dead.headers["x-origin"] == "bad-client"
    assert dead.error is not None
    assert "ValidationError" in dead.error


async def test_reject_nack_and_ack_exceptions(settings: Settings, redis: Redis) -> None:
    router = Router()
    rejects, nacks = router.publisher("rejects"), router.publisher("nacks")
    seen = Sink()

    @router.subscriber("rejects", retry=RetryPolicy(max_attempts=5, backoff=0.05))
    async def reject(body: str, msg: Message) -> None:
        seen.add(("reject", msg.attempt))
        raise RejectMessage

    @router.subscriber("nacks", retry=RetryPolicy(max_attempts=5, backoff=10.0))
    async def nack(body: str, msg: Message) -> None:
        seen.add(("nack", msg.attempt, time.monotonic()))
        if msg.attempt == 1:
            raise NackMessage(delay=0.2)  # its own delay, not the 10 s backoff

    broker = create_broker(router, settings=settings)
    async with running(broker):
        await rejects.publish("r")
        [dead] = await wait_dead_letters(settings, broker, "rejects", 1)
        await nacks.publish("n")
        await wait_until(lambda: len([s for s in seen.items if s[0] == "nack"]) == 2)
        await asyncio.sleep(0.3)
        nack_dead = await dead_letters(settings, broker, "nacks")

    assert [s for s in seen.items if s[0] == "reject"] == [("reject", 1)]
    assert dead.reason == "rejected by the handler"
    assert dead.attempts == 1
    (_, a1, t1), (_, a2, t2) = [s for s in seen.items if s[0] == "nack"]
    assert (a1, a2) == (1, 2)
    assert 0.2 - EARLY <= t2 - t1 < 0.2 + SLACK
    assert nack_dead == []


async def test_dead_letters_of_every_channel(settings: Settings, redis: Redis) -> None:
    router = Router()
    a, b = router.publisher("a"), router.publisher("b")

    @router.subscriber("a", max_attempts=1)
    async def on_a(body: str) -> None:
        raise RuntimeError("a fails")

    @router.subscriber("b", max_attempts=1)
    async def on_b(body: str) -> None:
        raise RuntimeError("b fails")

    broker = create_broker(router, settings=settings)
    async with running(broker):
        await a.publish("1")
        await wait_dead_letters(settings, broker, "a", 1)
        await b.publish("2")
        await wait_dead_letters(settings, broker, "b", 1)
        everything = await dead_letters(settings, broker, None)
        first = await RedisAdapter(settings).dead_letters(broker, None, limit=1)

    assert [(d.channel, d.body) for d in everything] == [("a", b"1"), ("b", b"2")]
    assert [d.channel for d in first] == ["a"]


# -- delays and priority ----------------------------------------------------------------------


@pytest.mark.parametrize("form", ["delay", "not_before"])
async def test_delayed_publish(settings: Settings, redis: Redis, form: str) -> None:
    router = Router()
    emails = router.publisher("emails")
    received = Sink()

    @router.subscriber("emails")
    async def send(body: str) -> None:
        received.add((body, time.monotonic()))

    delay = 0.6
    async with running(create_broker(router, settings=settings)):
        start = time.monotonic()
        if form == "delay":
            await emails.publish("later", delay=delay)
        else:
            await emails.publish("later", not_before=datetime.now(UTC) + timedelta(seconds=delay))
        await emails.publish("now")
        await received.wait(1)
        assert received.items[0][0] == "now", "a later message does not hold up others"
        await received.wait(2)

    assert [body for body, _ in received.items] == ["now", "later"]
    arrived = received.items[1][1] - start
    assert delay - EARLY <= arrived < delay + SLACK, arrived


async def test_delayed_message_waits_for_a_consumer_process(
    settings: Settings, redis: Redis
) -> None:
    """A publisher-only process schedules; whichever process consumes the channel delivers."""
    producer, consumer = Router(), Router()
    emails = producer.publisher("emails")
    received = Sink()

    @consumer.subscriber("emails")
    async def send(body: str) -> None:
        received.add(body)

    async with create_broker(producer, settings=settings):
        await emails.publish("scheduled", delay=0.2)
    async with running(create_broker(consumer, settings=settings)):
        assert await received.wait(1) == ["scheduled"]


async def test_priority_is_refused(settings: Settings, redis: Redis) -> None:
    router = Router()
    jobs = router.publisher("jobs")
    async with create_broker(router, settings=settings):
        with pytest.raises(ConfigurationError, match="priority"):
            await jobs.publish("x", priority=5)
        await jobs.publish("y", priority=0)  # the default priority is fine


# -- leases: crashes, heartbeats, shutdown ----------------------------------------------------


async def _crash_mid_handler(redis: Redis, stream: str, group: str) -> bytes:
    """Read the next entry as a worker that then dies: it stays pending, never acked."""
    response = await redis.xreadgroup(group, "ghost-worker", {stream: ">"}, count=1)
    [(_, [(entry_id, _)])] = response
    return entry_id


async def test_entry_of_a_crashed_worker_is_redelivered_after_its_lease(
    settings: Settings, redis: Redis, unique: str
) -> None:
    stream = redis_stream("jobs", f"{unique}:")
    await redis.xgroup_create(stream, "workers", id="0", mkstream=True)
    producer = Router()
    jobs = producer.publisher("jobs")
    async with create_broker(producer, settings=settings):
        await jobs.publish("work", correlation_id="cid-crash")
    crashed_entry = await _crash_mid_handler(redis, stream, "workers")
    crashed_at = time.monotonic()

    router = Router()
    seen = Sink()

    @router.subscriber("jobs", group="workers", lease_seconds=1.0)
    async def work(body: str, msg: Message) -> None:
        seen.add((body, msg.attempt, msg.correlation_id, msg.message_id, time.monotonic()))

    async with running(create_broker(router, settings=settings)):
        [(body, attempt, cid, message_id, at)] = await seen.wait(1)
        await asyncio.sleep(0.3)
        pending = await redis.xpending(stream, "workers")

    assert (body, attempt, cid) == ("work", 2, "cid-crash")
    assert message_id == crashed_entry.decode()
    assert at - crashed_at >= 1.0 - EARLY, "not before the lease ran out"
    assert at - crashed_at < 1.0 + SLACK
    assert pending["pending"] == 0, "the crashed worker's entry was acknowledged for the group"
    assert len(seen.items) == 1


async def test_entry_that_keeps_killing_workers_is_dead_lettered(
    settings: Settings, redis: Redis, unique: str
) -> None:
    stream = redis_stream("jobs", f"{unique}:")
    await redis.xgroup_create(stream, "workers", id="0", mkstream=True)
    producer = Router()
    jobs = producer.publisher("jobs")
    async with create_broker(producer, settings=settings):
        await jobs.publish("poison")
    await _crash_mid_handler(redis, stream, "workers")

    router = Router()
    seen = Sink()

    @router.subscriber("jobs", group="workers", lease_seconds=0.5, max_attempts=1)
    async def work(body: str) -> None:
        seen.add(body)

    broker = create_broker(router, settings=settings)
    async with running(broker):
        [dead] = await wait_dead_letters(settings, broker, "jobs", 1)

    assert seen.items == [], "delivered more than max_attempts times: not handled again"
    assert dead.attempts == 2
    assert "without being settled" in dead.reason
    assert dead.body == b"poison"


async def test_long_handler_keeps_its_entry_with_heartbeats(
    settings: Settings, redis: Redis, unique: str
) -> None:
    handled = Sink()

    def member(name: str) -> Router:
        router = Router()

        @router.subscriber("slow", group="workers", lease_seconds=0.6)
        async def work(body: str, msg: Message) -> None:
            handled.add((name, msg.attempt))
            await asyncio.sleep(2.0)  # more than three leases

        return router

    producer = Router()
    slow = producer.publisher("slow")
    a = create_broker(member("a"), settings=settings)
    b = create_broker(member("b"), settings=settings)
    async with running(a), running(b), running(create_broker(producer, settings=settings)):
        await slow.publish("job")
        await handled.wait(1)
        await asyncio.sleep(2.5)
        pending = await redis.xpending(redis_stream("slow", f"{unique}:"), "workers")
        dead = await dead_letters(settings, a, "slow")

    assert len(handled.items) == 1, f"stolen while its handler ran: {handled.items}"
    assert handled.items[0][1] == 1
    assert pending["pending"] == 0
    assert dead == []


async def test_stop_waits_for_running_handlers_and_hands_back_the_rest(
    settings: Settings, redis: Redis, unique: str
) -> None:
    first, second = Router(), Router()
    producer = Router()
    jobs = producer.publisher("jobs")
    started, finished, later = Sink(), Sink(), Sink()

    @first.subscriber("jobs", group="workers")
    async def slow(n: int) -> None:
        started.add(n)
        await asyncio.sleep(1.0)
        finished.add(n)

    @second.subscriber("jobs", group="workers")
    async def fast(n: int, msg: Message) -> None:
        later.add((n, msg.attempt))

    broker = create_broker(first, settings=settings)
    async with create_broker(producer, settings=settings):
        async with running(broker):
            for n in range(5):
                await jobs.publish(n)
            await started.wait(1)
            await asyncio.sleep(0.1)  # the rest is read ahead and held
            await broker.stop()
            assert finished.items == started.items, "the running handler finished"
            await broker.stop()  # stopping twice is harmless
        async with running(create_broker(second, settings=settings)):
            await later.wait(4)
            await asyncio.sleep(0.2)

    assert len(started.items) == 1
    # what was held but never started comes back at once, with its delivery number
    assert sorted(later.items) == [(n, 1) for n in range(5) if n not in started.items]
    pending = await redis.xpending(redis_stream("jobs", f"{unique}:"), "workers")
    assert pending["pending"] == 0
    consumers = await redis.xinfo_consumers(redis_stream("jobs", f"{unique}:"), "workers")
    assert consumers == [], "stopped brokers leave no consumer behind"


async def test_handler_past_the_graceful_timeout_is_cancelled_and_handed_back(
    settings: Settings, redis: Redis, unique: str
) -> None:
    stuck, rescue = Router(), Router()
    producer = Router()
    jobs = producer.publisher("jobs")
    started, later = Sink(), Sink()

    @stuck.subscriber("jobs", group="workers")
    async def hangs(n: int) -> None:
        started.add(n)
        await asyncio.sleep(30)

    @rescue.subscriber("jobs", group="workers")
    async def rescues(n: int, msg: Message) -> None:
        later.add((n, msg.attempt))

    broker = create_broker(stuck, settings=settings)
    broker.config.broker_config.graceful_timeout = 0.3
    async with create_broker(producer, settings=settings):
        async with running(broker):
            await jobs.publish(7)
            await started.wait(1)
            begin = time.monotonic()
            await broker.stop()
            stopped_in = time.monotonic() - begin
        async with running(create_broker(rescue, settings=settings)):
            # at once, not after the 30 s lease: the cancelled attempt counts
            assert await later.wait(1, within=5) == [(7, 2)]

    assert stopped_in < 0.3 + SLACK
    pending = await redis.xpending(redis_stream("jobs", f"{unique}:"), "workers")
    assert pending["pending"] == 0


async def test_start_twice_and_restart_are_harmless(settings: Settings, redis: Redis) -> None:
    router = Router()
    jobs = router.publisher("jobs")
    seen = Sink()

    @router.subscriber("jobs", max_workers=2)
    async def handle(n: int) -> None:
        seen.add(n)

    broker = create_broker(router, settings=settings)
    async with running(broker):
        await broker.start()
        for n in range(3):
            await jobs.publish(n)
        await seen.wait(3)
        await asyncio.sleep(0.2)
    assert sorted(seen.items) == [0, 1, 2], "one read loop, not two"
    assert not broker.mover.running

    async with running(broker):  # the same broker, started again
        await jobs.publish(3)
        await seen.wait(4)
    assert sorted(seen.items) == [0, 1, 2, 3]


# -- configuration ---------------------------------------------------------------------------


@pytest.mark.parametrize("channel", ["_dead:orders", "_lock:orders", "_kv:orders", "_job:7"])
def test_reserved_channel_names_are_refused(settings: Settings, channel: str) -> None:
    router = Router()

    @router.subscriber(channel)
    async def handle(body: str) -> None: ...

    with pytest.raises(ConfigurationError, match=channel):
        create_broker(router, settings=settings)


async def test_a_submit_to_a_reserved_name_is_refused_before_anything_is_stored(
    settings: Settings,
) -> None:
    """A channel named like a lock key collided with it: the submit failed half way
    (WRONGTYPE) and left a pending record that no message would ever finish."""
    async with Client(settings=settings) as client:
        with pytest.raises(ConfigurationError, match="_lock:"):
            await client.submit("_lock:orders", 1, job_id=f"{settings.redis.stream_prefix}x")
        assert await client.store.get_job(f"{settings.redis.stream_prefix}x") is None


def test_non_positive_lease_is_refused(settings: Settings) -> None:
    router = Router()
    # at the declaration, the same on every transport
    with pytest.raises(ConfigurationError, match="lease_seconds"):

        @router.subscriber("jobs", lease_seconds=0)
        async def handle(body: str) -> None: ...


async def test_maxlen_caps_the_stream(settings: Settings, redis: Redis, unique: str) -> None:
    capped = settings.model_copy(update={"redis": settings.redis.model_copy(update={"maxlen": 10})})
    router = Router()
    jobs = router.publisher("jobs")
    async with create_broker(router, settings=capped):
        for n in range(500):
            await jobs.publish(n)
    # approximate trimming (MAXLEN ~) keeps whole nodes: far below 500, at least 10
    assert 10 <= await redis.xlen(redis_stream("jobs", f"{unique}:")) < 500


def test_asyncapi_documents_the_streams(settings: Settings, unique: str) -> None:
    from faststream.specification import AsyncAPI

    router = Router()
    out = router.publisher("out")

    @router.subscriber("in", group="g")
    @out
    async def handle(body: str) -> str:
        return body

    schema = json.loads(
        AsyncAPI(create_broker(router, settings=settings)).to_specification().to_json()
    )
    channels = json.dumps(schema["channels"])
    assert f"{unique}:in" in channels
    assert f"{unique}:out" in channels
    assert "_retry" not in channels


# -- in memory ------------------------------------------------------------------------------


async def test_test_client_runs_handlers_in_memory(settings: Settings) -> None:
    router = Router()
    orders = router.publisher("orders")
    invoices = router.publisher("invoices")
    seen = Sink()

    @router.subscriber("orders", group="billing")
    @invoices
    async def bill(order: Order, msg: Message) -> dict[str, Any]:
        seen.add(("order", order, msg.attempt))
        return {"invoice": order.id}

    @router.subscriber("invoices")
    async def collect(body: dict[str, Any]) -> None:
        seen.add(("invoice", body))

    # nothing connects: the URL only picks the transport
    memory = settings.model_copy(update={"url": "redis://127.0.0.1:1/0"})
    async with TestClient(create_broker(router, settings=memory)):
        await orders.publish(Order(id=3, item="pen"))
        reply = await orders.request(Order(id=4, item="ink"))

    assert seen.items[:2] == [("order", Order(id=3, item="pen"), 1), ("invoice", {"invoice": 3})]
    assert reply == {"invoice": 4}


def test_connections_pack_commands_with_hiredis() -> None:
    """msgcore's Redis pools pack commands with hiredis (redis-py's asyncio connections
    pack in Python); the bytes on the wire are the same."""
    from redis.asyncio.connection import Connection

    from msgcore.adapters.redis.connection import (
        HiredisConnection,
        HiredisSSLConnection,
        connection_class_for,
    )

    assert connection_class_for("redis://127.0.0.1:6379/0") is HiredisConnection
    assert connection_class_for("rediss://example:6380/0") is HiredisSSLConnection
    assert connection_class_for("memory://") is None
    command = ("EVALSHA", "f" * 40, 2, "k:1", "k:2", 1.5, 7, b"\x00\xff", "é")
    assert b"".join(HiredisConnection().pack_command(*command)) == b"".join(
        Connection().pack_command(*command)
    )
    batch = [("SET", "a", "1"), ("GET", "a")]
    assert b"".join(HiredisConnection().pack_commands(batch)) == b"".join(
        Connection().pack_commands(batch)
    )


async def test_an_unknown_job_names_the_store_without_its_password(redis_url: str) -> None:
    """``get_job`` and ``cancel`` of an id with no record say which store they asked,
    with the URL's password redacted (Redis' default user takes any password)."""
    parts = urlsplit(redis_url)
    if parts.password is None:
        parts = parts._replace(netloc=f"default:s3cret@{parts.netloc}")
    url = urlunsplit(parts)
    password = urlsplit(url).password
    assert password
    async with Client(url, store_url=url) as client:
        for call in (client.get_job, client.cancel):
            with pytest.raises(JobNotFoundError) as caught:
                await call("no-such-job")
            assert "never submitted to this store (redis://" in str(caught.value)
            assert password not in str(caught.value)
