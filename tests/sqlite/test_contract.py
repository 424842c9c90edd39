"""FastStream contract tests for the SQLite broker.

Every behavioural test takes the ``transport`` fixture and so runs twice: once against
``TestSqliteBroker`` (in memory, handlers run inline in ``publish``) and once against a
real ``SqliteBroker`` on a fresh database file. Behaviour that only exists on the real
transport (retries with backoff, leases, delays, priorities, dead letters, consumer
groups across broker instances, pulling with ``get_one``) is tested against the file
only, in tests whose names end in ``_real``.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from faststream import AckPolicy, Depends
from faststream.exceptions import AckMessage, NackMessage, RejectMessage, SubscriberNotFound
from faststream.message import AckStatus
from faststream.middlewares import BaseMiddleware
from faststream.specification import AsyncAPI
from pydantic import BaseModel

import msgcore
from msgcore.sqlite import (
    DeadLetter,
    SqliteBroker,
    SqliteMessage,
    SqliteResponse,
    SqliteRoute,
    SqliteRouter,
    TestSqliteBroker,
)

REPO_ROOT = Path(__file__).resolve().parents[2]
TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
FAST_RETRY = msgcore.RetryPolicy(max_attempts=3, backoff=0.05)


# -- harness --------------------------------------------------------------------------


@dataclass(frozen=True)
class Transport:
    """How a test runs its broker: ``memory`` (TestSqliteBroker) or ``real`` (a file)."""

    kind: str
    url: str

    @property
    def real(self) -> bool:
        return self.kind == "real"

    def broker(self, **kwargs: Any) -> SqliteBroker:
        kwargs.setdefault("logger", None)
        return SqliteBroker(self.url, **kwargs)

    @asynccontextmanager
    async def run(self, broker: SqliteBroker) -> AsyncIterator[SqliteBroker]:
        if self.real:
            async with broker:
                await broker.start()
                yield broker
        else:
            async with TestSqliteBroker(broker) as br:
                yield br


@pytest.fixture(params=["memory", "real"])
def transport(request: pytest.FixtureRequest, db_url: str) -> Transport:
    return Transport(request.param, db_url)


@pytest.fixture
def real(db_url: str) -> Transport:
    return Transport("real", db_url)


async def wait_until(
    predicate: Callable[[], Any | Awaitable[Any]],
    *,
    within: float = 5.0,
    interval: float = 0.005,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` (sync or async) until it is truthy, failing after ``within`` s."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {within}s waiting for {what}")
        await asyncio.sleep(interval)


class Sink:
    """What handlers saw, with a deadline-bounded wait for a count."""

    def __init__(self) -> None:
        self.items: list[Any] = []

    def add(self, item: Any) -> None:
        self.items.append(item)

    async def wait(self, n: int, within: float = 5.0) -> list[Any]:
        await wait_until(
            lambda: len(self.items) >= n, within=within, what=f"{n} items (have {self.items!r})"
        )
        return self.items


class Order(BaseModel):
    id: int
    item: str


# -- consume and publish ---------------------------------------------------------------


def _typed_handler(kind: str, sink: Sink) -> Callable[..., Awaitable[None]]:
    if kind == "dict":

        async def handle_dict(body: dict[str, Any]) -> None:
            sink.add(body)

        return handle_dict
    if kind == "str":

        async def handle_str(body: str) -> None:
            sink.add(body)

        return handle_str
    if kind == "bytes":

        async def handle_bytes(body: bytes) -> None:
            sink.add(body)

        return handle_bytes
    if kind == "int":

        async def handle_int(body: int) -> None:
            sink.add(body)

        return handle_int
    assert kind == "model"

    async def handle_model(body: Order) -> None:
        sink.add(body)

    return handle_model


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("dict", {"id": 1, "nested": {"a": [1, 2]}}),
        ("str", "hello, wörld"),
        ("bytes", b"\x00\x01binary\xff"),
        ("int", 42),
        ("model", Order(id=7, item="book")),
    ],
)
async def test_consume_decodes_payload(
    transport: Transport, unique: str, kind: str, payload: Any
) -> None:
    broker = transport.broker()
    sink = Sink()
    broker.subscriber(unique)(_typed_handler(kind, sink))

    async with transport.run(broker) as br:
        await br.publish(payload, unique)
        [got] = await sink.wait(1)

    assert got == payload
    assert type(got) is type(payload)


async def test_handler_receives_message_object(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()

    @broker.subscriber(unique)
    async def handle(body: dict[str, Any], msg: SqliteMessage) -> None:
        sink.add((body, msg))

    async with transport.run(broker) as br:
        await br.publish({"a": 1}, unique, correlation_id="cid-1", message_id="mid-1")
        [(body, msg)] = await sink.wait(1)

    assert body == {"a": 1}
    assert await msg.decode() == {"a": 1}
    assert msg.correlation_id == "cid-1"
    assert msg.message_id == "mid-1"
    assert msg.attempt == 1
    assert msg.content_type == "application/json"


async def test_publish_through_publisher_object(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()
    publisher = broker.publisher(unique, headers={"x-source": "publisher"})

    @broker.subscriber(unique)
    async def handle(body: str, msg: SqliteMessage) -> None:
        sink.add((body, msg.headers))

    async with transport.run(broker):
        await publisher.publish("first")
        await publisher.publish("second", headers={"x-extra": "1"})
        got = await sink.wait(2)

    assert [body for body, _ in got] == ["first", "second"]
    assert got[0][1]["x-source"] == "publisher"
    assert got[1][1]["x-source"] == "publisher"
    assert got[1][1]["x-extra"] == "1"


async def test_handler_return_value_is_published_onward(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()
    source, out = f"{unique}.in", f"{unique}.out"

    @broker.subscriber(source)
    @broker.publisher(out)
    async def double(n: int) -> int:
        return n * 2

    @broker.subscriber(out)
    async def collect(n: int) -> None:
        sink.add(n)

    async with transport.run(broker) as br:
        for n in (1, 2, 3):
            await br.publish(n, source)
        got = await sink.wait(3)

    assert sorted(got) == [2, 4, 6]


async def test_sqlite_response_sets_headers_on_onward_message(
    transport: Transport, unique: str
) -> None:
    broker = transport.broker()
    sink = Sink()
    source, out = f"{unique}.in", f"{unique}.out"

    @broker.subscriber(source)
    @broker.publisher(out)
    async def forward(body: str) -> SqliteResponse:
        return SqliteResponse(body.upper(), headers={"x-stage": "forwarded"})

    @broker.subscriber(out)
    async def collect(body: str, msg: SqliteMessage) -> None:
        sink.add((body, msg.headers))

    async with transport.run(broker) as br:
        await br.publish("hello", source)
        [(body, headers)] = await sink.wait(1)

    assert body == "HELLO"
    assert headers["x-stage"] == "forwarded"


# -- request / reply ---------------------------------------------------------------------


async def test_request_returns_reply(transport: Transport, unique: str) -> None:
    broker = transport.broker()

    @broker.subscriber(unique)
    async def echo(body: dict[str, int]) -> dict[str, int]:
        return {"doubled": body["n"] * 2}

    async with transport.run(broker) as br:
        reply = await br.request({"n": 21}, unique, timeout=5.0)

    assert await reply.decode() == {"doubled": 42}


async def test_request_reply_with_sqlite_response_headers(
    transport: Transport, unique: str
) -> None:
    broker = transport.broker()

    @broker.subscriber(unique)
    async def answer(body: str) -> SqliteResponse:
        return SqliteResponse(f"re: {body}", headers={"x-answered-by": "answer"})

    async with transport.run(broker) as br:
        reply = await br.request("ping", unique, timeout=5.0)

    assert await reply.decode() == "re: ping"
    assert reply.headers["x-answered-by"] == "answer"


async def test_request_correlation_id_round_trips(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    seen = Sink()

    @broker.subscriber(unique)
    async def answer(body: str, msg: SqliteMessage) -> str:
        seen.add(msg.correlation_id)
        return body[::-1]

    async with transport.run(broker) as br:
        reply = await br.request("abc", unique, timeout=5.0, correlation_id=f"cid-{unique}")
        default_reply = await br.request("xyz", unique, timeout=5.0)

    assert await reply.decode() == "cba"
    assert reply.correlation_id == f"cid-{unique}"
    assert seen.items[0] == f"cid-{unique}"
    # Without an explicit id the broker generates one, and the reply carries it back.
    assert seen.items[1]
    assert default_reply.correlation_id == seen.items[1]
    assert await default_reply.decode() == "zyx"


async def test_publisher_request(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    publisher = broker.publisher(unique)

    @broker.subscriber(unique)
    async def answer(n: int) -> int:
        return n + 1

    async with transport.run(broker):
        reply = await publisher.request(41, timeout=5.0)

    assert await reply.decode() == 42


async def test_many_concurrent_requests_get_their_own_replies(
    transport: Transport, unique: str
) -> None:
    broker = transport.broker()

    @broker.subscriber(unique, max_workers=8)
    async def square(body: dict[str, int]) -> dict[str, int]:
        await asyncio.sleep(0)
        return {"i": body["i"], "sq": body["i"] ** 2}

    async with transport.run(broker) as br:
        replies = await asyncio.wait_for(
            asyncio.gather(*(br.request({"i": i}, unique, timeout=20.0) for i in range(200))),
            timeout=30.0,
        )
        decoded = [await r.decode() for r in replies]

    assert decoded == [{"i": i, "sq": i * i} for i in range(200)]
    assert len({r.correlation_id for r in replies}) == 200


async def test_request_to_unserved_queue_fails(transport: Transport, unique: str) -> None:
    broker = transport.broker()

    @broker.subscriber(f"{unique}.served")
    async def served(body: Any) -> None:
        return None

    async with transport.run(broker) as br:
        start = time.monotonic()
        if transport.real:
            # The message is stored, nobody answers: the wait ends at the timeout.
            with pytest.raises(msgcore.RequestTimeoutError) as info:
                await br.request("anyone?", f"{unique}.nobody", timeout=0.3)
            assert isinstance(info.value, TimeoutError)
            assert "0.3" in str(info.value)
        else:
            # FastStream's test brokers refuse a request nobody in memory can answer.
            with pytest.raises(SubscriberNotFound):
                await br.request("anyone?", f"{unique}.nobody", timeout=0.3)
        elapsed = time.monotonic() - start

    assert elapsed < 2.0
    if transport.real:
        assert elapsed >= 0.29


# -- routers, middlewares, dependencies ---------------------------------------------------


async def test_router_prefix_and_nested_routers(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()
    outer = SqliteRouter(prefix=f"{unique}.outer.")
    inner = SqliteRouter(prefix="inner.")

    inner_sub = inner.subscriber("jobs")
    outer_sub = outer.subscriber("jobs")

    @inner_sub
    async def inner_jobs(body: str) -> None:
        sink.add(("inner", body))

    @outer_sub
    async def outer_jobs(body: str) -> None:
        sink.add(("outer", body))

    outer.include_router(inner)
    broker.include_router(outer)

    assert inner_sub.queue == f"{unique}.outer.inner.jobs"
    assert outer_sub.queue == f"{unique}.outer.jobs"

    async with transport.run(broker) as br:
        await br.publish("a", f"{unique}.outer.inner.jobs")
        await br.publish("b", f"{unique}.outer.jobs")
        got = await sink.wait(2)

    assert sorted(got) == [("inner", "a"), ("outer", "b")]


async def test_include_router_prefix_routes_and_router_publisher(
    transport: Transport, unique: str
) -> None:
    broker = transport.broker()
    sink = Sink()

    async def route_handler(body: str) -> str:
        return f"routed:{body}"

    router = SqliteRouter(
        prefix="api.",
        handlers=[SqliteRoute(route_handler, "declared", no_reply=True)],
    )

    @router.subscriber("work")
    @router.publisher("done")
    async def work(body: str) -> str:
        return body.upper()

    @router.subscriber("done")
    async def done(body: str) -> None:
        sink.add(("done", body))

    broker.include_router(router, prefix=f"{unique}.")

    @broker.subscriber(f"{unique}.api.declared", group="observer")
    async def observer(body: str) -> None:
        sink.add(("observer", body))

    async with transport.run(broker) as br:
        await br.publish("x", f"{unique}.api.work")
        await br.publish("y", f"{unique}.api.declared")
        got = await sink.wait(2)

    assert sorted(got) == [("done", "X"), ("observer", "y")]


async def test_broker_constructor_routers(transport: Transport, unique: str) -> None:
    sink = Sink()
    router = SqliteRouter(prefix=f"{unique}.")

    @router.subscriber("q")
    async def handle(body: int) -> None:
        sink.add(body)

    broker = transport.broker(routers=[router])
    async with transport.run(broker) as br:
        await br.publish(5, f"{unique}.q")
        assert await sink.wait(1) == [5]


def _recording_middleware(name: str, log: list[tuple[str, str, str]]) -> type[BaseMiddleware]:
    class Recording(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            log.append((name, "consume", msg.raw_message.queue))
            return await call_next(msg)

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            log.append((name, "publish", cmd.destination))
            return await call_next(cmd)

    Recording.__name__ = f"Recording_{name}"
    return Recording


async def test_broker_and_router_middlewares(transport: Transport, unique: str) -> None:
    log: list[tuple[str, str, str]] = []
    broker = transport.broker(middlewares=[_recording_middleware("broker", log)])
    router = SqliteRouter(prefix=f"{unique}.r.", middlewares=[_recording_middleware("router", log)])
    sink = Sink()
    b_queue, r_queue = f"{unique}.b", f"{unique}.r.q"

    @broker.subscriber(b_queue)
    async def on_broker(body: str) -> None:
        sink.add(("broker", body))

    @router.subscriber("q")
    async def on_router(body: str) -> None:
        sink.add(("router", body))

    broker.include_router(router, middlewares=[_recording_middleware("include", log)])

    async with transport.run(broker) as br:
        await br.publish("one", b_queue)
        await sink.wait(1)
        await br.publish("two", r_queue)
        await sink.wait(2)

    assert ("broker", "publish", b_queue) in log
    assert ("broker", "publish", r_queue) in log

    consumes_b = [(n, q) for n, kind, q in log if kind == "consume" and q == b_queue]
    consumes_r = [(n, q) for n, kind, q in log if kind == "consume" and q == r_queue]
    # Broker-level middlewares wrap every subscriber; router-level ones only theirs,
    # broker outermost.
    assert consumes_b == [("broker", b_queue)]
    assert [n for n, _ in consumes_r] == ["broker", "include", "router"]


async def test_broker_router_and_subscriber_dependencies(transport: Transport, unique: str) -> None:
    calls: list[str] = []

    def broker_dep() -> None:
        calls.append("broker")

    def router_dep() -> None:
        calls.append("router")

    def include_dep() -> None:
        calls.append("include")

    def subscriber_dep() -> None:
        calls.append("subscriber")

    def tenant(msg: SqliteMessage) -> str:
        return str(msg.headers.get("x-tenant", "none"))

    broker = transport.broker(dependencies=[Depends(broker_dep)])
    router = SqliteRouter(prefix=f"{unique}.", dependencies=[Depends(router_dep)])
    sink = Sink()

    @router.subscriber("q", dependencies=[Depends(subscriber_dep)])
    async def handle(body: str, who: str = Depends(tenant)) -> None:
        calls.append("handler")
        sink.add((body, who))

    broker.include_router(router, dependencies=[Depends(include_dep)])

    async with transport.run(broker) as br:
        await br.publish("x", f"{unique}.q", headers={"x-tenant": "acme"})
        await sink.wait(1)

    assert sink.items == [("x", "acme")]
    assert sorted(calls) == sorted(["broker", "include", "router", "subscriber", "handler"])
    assert calls[-1] == "handler"


# -- acknowledgement ------------------------------------------------------------------


async def test_manual_ack(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()

    @broker.subscriber(unique, ack_policy=AckPolicy.MANUAL)
    async def handle(body: str, msg: SqliteMessage) -> None:
        await msg.ack()
        sink.add(msg)

    async with transport.run(broker) as br:
        await br.publish("x", unique)
        [msg] = await sink.wait(1)
        assert msg.committed is AckStatus.ACKED
        if transport.real:
            await wait_until(lambda: _depth_is(br, unique, 0), what="the acked row to be deleted")
            assert await br.dead_letters(unique) == []


async def _depth_is(broker: SqliteBroker, queue: str, n: int) -> bool:
    return await broker.queue_depth(queue) == n


@pytest.mark.parametrize(
    ("exc", "status"),
    [
        (AckMessage, AckStatus.ACKED),
        (NackMessage, AckStatus.NACKED),
        (RejectMessage, AckStatus.REJECTED),
    ],
)
async def test_raising_ack_exceptions_settles_message(
    transport: Transport, unique: str, exc: type[Exception], status: AckStatus
) -> None:
    broker = transport.broker()
    seen = Sink()

    @broker.subscriber(unique, retry=FAST_RETRY)
    async def handle(body: str, msg: SqliteMessage) -> None:
        seen.add(msg)
        if msg.attempt == 1:
            raise exc()

    async with transport.run(broker) as br:
        await br.publish("x", unique)
        first = (await seen.wait(1))[0]
        await wait_until(lambda: first.committed is not None, what="the settlement")
        assert first.committed is status


async def test_nack_redelivers_with_next_attempt_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    attempts = Sink()

    @broker.subscriber(unique, retry=FAST_RETRY)
    async def handle(body: str, msg: SqliteMessage) -> None:
        attempts.add((msg.attempt, msg.message_id, time.monotonic()))
        if msg.attempt == 1:
            raise NackMessage()

    async with real.run(broker) as br:
        await br.publish("x", unique, message_id=f"m-{unique}")
        got = await attempts.wait(2)
        await wait_until(lambda: _depth_is(br, unique, 0), what="the ack of attempt 2")
        assert await br.dead_letters(unique) == []

    assert [a for a, _, _ in got] == [1, 2]
    assert {m for _, m, _ in got} == {f"m-{unique}"}
    # The subscriber's backoff (0.05 s) applies to a nack without a delay.
    assert got[1][2] - got[0][2] >= 0.045


async def test_manual_nack_with_delay_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    attempts = Sink()

    @broker.subscriber(unique, ack_policy=AckPolicy.MANUAL, retry=FAST_RETRY)
    async def handle(body: str, msg: SqliteMessage) -> None:
        attempts.add((msg.attempt, time.monotonic()))
        if msg.attempt == 1:
            await msg.nack(delay=0.3)
        else:
            await msg.ack()

    async with real.run(broker) as br:
        await br.publish("x", unique)
        got = await attempts.wait(2)
        await wait_until(lambda: _depth_is(br, unique, 0), what="the final ack")

    assert [a for a, _ in got] == [1, 2]
    assert got[1][1] - got[0][1] >= 0.28


async def test_reject_dead_letters_without_redelivery_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    calls = Sink()

    @broker.subscriber(unique, retry=FAST_RETRY)
    async def handle(body: dict[str, Any]) -> None:
        calls.add(body)
        raise RejectMessage()

    async with real.run(broker) as br:
        await br.publish({"k": 1}, unique, headers={"x-origin": "test"})
        await calls.wait(1)
        await wait_until(lambda: _dead_letter_count(br, unique, 1), what="the rejected dead letter")
        [dead] = await br.dead_letters(unique)
        # No row is left that could be delivered again.
        assert await br.queue_depth(unique) == 0

    assert len(calls.items) == 1
    assert isinstance(dead, DeadLetter)
    assert dead.queue == unique
    assert "reject" in dead.reason
    assert json.loads(dead.body) == {"k": 1}
    assert dead.headers["x-origin"] == "test"
    assert dead.attempts == 1


async def _dead_letter_count(broker: SqliteBroker, queue: str, n: int) -> bool:
    return len(await broker.dead_letters(queue)) >= n


async def test_raising_handler_retries_with_backoff_then_dead_letters_real(
    real: Transport, unique: str
) -> None:
    broker = real.broker()
    attempts = Sink()

    @broker.subscriber(unique, retry=FAST_RETRY)
    async def handle(body: str, msg: SqliteMessage) -> None:
        attempts.add((msg.attempt, time.monotonic()))
        raise ValueError(f"boom on attempt {msg.attempt}")

    async with real.run(broker) as br:
        await br.publish(
            "payload",
            unique,
            headers={"x-origin": "retry-test", "traceparent": TRACEPARENT},
            correlation_id=f"cid-{unique}",
        )
        got = await attempts.wait(3)
        await wait_until(lambda: _dead_letter_count(br, unique, 1), what="the dead letter")
        [dead] = await br.dead_letters(unique)
        assert await br.queue_depth(unique) == 0

    assert [a for a, _ in got] == [1, 2, 3]
    # Exponential backoff: 0.05 s, then 0.1 s (plus up to 10 % jitter).
    assert got[1][1] - got[0][1] >= 0.045
    assert got[2][1] - got[1][1] >= 0.095
    assert len(attempts.items) == 3
    assert dead.attempts == 3
    assert "3 of 3" in dead.reason
    assert dead.error is not None
    assert "ValueError" in dead.error
    assert "boom on attempt 3" in dead.error
    assert dead.headers["x-origin"] == "retry-test"
    assert dead.headers["traceparent"] == TRACEPARENT
    assert dead.correlation_id == f"cid-{unique}"
    assert dead.body == b"payload"


async def test_invalid_payload_dead_lettered_immediately_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    calls = Sink()

    @broker.subscriber(unique, retry=FAST_RETRY)
    async def handle(order: Order) -> None:
        calls.add(order)

    async with real.run(broker) as br:
        await br.publish({"not": "an order"}, unique)
        await wait_until(lambda: _dead_letter_count(br, unique, 1), what="the dead letter")
        [dead] = await br.dead_letters(unique)
        assert await br.queue_depth(unique) == 0

    assert calls.items == []
    assert "invalid payload" in dead.reason
    assert dead.attempts == 1
    assert dead.error is not None
    assert "ValidationError" in dead.error


async def test_handler_errors_propagate_to_publisher_memory(db_url: str, unique: str) -> None:
    """In memory there is no retry store: the handler's exception reaches the test."""
    broker = SqliteBroker(db_url, logger=None)

    @broker.subscriber(f"{unique}.boom")
    async def boom(body: str) -> None:
        raise ValueError("boom")

    @broker.subscriber(f"{unique}.typed")
    async def typed(order: Order) -> None:
        return None

    async with TestSqliteBroker(broker) as br:
        with pytest.raises(ValueError, match="boom"):
            await br.publish("x", f"{unique}.boom")
        with pytest.raises(Exception, match="validation error"):
            await br.publish({"not": "an order"}, f"{unique}.typed")
        boom.mock.assert_called_once_with("x")


