"""Delivery guarantees: consumer groups, retries, dead letters, delays, timeouts.

Tests marked ``real_only`` check behaviour that exists only on a real transport (the
SQLite file, the Redis server, the RabbitMQ server): FastStream's in-memory test brokers
run handlers inline, without redelivery, competition, delays or timeouts.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.middlewares import BaseMiddleware
from pydantic import BaseModel

from msgcore import Message, RequestTimeoutError, RetryPolicy, Router, telemetry

from .harness import Gauge, Sink, Transport

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
# Time the transports may add to a backoff or delay (polling, scheduling, a busy CI box).
SLACK = 3.0
# Timers may fire a hair early (uvloop's millisecond resolution, wall vs monotonic clock).
EARLY = 0.05


class Order(BaseModel):
    id: int
    item: str


# -- consumer groups -----------------------------------------------------------------------


async def test_fan_out_across_groups(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    orders = router.publisher("orders")
    billing, shipping, default = Sink(), Sink(), Sink()

    @router.subscriber("orders", group="billing")
    async def bill(n: int) -> None:
        billing.add(n)

    @router.subscriber("orders", group="shipping")
    async def ship(n: int) -> None:
        shipping.add(n)

    @router.subscriber("orders")
    async def audit(n: int) -> None:
        default.add(n)

    async with transport.run(transport.broker(router)):
        for n in range(5):
            await orders.publish(n)
        for sink in (billing, shipping, default):
            await sink.wait(5)
        if transport.real:
            await asyncio.sleep(0.3)  # nothing more arrives

    assert sorted(billing.items) == list(range(5))
    assert sorted(shipping.items) == list(range(5))
    assert sorted(default.items) == list(range(5))


@pytest.mark.real_only
async def test_fan_out_across_groups_on_separate_brokers(transport: Transport, unique: str) -> None:
    """Two brokers (as two services would be), each its own group: both get everything."""
    billing_router, shipping_router = Router(prefix=f"{unique}."), Router(prefix=f"{unique}.")
    producer = Router(prefix=f"{unique}.")
    orders = producer.publisher("orders")
    billing, shipping = Sink(), Sink()

    @billing_router.subscriber("orders", group="billing")
    async def bill(n: int) -> None:
        billing.add(n)

    @shipping_router.subscriber("orders", group="shipping")
    async def ship(n: int) -> None:
        shipping.add(n)

    b1, b2 = transport.broker(billing_router), transport.broker(shipping_router)
    async with transport.run(b1), transport.run(b2), transport.run(transport.broker(producer)):
        for n in range(10):
            await orders.publish(n)
        await billing.wait(10)
        await shipping.wait(10)
        await asyncio.sleep(0.3)

    assert sorted(billing.items) == list(range(10))
    assert sorted(shipping.items) == list(range(10))


@pytest.mark.real_only
async def test_competing_consumers_in_one_group(transport: Transport, unique: str) -> None:
    """Two brokers in the same group: every message is handled once overall."""
    total = 40
    handled = Sink()

    def member(name: str) -> Router:
        router = Router(prefix=f"{unique}.")

        @router.subscriber("jobs", group="workers")
        async def work(n: int) -> None:
            handled.add((name, n))
            await asyncio.sleep(0.005)

        return router

    producer = Router(prefix=f"{unique}.")
    jobs = producer.publisher("jobs")
    a, b = transport.broker(member("a")), transport.broker(member("b"))
    async with transport.run(a), transport.run(b), transport.run(transport.broker(producer)):
        await asyncio.gather(*(jobs.publish(n) for n in range(total)))
        await handled.wait(total)
        await asyncio.sleep(0.5)  # a message handled twice would show up by now

    per_message = Counter(n for _, n in handled.items)
    per_member = Counter(name for name, _ in handled.items)
    assert sorted(per_message) == list(range(total)), per_member
    duplicates = {n: c for n, c in per_message.items() if c > 1}
    assert not duplicates, f"handled more than once: {duplicates} (per member: {per_member})"


@pytest.mark.real_only
async def test_messages_wait_for_a_group_that_is_down(transport: Transport, unique: str) -> None:
    """A group that consumed once keeps getting its messages while no member runs."""
    received = Sink()

    def consumer() -> Router:
        router = Router(prefix=f"{unique}.")

        @router.subscriber("orders", group="billing")
        async def bill(n: int) -> None:
            received.add(n)

        return router

    producer = Router(prefix=f"{unique}.")
    orders = producer.publisher("orders")
    async with transport.run(transport.broker(producer)):
        async with transport.run(transport.broker(consumer())):
            await orders.publish(1)
            await received.wait(1)
        # the group's only member is gone: these wait for the next one
        for n in (2, 3, 4):
            await orders.publish(n)
        async with transport.run(transport.broker(consumer())):
            await received.wait(4)
            await asyncio.sleep(0.3)

    assert received.items == [1, 2, 3, 4]


@pytest.mark.real_only
async def test_publish_before_any_group_exists_reaches_the_first_group(
    transport: Transport, unique: str
) -> None:
    """Work published ahead of its consumers is not lost: the first group takes it."""
    received = Sink()
    consumer = Router(prefix=f"{unique}.")

    @consumer.subscriber("jobs", group="workers")
    async def work(n: int) -> None:
        received.add(n)

    producer = Router(prefix=f"{unique}.")
    jobs = producer.publisher("jobs")
    async with transport.run(transport.broker(producer)):
        for n in range(3):
            await jobs.publish(n)
        async with transport.run(transport.broker(consumer)):
            await received.wait(3)
            await asyncio.sleep(0.3)

    assert received.items == [0, 1, 2]


@pytest.mark.real_only
async def test_max_workers_run_handlers_concurrently(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    gauge, done = Gauge(), Sink()
    all_in = asyncio.Event()

    @router.subscriber("jobs", max_workers=4)
    async def work(n: int) -> None:
        with gauge:
            if gauge.now == 4:
                all_in.set()
            # each handler holds its slot until four run at once (or a second passes)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(1.0):
                    await all_in.wait()
        done.add(n)

    async with transport.run(transport.broker(router)):
        for n in range(8):
            await jobs.publish(n)
        await done.wait(8)

    assert gauge.peak == 4, f"at most {gauge.peak} handlers ran at once with max_workers=4"
    assert sorted(done.items) == list(range(8))


@pytest.mark.real_only
async def test_slow_handler_keeps_its_message_past_its_lease(
    transport: Transport, unique: str
) -> None:
    """A handler running longer than ``lease_seconds`` is alive, not dead: its message is
    not handed to another member of the group meanwhile."""
    handled = Sink()

    def member(name: str) -> Router:
        router = Router(prefix=f"{unique}.")

        @router.subscriber("jobs", group="workers", lease_seconds=0.5)
        async def work(n: int) -> None:
            handled.add((name, n))
            await asyncio.sleep(1.5)

        return router

    producer = Router(prefix=f"{unique}.")
    jobs = producer.publisher("jobs")
    a, b = transport.broker(member("a")), transport.broker(member("b"))
    async with transport.run(a), transport.run(b), transport.run(transport.broker(producer)):
        await jobs.publish(1)
        await handled.wait(1)
        await asyncio.sleep(2.0)  # three leases long, and past the handler's end

    assert [n for _, n in handled.items] == [1], f"handled again while running: {handled.items}"


# -- request/reply timeouts ------------------------------------------------------------------


@pytest.mark.real_only
@pytest.mark.parametrize("how", ["explicit", "settings"])
async def test_request_to_unserved_channel_times_out(
    transport: Transport, unique: str, how: str
) -> None:
    router = Router(prefix=f"{unique}.")
    nobody = router.publisher("nobody")
    served = router.publisher("served")

    @router.subscriber("served")
    async def handle(body: str) -> str:
        return body

    timeout = 0.5
    if how == "explicit":
        broker, kwargs = transport.broker(router), {"timeout": timeout}
    else:
        broker, kwargs = transport.broker(router, request_timeout=timeout), {}

    async with transport.run(broker):
        assert await served.request("ping", timeout=10) == "ping"
        start = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await nobody.request("anyone?", **kwargs)
        elapsed = time.monotonic() - start

    assert isinstance(info.value, TimeoutError)
    assert elapsed >= timeout - EARLY
    assert elapsed < timeout + 2.0


# -- retries and dead letters --------------------------------------------------------------


@pytest.mark.real_only
async def test_retries_with_backoff_then_dead_letter(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    attempts = Sink()
    policy = RetryPolicy(max_attempts=3, backoff=0.3, backoff_factor=2.0, jitter=0.0)

    @router.subscriber("jobs", group="renderers", retry=policy)
    async def render(body: str, msg: Message) -> None:
        attempts.add((msg.attempt, time.monotonic(), msg.message_id))
        raise ValueError(f"boom on attempt {msg.attempt}")

    broker = transport.broker(router)
    channel = f"{unique}.jobs"
    async with transport.run(broker):
        await jobs.publish(
            "payload",
            headers={"x-origin": "retry-test", "traceparent": TRACEPARENT},
            correlation_id=f"cid-{unique}",
        )
        got = await attempts.wait(3)
        [dead] = await transport.wait_dead_letters(broker, channel, 1)
        await asyncio.sleep(0.5)  # no fourth attempt, no second dead letter
        again = await transport.dead_letters(broker, channel)

    assert [a for a, _, _ in got] == [1, 2, 3], got
    gap1, gap2 = got[1][1] - got[0][1], got[2][1] - got[1][1]
    # Exponential backoff: 0.3 s after the first attempt, 0.6 s after the second.
    assert 0.3 - EARLY <= gap1 < 0.3 + SLACK, gap1
    assert 0.6 - EARLY <= gap2 < 0.6 + SLACK, gap2
    assert len(again) == 1

    assert dead.channel == channel
    assert dead.group == "renderers"
    assert dead.attempts == 3
    assert dead.body == b"payload"
    assert dead.error is not None
    assert "ValueError" in dead.error
    assert "boom on attempt 3" in dead.error
    assert dead.headers.get("x-origin") == "retry-test"
    assert dead.headers.get("traceparent") == TRACEPARENT
    assert dead.correlation_id == f"cid-{unique}"
    # A retry is the same message (idempotent handlers key on its id), and so is its
    # dead letter.
    message_ids = {m for _, _, m in got}
    assert len(message_ids) == 1, f"the message id changed across retries: {got}"
    assert dead.message_id in message_ids
    assert "invalid payload" not in dead.reason
    assert dead.failed_at == pytest.approx(time.time(), abs=30)


@pytest.mark.real_only
async def test_max_attempts_one_dead_letters_on_first_failure(
    transport: Transport, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    attempts = Sink()

    @router.subscriber("jobs", max_attempts=1)
    async def once(body: int, msg: Message) -> None:
        attempts.add(msg.attempt)
        raise RuntimeError("no second chance")

    broker = transport.broker(router)
    async with transport.run(broker):
        await jobs.publish(1)
        [dead] = await transport.wait_dead_letters(broker, f"{unique}.jobs", 1)
        await asyncio.sleep(0.3)

    assert attempts.items == [1]
    assert dead.attempts == 1
    assert dead.group == "default"
    assert dead.error is not None
    assert "no second chance" in dead.error


@pytest.mark.real_only
@pytest.mark.parametrize("stack", ["jobs", "traced", "traced+jobs"])
async def test_dead_letter_keeps_the_error_whichever_middleware_records_it(
    transport: Transport, unique: str, stack: str, tmp_path: Any
) -> None:
    # the transport's error recording is folded into the first of msgcore's own
    # middlewares (tracing, else jobs): the dead letter must still carry the error
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")

    @router.subscriber("jobs", max_attempts=1)
    async def once(body: int) -> None:
        raise RuntimeError(f"no second chance for {body}")

    traced = telemetry.setup("contract", "memory", set_global=False) if "traced" in stack else None
    try:
        broker = transport.broker(
            router,
            jobs={"track": "jobs" in stack},
            store_url=f"sqlite:///{tmp_path / 'store.db'}",
        )
        assert hasattr(broker, "msgcore_telemetry") == (traced is not None)
        async with transport.run(broker):
            await jobs.publish(5)
            [dead] = await transport.wait_dead_letters(broker, f"{unique}.jobs", 1)
    finally:
        telemetry.reset()
    assert dead.attempts == 1
    assert dead.error is not None
    assert "RuntimeError" in dead.error and "no second chance for 5" in dead.error


def _counting(counts: Counter[str]) -> type[BaseMiddleware]:
    class Counting(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            counts["deliveries"] += 1
            return await call_next(msg)

    return Counting


@pytest.mark.real_only
async def test_invalid_payload_goes_to_dead_letters_at_once(
    transport: Transport, unique: str
) -> None:
    counts: Counter[str] = Counter()
    router = Router(prefix=f"{unique}.", middlewares=[_counting(counts)])
    orders = router.publisher("orders")
    calls = Sink()

    @router.subscriber("orders", group="billing", retry=RetryPolicy(max_attempts=5, backoff=0.05))
    async def bill(order: Order) -> None:
        calls.add(order)

    broker = transport.broker(router)
    channel = f"{unique}.orders"
    async with transport.run(broker):
        await orders.publish({"not": "an order"}, headers={"x-origin": "bad-client"})
        [dead] = await transport.wait_dead_letters(broker, channel, 1)
        # With backoff 0.05 s a retry loop would have delivered it again by now.
        await asyncio.sleep(0.6)
        again = await transport.dead_letters(broker, channel)
        # The subscriber still works for valid payloads.
        await orders.publish(Order(id=1, item="book"))
        await calls.wait(1)

    assert calls.items == [Order(id=1, item="book")], "the handler never saw the invalid payload"
    assert counts["deliveries"] == 2, f"invalid payload delivered {counts['deliveries'] - 1}x"
    assert len(again) == 1
    assert "invalid payload" in dead.reason
    assert json.loads(dead.body) == {"not": "an order"}
    assert dead.attempts == 1
    assert dead.group == "billing"
    assert dead.channel == channel
    assert dead.headers.get("x-origin") == "bad-client"
    assert dead.error is not None
    assert "ValidationError" in dead.error or "validation error" in dead.error


@pytest.mark.real_only
async def test_attempt_increments_across_retries(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    done = router.publisher("done")
    attempts, results = Sink(), Sink()

    @router.subscriber("jobs", retry=RetryPolicy(max_attempts=5, backoff=0.05, jitter=0.0))
    @done
    async def flaky(body: str, msg: Message) -> dict[str, Any]:
        attempts.add((msg.attempt, msg.correlation_id, msg.headers.get("x-origin"), msg.message_id))
        if msg.attempt < 3:
            raise ConnectionError(f"transient failure {msg.attempt}")
        return {"body": body, "attempt": msg.attempt}

    @router.subscriber("done")
    async def collect(result: dict[str, Any]) -> None:
        results.add(result)

    broker = transport.broker(router)
    async with transport.run(broker):
        await jobs.publish("work", headers={"x-origin": "flaky"}, correlation_id=f"cid-{unique}")
        await results.wait(1)
        await asyncio.sleep(0.3)
        dead = await transport.dead_letters(broker, f"{unique}.jobs")

    assert [a for a, *_ in attempts.items] == [1, 2, 3]
    # Every retry is the same message: its id, correlation id and headers survive.
    assert len({(cid, origin, mid) for _, cid, origin, mid in attempts.items}) == 1, attempts
    assert attempts.items[0][1:3] == (f"cid-{unique}", "flaky")
    assert results.items == [{"body": "work", "attempt": 3}]
    assert dead == []


@pytest.mark.real_only
async def test_message_view_nack_and_reject(transport: Transport, unique: str) -> None:
    """``await msg.nack()`` retries the message (with backoff); ``msg.reject()`` gives up
    on it at once: straight to the dead letters."""
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    seen = Sink()

    @router.subscriber("jobs", retry=RetryPolicy(max_attempts=5, backoff=0.05, jitter=0.0))
    async def settle(body: str, msg: Message) -> None:
        seen.add((body, msg.attempt))
        if body == "nack" and msg.attempt == 1:
            await msg.nack()
        elif body == "reject":
            await msg.reject()

    broker = transport.broker(router)
    channel = f"{unique}.jobs"
    async with transport.run(broker):
        await jobs.publish("nack")
        await jobs.publish("reject")
        [dead] = await transport.wait_dead_letters(broker, channel, 1)
        await seen.wait(3)
        await asyncio.sleep(0.5)

    assert sorted(seen.items) == [("nack", 1), ("nack", 2), ("reject", 1)]
    assert dead.body == b"reject"
    assert dead.attempts == 1


# -- delays ------------------------------------------------------------------------------


@pytest.mark.real_only
@pytest.mark.parametrize("form", ["delay", "not_before"])
async def test_delayed_publish(transport: Transport, unique: str, form: str) -> None:
    router = Router(prefix=f"{unique}.")
    emails = router.publisher("emails")
    received = Sink()

    @router.subscriber("emails")
    async def send(body: str) -> None:
        received.add((body, time.monotonic()))

    delay = 1.0
    async with transport.run(transport.broker(router)):
        start = time.monotonic()
        if form == "delay":
            await emails.publish("later", delay=delay)
        else:
            await emails.publish("later", not_before=datetime.now(UTC) + timedelta(seconds=delay))
        # A message published afterwards without a delay is not held up behind it.
        await emails.publish("now")
        await received.wait(1)
        assert received.items[0][0] == "now"
        await received.wait(2, within=delay + 10)
        await asyncio.sleep(0.2)

    assert [body for body, _ in received.items] == ["now", "later"]
    arrived = received.items[1][1] - start
    assert delay - EARLY <= arrived < delay + SLACK, arrived
