"""The RabbitMQ adapter against a real RabbitMQ: groups, retries, dead letters, delays,
crashes, request/reply, shutdown.

Every test uses its own exchange (``{unique}-x``) and channels (``{unique}.*``); the
``rabbit`` fixture deletes every exchange and queue they created afterwards (group,
dead-letter and wait queues, read from the brokers it built). Behaviour FastStream's
in-memory broker does not have is tested on the server; ``TestClient`` once at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aio_pika
import pytest
from faststream.exceptions import AckMessage, NackMessage, RejectMessage
from faststream.specification import AsyncAPI
from pydantic import BaseModel

from msgcore import (
    BrokerConnectionError,
    Client,
    ConfigurationError,
    Message,
    PayloadError,
    RabbitSettings,
    RequestTimeoutError,
    RetryPolicy,
    Router,
    Settings,
    create_broker,
)
from msgcore.adapters.base import DeadLetterRecord
from msgcore.adapters.rabbit import (
    MsgcoreRabbitBroker,
    MsgcoreRabbitPublisher,
    MsgcoreRabbitSubscriber,
    RabbitAdapter,
)
from msgcore.constants import HEADER_ATTEMPT
from msgcore.naming import rabbit_group_queue, rabbit_unrouted_exchange, rabbit_unrouted_queue
from msgcore.testing import TestClient

# Timers may fire a hair early (clock resolution); a busy box may add latency.
EARLY = 0.05
SLACK = 2.0


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
        await wait_until(
            lambda: len(self.items) >= n, within=within, what=f"{n} items ({self.items!r:.300})"
        )
        return self.items


class Rabbit:
    """Brokers of one test, and the cleanup of everything they declared."""

    def __init__(self, url: str, unique: str) -> None:
        self.url = url
        self.unique = unique
        self.exchange = f"{unique}-x"
        self.brokers: list[MsgcoreRabbitBroker] = []

    def channel(self, name: str) -> str:
        return f"{self.unique}.{name}"

    def settings(self, **overrides: Any) -> Settings:
        values: dict[str, Any] = {
            "url": self.url,
            "log_messages": False,
            "rabbit": RabbitSettings(exchange=self.exchange),
        }
        values.update(overrides)
        return Settings(**values)

    def broker(self, *routers: Router, **overrides: Any) -> MsgcoreRabbitBroker:
        broker = create_broker(*routers, settings=self.settings(**overrides))
        assert isinstance(broker, MsgcoreRabbitBroker)
        self.brokers.append(broker)
        return broker

    @asynccontextmanager
    async def running(self, broker: MsgcoreRabbitBroker) -> AsyncIterator[MsgcoreRabbitBroker]:
        async with broker:
            await broker.start()
            yield broker

    async def dead_letters(
        self, broker: MsgcoreRabbitBroker, channel: str | None = None, limit: int = 100
    ) -> list[DeadLetterRecord]:
        return await RabbitAdapter(self.settings()).dead_letters(broker, channel, limit=limit)

    async def wait_dead_letters(
        self, broker: MsgcoreRabbitBroker, channel: str, n: int, within: float = 10.0
    ) -> list[DeadLetterRecord]:
        found: list[DeadLetterRecord] = []

        async def enough() -> bool:
            found[:] = await self.dead_letters(broker, channel)
            return len(found) >= n

        await wait_until(enough, within=within, what=f"{n} dead letters")
        return found

    async def queue_stats(self, name: str) -> tuple[int, int]:
        """(messages ready, consumers) of queue ``name``."""
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            queue = await channel.declare_queue(name, passive=True)
            result = queue.declaration_result
            return result.message_count or 0, result.consumer_count or 0
        finally:
            await connection.close()

    def queues(self) -> set[str]:
        names: set[str] = set()
        for broker in self.brokers:
            names.update(broker.msgcore.waits.names)
            for sub in broker.subscribers:
                if isinstance(sub, MsgcoreRabbitSubscriber):
                    names.update({sub.plan.queue, sub.plan.dead_queue})
                    names.add(rabbit_unrouted_queue(sub.plan.channel, self.exchange))
            for pub in broker.publishers:
                if isinstance(pub, MsgcoreRabbitPublisher):
                    names.add(rabbit_unrouted_queue(pub.msgcore_channel, self.exchange))
        return names

    async def cleanup(self) -> None:
        for broker in self.brokers:
            with contextlib.suppress(Exception):
                await broker.stop()
        connection = await aio_pika.connect(self.url)
        try:
            channel = await connection.channel()
            for name in sorted(self.queues()):
                assert name.startswith(self.unique), name
                await channel.queue_delete(name)  # if_unused=False: quorum queues need it
            await channel.exchange_delete(self.exchange)
            await channel.exchange_delete(rabbit_unrouted_exchange(self.exchange))
        finally:
            await connection.close()


@pytest.fixture
async def rabbit(rabbit_url: str, unique: str) -> AsyncIterator[Rabbit]:
    env = Rabbit(rabbit_url, unique)
    try:
        yield env
    finally:
        await env.cleanup()


# -- publish, consume, groups -------------------------------------------------------------


async def test_publish_and_consume_persistent_with_headers(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("orders")
    orders = router.publisher(channel)
    seen = Sink()

    @router.subscriber(channel)
    async def handle(order: Order, msg: Message) -> None:
        raw = msg._message.raw_message
        seen.add((order, msg.headers, msg.correlation_id, msg.attempt, raw.delivery_mode))

    async with rabbit.running(rabbit.broker(router)):
        await orders.publish(
            Order(id=1, item="book"),
            headers={"x-tenant": "acme", "n": 7},
            correlation_id="cid-1",
        )
        await seen.wait(1)

    order, headers, correlation_id, attempt, delivery_mode = seen.items[0]
    assert order == Order(id=1, item="book")
    # exactly what the publisher set: no msgcore or RabbitMQ bookkeeping headers
    assert headers == {"x-tenant": "acme", "n": 7}
    assert correlation_id == "cid-1"
    assert attempt == 1
    assert delivery_mode == aio_pika.DeliveryMode.PERSISTENT


async def test_fan_out_across_groups_and_competition_within_one(rabbit: Rabbit) -> None:
    channel = rabbit.channel("events")
    seen: Counter[tuple[str, int]] = Counter()

    def app(tag: str) -> Router:
        router = Router()

        @router.subscriber(channel, group="audit")
        async def audit(n: int) -> None:
            seen[(f"audit@{tag}", n)] += 1
            await asyncio.sleep(0.002)

        @router.subscriber(channel, group="billing")
        async def billing(n: int) -> None:
            seen[(f"billing@{tag}", n)] += 1
            await asyncio.sleep(0.002)

        return router

    events = Router()
    publish = events.publisher(channel)
    # two processes' worth of brokers: the groups compete across them
    first, second = rabbit.broker(app("a"), events), rabbit.broker(app("b"))
    async with rabbit.running(first), rabbit.running(second):
        for n in range(40):
            await publish.publish(n)
        await wait_until(lambda: sum(seen.values()) >= 80, what="80 handled messages")
        await asyncio.sleep(0.2)

    for group in ("audit", "billing"):
        handled = Counter(
            n for (who, n), c in seen.items() for _ in range(c) if who.startswith(group)
        )
        # every group got every message exactly once
        assert handled == Counter(range(40)), group
        # and both brokers of the group took a share
        assert {who for who, _ in seen if who.startswith(group)} == {f"{group}@a", f"{group}@b"}


async def test_max_workers_bounds_concurrency(rabbit: Rabbit) -> None:
    channel = rabbit.channel("work")
    router = Router()
    work = router.publisher(channel)
    running, peak = 0, 0
    done = Sink()

    @router.subscriber(channel, max_workers=3)
    async def handle(n: int) -> None:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.05)
        running -= 1
        done.add(n)

    async with rabbit.running(rabbit.broker(router)):
        for n in range(12):
            await work.publish(n)
        await done.wait(12)
    assert peak == 3


async def test_handler_publishes_onward(rabbit: Rabbit) -> None:
    router = Router(prefix=f"{rabbit.unique}.")
    invoices = router.publisher("invoices")
    got = Sink()

    @router.subscriber("orders", group="billing")
    @invoices
    async def bill(order: Order) -> dict[str, Any]:
        return {"order": order.id, "total": 3}

    @router.subscriber("invoices", group="mail")
    async def mail(invoice: dict[str, Any], msg: Message) -> None:
        got.add((invoice, msg.correlation_id))

    orders = router.publisher("orders")
    async with rabbit.running(rabbit.broker(router)):
        await orders.publish({"id": 5, "item": "pen"}, correlation_id="cid-onward")
        await got.wait(1)
    # the onward message carries the incoming correlation id
    assert got.items == [({"order": 5, "total": 3}, "cid-onward")]


async def test_publish_before_any_group_exists_reaches_the_first_group(rabbit: Rabbit) -> None:
    channel = rabbit.channel("early")
    producer = Router()
    early = producer.publisher(channel)
    first, late = Sink(), Sink()

    def group(name: str, sink: Sink) -> Router:
        router = Router()

        @router.subscriber(channel, group=name)
        async def handle(n: int) -> None:
            sink.add(n)

        return router

    async with rabbit.running(rabbit.broker(producer)):
        for n in range(3):
            await early.publish(n)  # no group has a queue yet: kept, not dropped
        async with rabbit.running(rabbit.broker(group("first", first))):
            await first.wait(3)
            async with rabbit.running(rabbit.broker(group("late", late))):
                await early.publish(3)  # from now on every group gets everything
                await late.wait(1)
                await first.wait(4)
                await asyncio.sleep(0.2)
    assert first.items == [0, 1, 2, 3]
    assert late.items == [3]  # a later group gets what is published after it exists


async def test_onward_and_delayed_publishes_wait_for_the_first_group(rabbit: Rabbit) -> None:
    router = Router()
    source, sink_channel = rabbit.channel("source"), rabbit.channel("sink")
    publish = router.publisher(source)
    onward = router.publisher(sink_channel)

    @router.subscriber(source)
    @onward
    async def forward(body: str) -> str:
        return f"fwd {body}"

    got = Sink()
    consumer = Router()

    @consumer.subscriber(sink_channel)
    async def sink(body: str) -> None:
        got.add(body)

    async with rabbit.running(rabbit.broker(router)) as broker:
        await publish.publish("x")  # handled; its result goes to a channel nobody reads yet
        await onward.publish("later", delay=0.2)  # due while nobody reads it either
        await asyncio.sleep(0.5)
        assert await rabbit.dead_letters(broker) == []
        async with rabbit.running(rabbit.broker(consumer)):
            await got.wait(2)
    assert sorted(got.items) == ["fwd x", "later"]


# -- request / reply ----------------------------------------------------------------------


async def test_request_reply_and_100_concurrent_requests(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("price")
    price = router.publisher(channel)
    seen = Sink()
    running, peak = 0, 0

    @router.subscriber(channel, max_workers=16)
    async def quote(order: Order, msg: Message) -> dict[str, Any]:
        nonlocal running, peak
        seen.add((msg.correlation_id, msg.headers.get("x-req")))
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.01)
        running -= 1
        return {"id": order.id, "total": order.id * 3}

    async with rabbit.running(rabbit.broker(router)) as broker:
        reply = await price.request(
            Order(id=7, item="x"), headers={"x-req": "one"}, correlation_id="cid-req"
        )
        assert reply == {"id": 7, "total": 21}
        assert seen.items == [("cid-req", "one")]

        peak = 0
        start = time.perf_counter()
        replies = await asyncio.gather(*(price.request(Order(id=i, item="x")) for i in range(100)))
        ours, ours_peak = time.perf_counter() - start, peak
        assert replies == [{"id": i, "total": i * 3} for i in range(100)]

        # FastStream's own RabbitBroker.request: one request at a time (issue #1318)
        peak = 0
        start = time.perf_counter()
        native = await asyncio.gather(
            *(broker.request(Order(id=i, item="x"), channel, timeout=30) for i in range(100))
        )
        serialized, native_peak = time.perf_counter() - start, peak
        assert [await r.decode() for r in native] == replies

    print(
        f"\n100 concurrent requests (10 ms handler, max_workers=16): msgcore {ours:.3f}s "
        f"(up to {ours_peak} handled at once), RabbitBroker.request {serialized:.3f}s "
        f"({native_peak} at once)"
    )
    # msgcore's requests are in flight together; FastStream's wait for one another
    assert ours_peak > 4
    assert native_peak == 1
    assert serialized >= 100 * 0.01
    assert ours < serialized


async def test_request_times_out_after_the_settings_default(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("slow")
    slow = router.publisher(channel)
    release = asyncio.Event()

    @router.subscriber(channel)
    async def handle(body: str) -> str:
        await release.wait()
        return body

    async with rabbit.running(rabbit.broker(router, request_timeout=0.5)):
        start = time.monotonic()
        with pytest.raises(RequestTimeoutError) as info:
            await slow.request("anyone?")  # no timeout=: Settings.request_timeout applies
        elapsed = time.monotonic() - start
        release.set()
        # an explicit timeout wins over the default
        assert await slow.request("quick", timeout=5) == "quick"
    assert isinstance(info.value, TimeoutError)
    assert 0.5 - EARLY <= elapsed < 0.5 + SLACK


async def test_broker_request_has_a_default_timeout(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("mute")

    @router.subscriber(channel, no_reply=True)
    async def handle(body: str) -> str:
        return body

    async with rabbit.running(rabbit.broker(router, request_timeout=0.3)) as broker:
        start = time.monotonic()
        with pytest.raises(TimeoutError):
            await broker.request("hello", channel)  # FastStream's would wait forever
    assert time.monotonic() - start < 0.3 + SLACK


# -- retries and dead letters ---------------------------------------------------------------


async def test_retries_with_backoff_then_dead_letter(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("jobs")
    jobs = router.publisher(channel)
    attempts = Sink()
    policy = RetryPolicy(max_attempts=3, backoff=0.2, backoff_factor=2.0, jitter=0.0)

    @router.subscriber(channel, group="workers", retry=policy)
    async def work(body: str, msg: Message) -> None:
        attempts.add((msg.attempt, time.monotonic(), msg.headers, msg.correlation_id))
        raise ValueError(f"boom {msg.attempt}")

    async with rabbit.running(rabbit.broker(router)) as broker:
        await jobs.publish("job", headers={"x-origin": "t"}, correlation_id="cid-jobs")
        dead = await rabbit.wait_dead_letters(broker, channel, 1)
        await asyncio.sleep(0.3)  # nothing comes back after the dead letter
        assert len(attempts.items) == 3
        again = await rabbit.dead_letters(broker, channel)

    assert [a for a, _, _, _ in attempts.items] == [1, 2, 3]
    assert {(cid, h.get("x-origin")) for _, _, h, cid in attempts.items} == {("cid-jobs", "t")}
    times = [t for _, t, _, _ in attempts.items]
    # 0.2 s then 0.4 s, never earlier
    assert 0.2 - EARLY <= times[1] - times[0] < 0.2 + SLACK
    assert 0.4 - EARLY <= times[2] - times[1] < 0.4 + SLACK

    (record,) = dead
    assert record.channel == channel
    assert record.group == "workers"
    assert record.body == b"job"
    assert record.attempts == 3
    assert record.reason == "failed 3 of 3 attempts"
    assert record.error == "builtins.ValueError: boom 3"
    assert record.headers == {"x-origin": "t"}
    assert record.correlation_id == "cid-jobs"
    assert abs(record.failed_at - time.time()) < 30
    # reading does not take dead letters out of their queue
    assert again == dead


async def test_retry_goes_to_the_failing_group_only(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("fan")
    fan = router.publisher(channel)
    calls = Sink()

    @router.subscriber(channel, group="flaky", retry=RetryPolicy(max_attempts=2, backoff=0.05))
    async def flaky(body: str, msg: Message) -> None:
        calls.add(("flaky", msg.attempt))
        if msg.attempt == 1:
            raise RuntimeError("once")

    @router.subscriber(channel, group="steady")
    async def steady(body: str, msg: Message) -> None:
        calls.add(("steady", msg.attempt))

    async with rabbit.running(rabbit.broker(router)):
        await fan.publish("x")
        await calls.wait(3)
        await asyncio.sleep(0.3)
    assert sorted(calls.items) == [("flaky", 1), ("flaky", 2), ("steady", 1)]


async def test_invalid_payload_is_dead_lettered_at_once(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("typed")
    typed = router.publisher(channel)
    called = Sink()

    @router.subscriber(channel, max_attempts=5)
    async def handle(order: Order) -> None:
        called.add(order)

    async with rabbit.running(rabbit.broker(router)) as broker:
        await typed.publish({"id": "not a number"})  # fails validation
        # not JSON at all, though it says it is
        await broker.publish(b"{nope", channel, content_type="application/json")
        dead = await rabbit.wait_dead_letters(broker, channel, 2)
        await asyncio.sleep(0.2)

    assert called.items == []
    assert all(d.attempts == 1 for d in dead)
    assert all(d.reason.startswith("invalid payload") for d in dead)
    errors = sorted(d.error or "" for d in dead)
    assert errors[0].startswith("json.decoder.JSONDecodeError") or "JSONDecodeError" in errors[0]
    assert any("ValidationError" in e for e in errors)


async def test_reject_nack_and_ack_exceptions(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("ctl")
    ctl = router.publisher(channel)
    calls = Sink()

    @router.subscriber(channel, retry=RetryPolicy(max_attempts=3, backoff=0.05))
    async def handle(body: str, msg: Message) -> None:
        calls.add((body, msg.attempt))
        if body == "reject":
            raise RejectMessage
        if body == "nack" and msg.attempt == 1:
            raise NackMessage
        if body == "ack":
            raise AckMessage
        if body == "view-nack" and msg.attempt == 1:
            await msg.nack()
        if body == "view-reject":
            await msg.reject()

    async with rabbit.running(rabbit.broker(router)) as broker:
        for body in ("reject", "nack", "ack", "view-nack", "view-reject"):
            await ctl.publish(body)
        dead = await rabbit.wait_dead_letters(broker, channel, 2)
        await calls.wait(7)
        await asyncio.sleep(0.3)

    assert sorted(calls.items) == sorted(
        [
            ("reject", 1),
            ("nack", 1),
            ("nack", 2),
            ("ack", 1),
            ("view-nack", 1),
            ("view-nack", 2),
            ("view-reject", 1),
        ]
    )
    assert sorted((d.body, d.reason, d.attempts) for d in dead) == [
        (b"reject", "rejected by the handler", 1),
        (b"view-reject", "rejected by the handler", 1),
    ]


async def test_attempts_count_across_retries_until_success(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("flaky")
    flaky = router.publisher(channel)
    seen = Sink()

    @router.subscriber(channel, retry=RetryPolicy(max_attempts=4, backoff=0.05))
    async def handle(body: str, msg: Message) -> str:
        seen.add(msg.attempt)
        if msg.attempt < 3:
            raise ConnectionError("try again")
        return "ok"

    async with rabbit.running(rabbit.broker(router)) as broker:
        await flaky.publish("x")
        await seen.wait(3)
        await asyncio.sleep(0.3)
        assert await rabbit.dead_letters(broker, channel) == []
    assert seen.items == [1, 2, 3]


async def test_dead_letters_oldest_first_across_channels(rabbit: Rabbit) -> None:
    router = Router()
    first, second = rabbit.channel("one"), rabbit.channel("two")

    @router.subscriber(first, max_attempts=1)
    async def one(body: str) -> None:
        raise KeyError(body)

    @router.subscriber(second, max_attempts=1)
    async def two(body: str) -> None:
        raise KeyError(body)

    pub_first, pub_second = router.publisher(first), router.publisher(second)
    async with rabbit.running(rabbit.broker(router)) as broker:
        for i in range(3):
            await pub_first.publish(f"a{i}")
            await rabbit.wait_dead_letters(broker, first, i + 1)
            await asyncio.sleep(0.002)  # failed_at has millisecond resolution
            await pub_second.publish(f"b{i}")
            await rabbit.wait_dead_letters(broker, second, i + 1)
            await asyncio.sleep(0.002)
        every = await rabbit.dead_letters(broker)
        limited = await rabbit.dead_letters(broker, limit=2)
        only_first = await rabbit.dead_letters(broker, first)

    assert [d.body for d in every] == [b"a0", b"b0", b"a1", b"b1", b"a2", b"b2"]
    assert [d.body for d in only_first] == [b"a0", b"a1", b"a2"]
    assert [d.body for d in limited] == [b"a0", b"b0"]


# -- delays ---------------------------------------------------------------------------------


@pytest.mark.parametrize("form", ["delay", "not_before"])
async def test_delayed_publish_reaches_every_group_when_due(rabbit: Rabbit, form: str) -> None:
    router = Router()
    channel = rabbit.channel("emails")
    emails = router.publisher(channel)
    received = Sink()

    @router.subscriber(channel, group="send")
    async def send(body: str) -> None:
        received.add(("send", body, time.monotonic()))

    @router.subscriber(channel, group="audit")
    async def audit(body: str) -> None:
        received.add(("audit", body, time.monotonic()))

    delay = 0.7  # not a power of two in ms: takes several hops
    async with rabbit.running(rabbit.broker(router)):
        start = time.monotonic()
        if form == "delay":
            await emails.publish("later", delay=delay)
        else:
            await emails.publish("later", not_before=datetime.now(UTC) + timedelta(seconds=delay))
        await emails.publish("now")  # not held up behind the delayed one
        await received.wait(2)
        assert {b for _, b, _ in received.items} == {"now"}
        await received.wait(4, within=delay + 10)
        await asyncio.sleep(0.1)

    later = [(group, t - start) for group, body, t in received.items if body == "later"]
    assert sorted(g for g, _ in later) == ["audit", "send"]
    for _, arrived in later:
        assert delay - EARLY <= arrived < delay + SLACK, arrived


async def test_priority_is_refused(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("prio")
    prio = router.publisher(channel)

    @router.subscriber(channel)
    async def handle(body: str) -> None: ...

    async with rabbit.running(rabbit.broker(router)):
        with pytest.raises(ConfigurationError, match="quorum"):
            await prio.publish("urgent", priority=9)


async def test_headers_amqp_cannot_carry_are_a_payload_error(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("headers")
    out = router.publisher(channel)
    seen = Sink()

    @router.subscriber(channel)
    async def handle(body: str, msg: Message) -> str:
        seen.add((body, msg.headers))
        return body

    async with rabbit.running(rabbit.broker(router)):
        # refused before the transport by the check every transport shares
        for bad in ({"k": object()}, {"k": {1, 2}}, {1: "a key that is not a str"}):
            with pytest.raises(PayloadError, match=f"channel .{channel}.*nothing was sent"):
                await out.publish("x", headers=bad)  # type: ignore[arg-type]
            with pytest.raises(PayloadError, match="nothing was sent"):
                await out.request("x", headers=bad, timeout=2)  # type: ignore[arg-type]
        with pytest.raises(PayloadError, match="got object"):
            await out.publish("x", headers={"k": object()}, delay=5)  # the wait queue's path
        # and by the adapter, for what reaches it another way (a handler's onward reply)
        with pytest.raises(PayloadError, match=f"channel .{channel}. on RabbitMQ: a header"):
            await out._publish("x", headers={"k": object()})
        await out.publish("ok", headers={"n": 1})
        await seen.wait(1)
        await asyncio.sleep(0.3)  # anything refused would have arrived by now
    assert seen.items == [("ok", {"n": 1})]


# -- crashes and shutdown -------------------------------------------------------------------


async def _crash_while_handling(rabbit: Rabbit, max_attempts: int) -> tuple[Sink, Sink, Any]:
    """Broker A takes the message and dies mid-handler (its connection closes); broker
    B of the same group is running. Returns what A and B saw, and B's broker."""
    channel = rabbit.channel("crash")
    started_a, seen_b = Sink(), Sink()
    hang = asyncio.Event()

    router_a = Router()

    @router_a.subscriber(channel, group="g", max_attempts=max_attempts)
    async def on_a(body: str, msg: Message) -> None:
        started_a.add(msg.attempt)
        await hang.wait()

    router_b = Router()

    @router_b.subscriber(channel, group="g", max_attempts=max_attempts)
    async def on_b(body: str, msg: Message) -> None:
        seen_b.add(msg.attempt)

    sender = Router()
    publish = sender.publisher(channel)
    broker_a, broker_b = rabbit.broker(router_a, sender), rabbit.broker(router_b)
    async with rabbit.running(broker_a):
        await publish.publish("fragile")
        await started_a.wait(1)
        async with rabbit.running(broker_b):
            assert broker_a._connection is not None
            await broker_a._connection.close()  # the process "dies": RabbitMQ requeues
            if max_attempts == 1:
                await rabbit.wait_dead_letters(broker_b, channel, 1)
            else:
                await seen_b.wait(1)
            dead = await rabbit.dead_letters(broker_b, channel)
    return started_a, seen_b, dead