# -- pulling: get_one and async iteration ------------------------------------------------
# TestSqliteBroker, like FastStream's own test brokers, does not simulate pulling.


async def test_get_one_returns_message_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    subscriber = broker.subscriber(unique)

    async with real.run(broker) as br:
        await br.publish({"pulled": True}, unique, headers={"x-h": "1"})
        msg = await subscriber.get_one(timeout=5.0)
        assert msg is not None
        assert await msg.decode() == {"pulled": True}
        assert msg.headers["x-h"] == "1"
        assert msg.attempt == 1
        await msg.ack()
        await wait_until(lambda: _depth_is(br, unique, 0), what="the pulled row's ack")


async def test_get_one_returns_none_after_timeout_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    subscriber = broker.subscriber(unique)

    async with real.run(broker):
        start = time.monotonic()
        msg = await subscriber.get_one(timeout=0.3)
        elapsed = time.monotonic() - start

    assert msg is None
    assert 0.28 <= elapsed < 2.0


async def test_get_one_waits_for_a_message_published_later_real(
    real: Transport, unique: str
) -> None:
    broker = real.broker()
    subscriber = broker.subscriber(unique)

    async with real.run(broker) as br:

        async def publish_later() -> None:
            await asyncio.sleep(0.1)
            await br.publish("late", unique)

        task = asyncio.create_task(publish_later())
        msg = await subscriber.get_one(timeout=5.0)
        await task
        assert msg is not None
        assert await msg.decode() == "late"
        await msg.ack()


async def test_get_one_nack_makes_message_available_again_real(
    real: Transport, unique: str
) -> None:
    broker = real.broker()
    subscriber = broker.subscriber(unique)

    async with real.run(broker) as br:
        await br.publish("again", unique)
        first = await subscriber.get_one(timeout=5.0)
        assert first is not None
        await first.nack(delay=0)
        second = await subscriber.get_one(timeout=5.0)
        assert second is not None
        assert await second.decode() == "again"
        assert second.attempt == 2
        await second.ack()


async def test_get_one_in_named_group_sees_messages_published_after_start_real(
    real: Transport, unique: str
) -> None:
    broker = real.broker()
    subscriber = broker.subscriber(unique, group="puller")

    async with real.run(broker) as br:
        await br.publish("published after start", unique)
        msg = await subscriber.get_one(timeout=0.5)
        assert msg is not None
        assert await msg.decode() == "published after start"
        await msg.ack()


async def test_async_iteration_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    subscriber = broker.subscriber(unique)

    async with real.run(broker) as br:
        await br.publish_batch("a", "b", "c", queue=unique)
        got = []

        async def drain() -> None:
            async with aclosing(aiter(subscriber)) as messages:
                async for msg in messages:
                    got.append(await msg.decode())
                    await msg.ack()
                    if len(got) == 3:
                        break

        await asyncio.wait_for(drain(), timeout=5.0)
        await wait_until(lambda: _depth_is(br, unique, 0), what="the acks")

    assert got == ["a", "b", "c"]