async def test_crashed_workers_message_is_redelivered_to_another(rabbit: Rabbit) -> None:
    started_a, seen_b, dead = await _crash_while_handling(rabbit, max_attempts=3)
    assert started_a.items == [1]
    # the quorum queue counted the unsettled delivery: this is attempt 2
    assert seen_b.items == [2]
    assert dead == []


async def test_message_that_keeps_killing_workers_is_dead_lettered(rabbit: Rabbit) -> None:
    started_a, seen_b, dead = await _crash_while_handling(rabbit, max_attempts=1)
    assert started_a.items == [1]
    assert seen_b.items == []  # not run again
    (record,) = dead
    assert record.attempts == 2
    assert "without being settled" in record.reason


async def test_attempt_header_beyond_max_is_dead_lettered_unrun(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("loop")
    called = Sink()

    @router.subscriber(channel, max_attempts=2)
    async def handle(body: str) -> None:
        called.add(body)

    async with rabbit.running(rabbit.broker(router)) as broker:
        await broker.publish("x", channel, headers={HEADER_ATTEMPT: 3})
        (record,) = await rabbit.wait_dead_letters(broker, channel, 1)
    assert called.items == []
    assert record.attempts == 3


async def test_stop_waits_for_running_handlers_and_hands_back_the_rest(rabbit: Rabbit) -> None:
    channel = rabbit.channel("drain")
    router = Router()
    started, finished = Sink(), Sink()

    @router.subscriber(channel, max_workers=1)
    async def slow(n: int, msg: Message) -> None:
        started.add((n, msg.attempt))
        await asyncio.sleep(0.4)
        finished.add(n)

    sender = Router()
    publish = sender.publisher(channel)
    broker = rabbit.broker(router, sender)
    async with rabbit.running(broker):
        for n in range(3):
            await publish.publish(n)
        await started.wait(1)
        t0 = time.monotonic()
        await broker.stop()  # 2 more are prefetched by this consumer but not started
        stopped_after = time.monotonic() - t0
        await broker.stop()  # twice is harmless

    assert started.items == [(0, 1)]
    assert finished.items == [0]  # the running handler finished
    assert stopped_after >= 0.3

    # the two unstarted messages went back uncounted; nothing was acked twice or lost
    later = Sink()
    router2 = Router()

    @router2.subscriber(channel)
    async def fast(n: int, msg: Message) -> None:
        later.add((n, msg.attempt))

    async with rabbit.running(rabbit.broker(router2)) as broker2:
        await later.wait(2)
        await asyncio.sleep(0.2)
        assert await rabbit.dead_letters(broker2, channel) == []
    assert sorted(later.items) == [(1, 1), (2, 1)]
    assert await rabbit.queue_stats(rabbit_group_queue(channel, None)) == (0, 0)


async def test_handler_past_graceful_timeout_is_cancelled_and_redelivered(
    rabbit: Rabbit,
) -> None:
    channel = rabbit.channel("stuck")
    router = Router()
    started, cancelled = Sink(), Sink()

    @router.subscriber(channel)
    async def stuck(body: str) -> None:
        started.add(body)
        try:
            await asyncio.sleep(60)
        except asyncio.CancelledError:
            cancelled.add(body)
            raise

    sender = Router()
    publish = sender.publisher(channel)
    broker = rabbit.broker(router, sender)
    broker.config.broker_config.graceful_timeout = 0.3
    async with rabbit.running(broker):
        await publish.publish("x")
        await started.wait(1)
        stopping = time.monotonic()
    stopped_after = time.monotonic() - stopping
    assert cancelled.items == ["x"]
    assert 0.3 - EARLY <= stopped_after < 0.3 + SLACK

    again = Sink()
    router2 = Router()

    @router2.subscriber(channel)
    async def fine(body: str, msg: Message) -> None:
        again.add((body, msg.attempt))

    async with rabbit.running(rabbit.broker(router2)):
        await again.wait(1)
    assert again.items == [("x", 2)]  # back in the queue, counted as an attempt


async def test_second_start_is_harmless(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("twice")
    seen = Sink()

    @router.subscriber(channel)
    async def handle(n: int) -> None:
        seen.add(n)

    async with rabbit.running(rabbit.broker(router)) as broker:
        await broker.start()
        assert (await rabbit.queue_stats(rabbit_group_queue(channel, None)))[1] == 1
        for n in range(5):
            await broker.publish(n, channel)
        await seen.wait(5)
        await asyncio.sleep(0.1)
    assert sorted(seen.items) == [0, 1, 2, 3, 4]


async def test_restart_and_connect_without_start(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("again")
    again = router.publisher(channel)
    seen = Sink()

    @router.subscriber(channel)
    async def handle(n: int) -> None:
        seen.add(n)

    broker = rabbit.broker(router)
    async with rabbit.running(broker):
        await again.publish(1)
        await seen.wait(1)
    async with rabbit.running(broker):  # the same broker starts again
        await again.publish(2)
        await seen.wait(2)
    other = Router()
    send = other.publisher(channel)
    publisher_only = rabbit.broker(other)
    async with publisher_only:  # connected, never started: publishing works
        await send.publish(3)
    async with rabbit.running(broker):
        await seen.wait(3)
    assert seen.items == [1, 2, 3]


# -- bind-time errors, settings, AsyncAPI, TestClient ----------------------------------------


def test_unsupported_declarations_are_refused(rabbit: Rabbit) -> None:
    def bind(channel: str, **options: Any) -> None:
        router = Router()

        @router.subscriber(channel, **options)
        async def handle(body: str) -> None: ...

        create_broker(router, settings=rabbit.settings())

    with pytest.raises(ConfigurationError, match="positive"):
        bind(rabbit.channel("leased"), lease_seconds=0)
    # refused on every transport since names are checked alike (docs/declare-once.md)
    with pytest.raises(ConfigurationError, match="the same way by every transport"):
        bind(rabbit.channel("orders.*"))
    with pytest.raises(ConfigurationError, match="the same way by every transport"):
        bind(rabbit.channel("orders.#"))
    with pytest.raises(ConfigurationError, match="over 180"):
        bind(rabbit.channel("x" * 240))
    # what is left to RabbitMQ's own check: names an exchange of its own makes too long
    with pytest.raises(ConfigurationError, match="too long"):
        router = Router()
        router.publisher(rabbit.channel("x" * 150))
        create_broker(router, settings=rabbit.settings(rabbit=RabbitSettings(exchange="e" * 100)))
    with pytest.raises(ConfigurationError, match="exchange"):
        create_broker(Router(), settings=rabbit.settings(rabbit=RabbitSettings(exchange="")))
    with pytest.raises(ConfigurationError, match="the same way by every transport"):
        router = Router()
        router.publisher(rabbit.channel("a.*"))
        create_broker(router, settings=rabbit.settings())


async def test_lease_seconds_sets_the_connection_heartbeat(rabbit: Rabbit) -> None:
    router = Router()

    @router.subscriber(rabbit.channel("slow"), lease_seconds=7.5)
    async def slow(body: str) -> None: ...

    @router.subscriber(rabbit.channel("fast"), lease_seconds=4)
    async def fast(body: str) -> None: ...

    broker = rabbit.broker(router)
    async with broker:
        assert broker._connection is not None
        # RabbitMQ drops a worker it has not heard from for a heartbeat, and gives its
        # unacked messages to another: the shortest lease of the broker's subscribers
        assert broker._connection.transport.connection.heartbeat_timeout == 4

    # an explicit ?heartbeat= longer than a lease would break it: refused at bind time
    leased = Router()

    @leased.subscriber(rabbit.channel("leased"), lease_seconds=5)
    async def handle(body: str) -> None: ...

    url = f"{rabbit.url.rstrip('/')}/?heartbeat=60"
    with pytest.raises(ConfigurationError, match="heartbeat=60"):
        create_broker(leased, settings=rabbit.settings(url=url))
    create_broker(leased, settings=rabbit.settings(url=f"{rabbit.url.rstrip('/')}/?heartbeat=5"))


def test_settings_reach_the_broker(rabbit: Rabbit) -> None:
    router = Router()

    @router.subscriber(rabbit.channel("s"), max_workers=50)
    async def handle(body: str) -> None: ...

    quiet = rabbit.broker(router, log_messages=False)
    loud = rabbit.broker(Router(), log_messages=True)
    assert quiet.config.logger.log_level == logging.DEBUG
    assert loud.config.logger.log_level == logging.INFO
    (sub,) = [s for s in quiet.subscribers if isinstance(s, MsgcoreRabbitSubscriber)]
    assert sub.channel is not None
    assert sub.channel.prefetch_count == 50  # max(prefetch=32, max_workers)
    assert sub.queue.arguments == {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": "",
        "x-dead-letter-routing-key": f"{rabbit.channel('s')}.default.dead",
    }


def test_asyncapi_documents_publishers_and_subscribers(rabbit: Rabbit) -> None:
    router = Router()
    out = router.publisher(rabbit.channel("out"), description="results")

    @router.subscriber(rabbit.channel("in"), group="g")
    @out
    async def handle(order: Order) -> Order:
        return order

    spec = AsyncAPI(rabbit.broker(router)).to_specification().to_json()
    channels = json.dumps(json.loads(spec)["channels"])
    # the group's queue on msgcore's exchange, and the publisher's routing key
    assert f"{rabbit.channel('in')}.g:{rabbit.exchange}" in channels
    assert f"{rabbit.channel('out')}:{rabbit.exchange}" in channels
    assert ".wait." not in channels
    assert ".dead" not in channels


async def test_test_client_runs_handlers_in_memory(rabbit: Rabbit) -> None:
    router = Router()
    channel = rabbit.channel("mem")
    mem = router.publisher(channel)
    seen = Sink()

    @router.subscriber(channel, group="a")
    async def handle(order: Order, msg: Message) -> dict[str, int]:
        seen.add((order.id, msg.attempt))
        return {"total": order.id * 2}

    broker = create_broker(router, settings=rabbit.settings())
    async with TestClient(broker) as test_broker:
        await mem.publish(Order(id=1, item="a"))
        await test_broker.publish({"id": 2, "item": "b"}, channel)
        await mem.publish(Order(id=3, item="c"), delay=30)  # no waiting in memory
        assert await mem.request(Order(id=4, item="d")) == {"total": 8}
    assert seen.items == [(1, 1), (2, 1), (3, 1), (4, 1)]


async def test_a_server_that_never_answers_fails_the_connect_in_time(tmp_path: Path) -> None:
    """It takes the TCP connection and says nothing: aio-pika's robust connect waited for
    ever (and at shutdown retried for ever), so a client or worker hung at start."""
    silent: list[asyncio.StreamWriter] = []

    async def accept(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        silent.append(writer)

    server = await asyncio.start_server(accept, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    settings = Settings(
        url=f"amqp://u:s3cret@127.0.0.1:{port}/",
        store_url=f"sqlite:///{tmp_path / 'store.db'}",
        rabbit=RabbitSettings(connect_timeout=1),
    )
    try:
        started = time.monotonic()
        with pytest.raises(BrokerConnectionError, match=r"no answer within 1\.0s") as caught:
            async with Client(settings=settings):
                pass
        assert time.monotonic() - started < 10
        assert "s3cret" not in str(caught.value)
    finally:
        for writer in silent:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_a_virtual_host_that_does_not_exist_is_named(
    rabbit_url: str, tmp_path: Path, unique: str
) -> None:
    """aiormq's bare InvalidFrameError ("Expected one of ['Connection.OpenOk'], got
    <Connection.Close object at 0x...>") reached the caller of Client()."""
    url = rabbit_url.rstrip("/") + f"/{unique}-novhost"
    settings = Settings(url=url, store_url=f"sqlite:///{tmp_path / 'store.db'}")
    with pytest.raises(BrokerConnectionError, match=f"virtual host '{unique}-novhost'"):
        async with Client(settings=settings):
            pass