# -- consumer groups -----------------------------------------------------------------


async def test_consumer_groups_fan_out(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    billing, shipping = Sink(), Sink()

    @broker.subscriber(unique, group="billing")
    async def bill(n: int) -> None:
        billing.add(n)

    @broker.subscriber(unique, group="shipping")
    async def ship(n: int) -> None:
        shipping.add(n)

    async with transport.run(broker) as br:
        for n in range(5):
            await br.publish(n, unique)
        await billing.wait(5)
        await shipping.wait(5)

    assert sorted(billing.items) == list(range(5))
    assert sorted(shipping.items) == list(range(5))


async def test_subscribers_in_one_group_compete(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    handled = Sink()

    @broker.subscriber(unique, group="workers")
    async def worker_a(n: int) -> None:
        handled.add(("a", n))

    @broker.subscriber(unique, group="workers")
    async def worker_b(n: int) -> None:
        handled.add(("b", n))

    async with transport.run(broker) as br:
        for n in range(20):
            await br.publish(n, unique)
        await handled.wait(20)
        if transport.real:
            await wait_until(lambda: _depth_is(br, unique, 0), what="all acks")
            # Nothing more arrives once every row is acked.
            await asyncio.sleep(0.05)

    assert sorted(n for _, n in handled.items) == list(range(20))


async def test_groups_across_broker_instances_real(real: Transport, unique: str) -> None:
    """Two brokers on one file (as two processes would be): groups fan out, members compete."""
    audit, workers = Sink(), Sink()
    b1, b2, producer = real.broker(), real.broker(), real.broker()

    @b1.subscriber(unique, group="audit")
    async def audit_handler(n: int) -> None:
        audit.add(n)

    @b1.subscriber(unique, group="workers")
    async def worker_1(n: int) -> None:
        workers.add(("b1", n))

    @b2.subscriber(unique, group="workers")
    async def worker_2(n: int) -> None:
        workers.add(("b2", n))

    async with real.run(b1), real.run(b2), producer:
        for n in range(30):
            await producer.publish(n, unique)
        await audit.wait(30)
        await workers.wait(30)
        await wait_until(lambda: _depth_is(producer, unique, 0), what="all acks")

    assert sorted(audit.items) == list(range(30))
    assert sorted(n for _, n in workers.items) == list(range(30))


# -- delays and priorities (real transport only) --------------------------------------


async def test_delayed_publish_not_delivered_before_delay_real(
    real: Transport, unique: str
) -> None:
    broker = real.broker()
    received = Sink()

    @broker.subscriber(unique)
    async def handle(body: str) -> None:
        received.add((body, time.time()))

    async with real.run(broker) as br:
        published_at = time.time()
        await br.publish("later", unique, delay=0.5)
        await br.publish("now", unique)
        await received.wait(1)
        assert [b for b, _ in received.items] == ["now"]
        await received.wait(2)

    (now_body, _), (later_body, later_at) = received.items
    assert (now_body, later_body) == ("now", "later")
    assert later_at - published_at >= 0.5


@pytest.mark.parametrize("form", ["datetime", "epoch"])
async def test_not_before_not_delivered_early_real(real: Transport, unique: str, form: str) -> None:
    broker = real.broker()
    received = Sink()

    @broker.subscriber(unique)
    async def handle(body: str) -> None:
        received.add(time.time())

    async with real.run(broker) as br:
        due = time.time() + 0.4
        not_before: datetime | float = (
            datetime.fromtimestamp(due, tz=UTC) if form == "datetime" else due
        )
        await br.publish("x", unique, not_before=not_before)
        assert await br.queue_depth(unique) == 1
        [at] = await received.wait(1)

    assert at >= due


async def test_priority_higher_delivered_first_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    order = Sink()

    @broker.subscriber(unique)
    async def handle(body: str) -> None:
        order.add(body)

    async with broker:  # connected, not yet consuming: all four wait together
        await broker.publish("p0", unique)
        await broker.publish("p1", unique, priority=1)
        await broker.publish("p10", unique, priority=10)
        await broker.publish("p5", unique, priority=5)
        assert await broker.queue_depth(unique) == 4
        await broker.start()
        await order.wait(4)

    assert order.items == ["p10", "p5", "p1", "p0"]


async def test_publisher_default_priority_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    order = Sink()
    urgent = broker.publisher(unique, priority=9)

    @broker.subscriber(unique)
    async def handle(body: str) -> None:
        order.add(body)

    async with broker:
        await broker.publish("normal", unique)
        await urgent.publish("urgent")
        await broker.start()
        await order.wait(2)

    assert order.items == ["urgent", "normal"]


# -- headers and batches ----------------------------------------------------------------


async def test_headers_round_trip_with_traceparent(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()

    @broker.subscriber(unique)
    async def handle(body: str, msg: SqliteMessage) -> None:
        sink.add(msg.headers)

    headers = {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=value",
        "x-tenant": "acme",
        "x-unicode": "zürich",
    }
    async with transport.run(broker) as br:
        await br.publish("x", unique, headers=headers)
        [got] = await sink.wait(1)

    for key, value in headers.items():
        assert got[key] == value


async def test_request_headers_reach_the_handler(transport: Transport, unique: str) -> None:
    broker = transport.broker()

    @broker.subscriber(unique)
    async def answer(body: str, msg: SqliteMessage) -> dict[str, Any]:
        return {"traceparent": msg.headers.get("traceparent")}

    async with transport.run(broker) as br:
        reply = await br.request("x", unique, headers={"traceparent": TRACEPARENT}, timeout=5)

    assert await reply.decode() == {"traceparent": TRACEPARENT}


async def test_publish_batch_delivers_all(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()

    @broker.subscriber(unique)
    async def handle(body: Any, msg: SqliteMessage) -> None:
        sink.add((body, msg.headers.get("x-batch")))

    items = [1, "two", {"three": 3}, [4], b"five"]
    async with transport.run(broker) as br:
        await br.publish_batch(*items, queue=unique, headers={"x-batch": "yes"})
        got = await sink.wait(len(items))

    assert [body for body, _ in got] == items
    assert {h for _, h in got} == {"yes"}


async def test_publisher_publish_batch(transport: Transport, unique: str) -> None:
    broker = transport.broker()
    sink = Sink()
    publisher = broker.publisher(unique)

    @broker.subscriber(unique)
    async def handle(n: int) -> None:
        sink.add(n)

    async with transport.run(broker):
        await publisher.publish_batch(*range(10))
        got = await sink.wait(10)

    assert got == list(range(10))


# -- health and schema --------------------------------------------------------------------


async def test_ping(transport: Transport, unique: str) -> None:
    broker = transport.broker()

    @broker.subscriber(unique)
    async def handle(body: Any) -> None:
        return None

    async with transport.run(broker) as br:
        assert await br.ping() is True


async def test_ping_false_when_not_connected_real(real: Transport) -> None:
    broker = real.broker()
    assert await broker.ping() is False
    async with broker:
        assert await broker.ping() is True
    assert await broker.ping() is False


def _asyncapi_broker(url: str, unique: str) -> SqliteBroker:
    broker = SqliteBroker(url, logger=None)
    router = SqliteRouter(prefix=f"{unique}.router.")

    @broker.subscriber(f"{unique}.orders", group="billing")
    @broker.publisher(f"{unique}.invoices")
    async def bill(order: Order) -> Order:
        return order

    @router.subscriber("events")
    async def events(body: str) -> None:
        return None

    broker.include_router(router)
    return broker


def test_asyncapi_v3_schema_contains_queues(db_url: str, unique: str) -> None:
    broker = _asyncapi_broker(db_url, unique)
    schema = json.loads(AsyncAPI(broker).to_specification().to_json())

    assert schema["asyncapi"].startswith("3.")
    addresses = {ch["address"] for ch in schema["channels"].values()}
    assert {f"{unique}.orders", f"{unique}.invoices", f"{unique}.router.events"} <= addresses
    assert {s["protocol"] for s in schema["servers"].values()} == {"sqlite"}
    actions = sorted(op["action"] for op in schema["operations"].values())
    assert actions == ["receive", "receive", "send"]
    assert "Order" in schema["components"]["schemas"]


def test_asyncapi_v2_schema_contains_queues(db_url: str, unique: str) -> None:
    broker = _asyncapi_broker(db_url, unique)
    text = AsyncAPI(broker, schema_version="2.6.0").to_specification().to_json()
    schema = json.loads(text)

    assert schema["asyncapi"] == "2.6.0"
    for queue in (f"{unique}.orders", f"{unique}.invoices", f"{unique}.router.events"):
        assert any(queue in name for name in schema["channels"]), queue
    assert {s["protocol"] for s in schema["servers"].values()} == {"sqlite"}


def test_asyncapi_cli_docs_gen(tmp_path: Path) -> None:
    out = tmp_path / "asyncapi.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "faststream",
            "docs",
            "gen",
            "tests.sqlite.apps.asyncapi_app:app",
            "--out",
            str(out),
        ],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    schema = json.loads(out.read_text())
    addresses = {ch["address"] for ch in schema["channels"].values()}
    assert {"asyncapi-orders", "asyncapi-shipments", "billing.asyncapi-invoices"} <= addresses
    # Building the schema must not create the (never connected) database file.
    assert not (REPO_ROOT / "asyncapi-contract-never-created.db").exists()


# -- operations: queue depth and dead-letter replay (real transport only) ---------------


async def test_queue_depth_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    release = asyncio.Event()
    handled = Sink()

    @broker.subscriber(unique)
    async def handle(n: int) -> None:
        await release.wait()
        handled.add(n)

    async with broker:
        assert await broker.queue_depth(unique) == 0
        await broker.publish_batch(1, 2, 3, queue=unique)
        await broker.publish(4, unique, delay=60)
        assert await broker.queue_depth(unique) == 4
        assert await broker.queue_depth(unique, "default") == 4
        assert await broker.queue_depth(unique, "elsewhere") == 0
        assert await broker.queue_depth(f"{unique}.other") == 0

        await broker.start()
        # A handler is blocked holding a lease: leased rows still count.
        await asyncio.sleep(0.05)
        assert await broker.queue_depth(unique) == 4
        release.set()
        await handled.wait(3)
        await wait_until(lambda: _depth_is(broker, unique, 1), what="the three acks")


async def test_replay_dead_letter_is_consumed_again_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    seen = Sink()
    reject_next = [True]

    @broker.subscriber(unique, retry=FAST_RETRY)
    async def handle(body: dict[str, Any], msg: SqliteMessage) -> None:
        seen.add((body, msg.attempt, msg.headers.get("x-origin")))
        if reject_next[0]:
            raise RejectMessage()

    async with real.run(broker) as br:
        await br.publish({"v": 1}, unique, headers={"x-origin": "replay"})
        await wait_until(lambda: _dead_letter_count(br, unique, 1), what="the dead letter")
        [dead] = await br.dead_letters(unique)

        reject_next[0] = False
        assert await br.replay_dead_letter(dead.id) is True
        await seen.wait(2)
        await wait_until(lambda: _depth_is(br, unique, 0), what="the replayed ack")
        assert await br.dead_letters(unique) == []
        # Replaying an id that is gone does nothing.
        assert await br.replay_dead_letter(dead.id) is False

    assert seen.items == [({"v": 1}, 1, "replay"), ({"v": 1}, 1, "replay")]


async def test_dead_letters_filter_by_queue_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    a, b = f"{unique}.a", f"{unique}.b"

    @broker.subscriber(a)
    async def reject_a(body: str) -> None:
        raise RejectMessage()

    @broker.subscriber(b)
    async def reject_b(body: str) -> None:
        raise RejectMessage()

    async with real.run(broker) as br:
        await br.publish("1", a)
        await br.publish("2", b)
        await br.publish("3", b)
        await wait_until(lambda: _dead_letter_count(br, b, 2), what="dead letters of b")
        await wait_until(lambda: _dead_letter_count(br, a, 1), what="dead letters of a")
        assert [d.body for d in await br.dead_letters(a)] == [b"1"]
        assert sorted(d.body for d in await br.dead_letters(b)) == [b"2", b"3"]
        assert len(await br.dead_letters()) == 3
        assert len(await br.dead_letters(limit=1)) == 1


# -- ack policies, worker concurrency, transactional publishing --------------------------


@pytest.mark.parametrize(
    ("policy", "status"),
    [
        (AckPolicy.ACK, AckStatus.ACKED),
        (AckPolicy.ACK_FIRST, AckStatus.ACKED),
        (AckPolicy.REJECT_ON_ERROR, AckStatus.REJECTED),
        (AckPolicy.NACK_ON_ERROR, AckStatus.NACKED),
    ],
)
async def test_ack_policy_on_handler_error(
    transport: Transport, unique: str, policy: AckPolicy, status: AckStatus
) -> None:
    broker = transport.broker()
    seen = Sink()

    @broker.subscriber(unique, ack_policy=policy, retry=msgcore.RetryPolicy(max_attempts=1))
    async def handle(body: str, msg: SqliteMessage) -> None:
        seen.add(msg)
        raise ValueError("policy test")

    async with transport.run(broker) as br:
        if transport.real:
            await br.publish("x", unique, headers={"x-origin": "policy"})
        else:
            # In memory the handler's own exception reaches the publisher.
            with pytest.raises(ValueError, match="policy test"):
                await br.publish("x", unique, headers={"x-origin": "policy"})
        [msg] = await seen.wait(1)
        await wait_until(lambda: msg.committed is not None, what="the settlement")
        assert msg.committed is status

        if transport.real:
            await wait_until(lambda: _depth_is(br, unique, 0), what="the row to be settled")
            dead = await br.dead_letters(unique)
            if policy in (AckPolicy.ACK, AckPolicy.ACK_FIRST):
                assert dead == []
            else:
                [letter] = dead
                assert letter.error is not None
                assert "policy test" in letter.error
                assert letter.headers["x-origin"] == "policy"
            assert len(seen.items) == 1


async def test_nack_message_with_delay_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    attempts = Sink()

    @broker.subscriber(unique, retry=msgcore.RetryPolicy(max_attempts=3, backoff=0.0))
    async def handle(body: str, msg: SqliteMessage) -> None:
        attempts.add((msg.attempt, time.monotonic()))
        if msg.attempt == 1:
            raise NackMessage(delay=0.3)

    async with real.run(broker) as br:
        await br.publish("x", unique)
        got = await attempts.wait(2)
        await wait_until(lambda: _depth_is(br, unique, 0), what="the final ack")

    assert [a for a, _ in got] == [1, 2]
    assert got[1][1] - got[0][1] >= 0.28


async def test_max_attempts_shorthand_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    calls = Sink()

    @broker.subscriber(unique, max_attempts=1)
    async def handle(body: str) -> None:
        calls.add(body)
        raise RuntimeError("once only")

    async with real.run(broker) as br:
        await br.publish("x", unique)
        await wait_until(lambda: _dead_letter_count(br, unique, 1), what="the dead letter")
        [dead] = await br.dead_letters(unique)
        assert await br.queue_depth(unique) == 0

    assert calls.items == ["x"]
    assert dead.attempts == 1
    assert dead.error is not None
    assert "once only" in dead.error


def test_max_attempts_contradicting_retry_policy_is_refused(db_url: str, unique: str) -> None:
    broker = SqliteBroker(db_url, logger=None)
    with pytest.raises(ValueError, match="contradicts"):
        broker.subscriber(unique, max_attempts=2, retry=msgcore.RetryPolicy(max_attempts=3))
    for bad in ({"max_attempts": 0}, {"max_attempts": 2.5}, {"backoff": math.nan}):
        with pytest.raises(msgcore.ConfigurationError, match="RetryPolicy"):
            msgcore.RetryPolicy(**bad)  # type: ignore[arg-type]


async def test_max_workers_runs_handlers_concurrently_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    in_flight = 0
    peak = 0
    all_in = asyncio.Event()
    done = Sink()

    @broker.subscriber(unique, max_workers=4)
    async def handle(n: int) -> None:
        nonlocal in_flight, peak
        in_flight += 1
        peak = max(peak, in_flight)
        if in_flight >= 4:
            all_in.set()
        try:
            await asyncio.wait_for(all_in.wait(), timeout=5.0)
        finally:
            in_flight -= 1
        done.add(n)

    async with real.run(broker) as br:
        await br.publish_batch(*range(8), queue=unique)
        await done.wait(8)

    assert peak == 4
    assert sorted(done.items) == list(range(8))


async def test_publishes_of_a_failed_attempt_are_discarded_real(
    real: Transport, unique: str
) -> None:
    """A handler's publishes commit with its ack: a failed attempt publishes nothing."""
    broker = real.broker()
    source, out = f"{unique}.in", f"{unique}.out"
    received = Sink()
    attempts = Sink()

    @broker.subscriber(source, retry=FAST_RETRY)
    async def handle(body: str, msg: SqliteMessage) -> None:
        attempts.add(msg.attempt)
        await broker.publish(f"{body} from attempt {msg.attempt}", out)
        if msg.attempt == 1:
            raise ValueError("fail after publishing")

    @broker.subscriber(out)
    async def collect(body: str) -> None:
        received.add(body)

    async with real.run(broker) as br:
        await br.publish("work", source)
        await attempts.wait(2)
        await received.wait(1)
        await wait_until(lambda: _depth_is(br, source, 0), what="the ack")
        await wait_until(lambda: _depth_is(br, out, 0), what="the onward ack")

    assert received.items == ["work from attempt 2"]


async def test_onward_message_keeps_incoming_correlation_id(
    transport: Transport, unique: str
) -> None:
    broker = transport.broker()
    source, out = f"{unique}.in", f"{unique}.out"
    sink = Sink()

    @broker.subscriber(source)
    @broker.publisher(out)
    async def forward(body: str) -> str:
        return body

    @broker.subscriber(out)
    async def collect(body: str, msg: SqliteMessage) -> None:
        sink.add(msg.correlation_id)

    async with transport.run(broker) as br:
        await br.publish("x", source, correlation_id=f"chain-{unique}")
        assert await sink.wait(1) == [f"chain-{unique}"]


async def test_sqlite_response_delay_and_priority_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    source, out = f"{unique}.in", f"{unique}.out"
    sink = Sink()

    @broker.subscriber(source)
    @broker.publisher(out)
    async def forward(body: str) -> SqliteResponse:
        return SqliteResponse(body, delay=0.3, priority=7)

    @broker.subscriber(out)
    async def collect(body: str, msg: SqliteMessage) -> None:
        sink.add((time.time(), msg.raw_message.priority))

    async with real.run(broker) as br:
        published_at = time.time()
        await br.publish("x", source)
        [(at, priority)] = await sink.wait(1)

    assert at - published_at >= 0.3
    assert priority == 7


async def test_publish_batch_delay_real(real: Transport, unique: str) -> None:
    broker = real.broker()
    sink = Sink()

    @broker.subscriber(unique)
    async def handle(n: int) -> None:
        sink.add((n, time.time()))

    async with real.run(broker) as br:
        published_at = time.time()
        await br.publish_batch(1, 2, queue=unique, delay=0.3)
        got = await sink.wait(2)

    assert [n for n, _ in got] == [1, 2]
    assert all(at - published_at >= 0.3 for _, at in got)


async def test_custom_decoders_broker_and_subscriber_level(
    transport: Transport, unique: str
) -> None:
    calls: list[str] = []

    async def broker_decoder(msg: Any, original: Any) -> Any:
        calls.append("broker")
        return await original(msg)

    async def subscriber_decoder(msg: Any, original: Any) -> Any:
        calls.append("subscriber")
        body = await original(msg)
        return {**body, "decoded_by": "subscriber"}

    broker = transport.broker(decoder=broker_decoder)
    sink = Sink()

    @broker.subscriber(f"{unique}.a")
    async def plain(body: dict[str, Any]) -> None:
        sink.add(body)

    @broker.subscriber(f"{unique}.b", decoder=subscriber_decoder)
    async def custom(body: dict[str, Any]) -> None:
        sink.add(body)

    async with transport.run(broker) as br:
        await br.publish({"n": 1}, f"{unique}.a")
        await sink.wait(1)
        await br.publish({"n": 2}, f"{unique}.b")
        await sink.wait(2)

    assert sink.items == [{"n": 1}, {"n": 2, "decoded_by": "subscriber"}]
    assert calls == ["broker", "subscriber"]


async def test_broker_and_router_ack_policy_defaults(transport: Transport, unique: str) -> None:
    broker = transport.broker(ack_policy=AckPolicy.REJECT_ON_ERROR)
    router = SqliteRouter(prefix=f"{unique}.r.", ack_policy=AckPolicy.ACK)
    seen: dict[str, Any] = {}

    @broker.subscriber(f"{unique}.b")
    async def on_broker(body: str, msg: SqliteMessage) -> None:
        seen["broker"] = msg
        raise ValueError("broker level")

    @router.subscriber("q")
    async def on_router(body: str, msg: SqliteMessage) -> None:
        seen["router"] = msg
        raise ValueError("router level")

    broker.include_router(router)

    async with transport.run(broker) as br:
        for queue in (f"{unique}.b", f"{unique}.r.q"):
            if transport.real:
                await br.publish("x", queue)
            else:
                with pytest.raises(ValueError, match="level"):
                    await br.publish("x", queue)
        await wait_until(lambda: len(seen) == 2, what="both handlers")
        await wait_until(
            lambda: all(m.committed is not None for m in seen.values()), what="settlements"
        )
        if transport.real:
            await wait_until(
                lambda: _dead_letter_count(br, f"{unique}.b", 1), what="the rejected row"
            )
            assert await br.dead_letters(f"{unique}.r.q") == []

    assert seen["broker"].committed is AckStatus.REJECTED
    assert seen["router"].committed is AckStatus.ACKED


def test_asyncapi_excludes_hidden_endpoints(db_url: str, unique: str) -> None:
    broker = SqliteBroker(db_url, logger=None)

    @broker.subscriber(f"{unique}.visible", title="VisibleTitle", description="shown")
    async def visible(body: str) -> None:
        return None

    @broker.subscriber(f"{unique}.hidden", include_in_schema=False)
    async def hidden(body: str) -> None:
        return None

    broker.publisher(f"{unique}.hidden-out", include_in_schema=False)

    text = AsyncAPI(broker).to_specification().to_json()
    schema = json.loads(text)
    addresses = {ch["address"] for ch in schema["channels"].values()}
    assert f"{unique}.visible" in addresses
    assert f"{unique}.hidden" not in text  # neither the subscriber nor the publisher
    assert "VisibleTitle" in schema["channels"]
    assert schema["channels"]["VisibleTitle"]["description"] == "shown"
