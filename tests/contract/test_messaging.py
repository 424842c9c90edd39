"""Consume, publish, routers, typed payloads, headers and request/reply: on every transport.

Each test declares its handlers once on a ``msgcore.Router`` and runs six times (see
``conftest.py``): SQLite, Redis and RabbitMQ, in memory and real.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import pytest
from faststream import Depends
from faststream.middlewares import BaseMiddleware
from pydantic import BaseModel

from msgcore import Message, Router

from .harness import Sink, Transport

TRACEPARENT = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


class Order(BaseModel):
    id: int
    item: str
    qty: int
    placed_at: datetime


class Invoice(BaseModel):
    order_id: int
    lines: list[str]
    total: float
    placed_at: datetime


def _bill(order: Order) -> Invoice:
    return Invoice(
        order_id=order.id,
        lines=[order.item] * order.qty,
        total=order.qty * 2.5,
        placed_at=order.placed_at,
    )


ORDER = Order(id=7, item="book", qty=3, placed_at=datetime(2024, 5, 17, 12, 30, tzinfo=UTC))


# -- consume and publish -------------------------------------------------------------------


def _typed(kind: str, sink: Sink) -> Any:
    """A handler whose payload annotation is ``kind`` and that records what it saw."""

    if kind == "dict":

        async def on_dict(body: dict[str, Any], msg: Message) -> None:
            sink.add((body, msg.message_id, msg.attempt))

        return on_dict
    if kind == "str":

        async def on_str(body: str, msg: Message) -> None:
            sink.add((body, msg.message_id, msg.attempt))

        return on_str
    if kind == "bytes":

        async def on_bytes(body: bytes, msg: Message) -> None:
            sink.add((body, msg.message_id, msg.attempt))

        return on_bytes
    assert kind == "int"

    async def on_int(body: int, msg: Message) -> None:
        sink.add((body, msg.message_id, msg.attempt))

    return on_int


@pytest.mark.parametrize(
    ("kind", "payload"),
    [
        ("dict", {"id": 1, "nested": {"a": [1, 2]}, "text": "zürich"}),
        ("str", "hello, wörld"),
        ("bytes", b"\x00\x01binary\xff"),
        ("int", 42),
    ],
)
async def test_publisher_handle_publishes_and_subscriber_consumes(
    transport: Transport, unique: str, kind: str, payload: Any
) -> None:
    router = Router(prefix=f"{unique}.")
    orders = router.publisher("orders")
    sink = Sink()
    router.subscriber("orders")(_typed(kind, sink))

    broker = transport.broker(router)
    assert orders.full_channel == f"{unique}.orders"
    async with transport.run(broker):
        await orders.publish(payload)
        [(body, message_id, attempt)] = await sink.wait(1)

    assert body == payload
    assert type(body) is type(payload)
    assert message_id, "every delivered message has a message id"
    assert attempt == 1


async def test_message_view_exposes_body_and_decode(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    events = router.publisher("events")
    sink = Sink()

    @router.subscriber("events")
    async def handle(body: dict[str, Any], msg: Message) -> None:
        sink.add((msg.body, await msg.decode(), repr(msg)))

    async with transport.run(transport.broker(router)):
        await events.publish({"a": 1, "b": [True, None]})
        [(raw, decoded, text)] = await sink.wait(1)

    assert isinstance(raw, bytes)
    assert json.loads(raw) == {"a": 1, "b": [True, None]}
    assert decoded == {"a": 1, "b": [True, None]}
    assert text.startswith("MessageView(")


async def test_handler_return_value_is_published_onward(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    numbers = router.publisher("numbers")
    words = router.publisher("words")
    doubled = router.publisher("doubled")
    out = Sink()

    # @handle below the subscriber decorator ...
    @router.subscriber("numbers")
    @doubled
    async def double(n: int) -> int:
        return n * 2

    # ... and above it: both attach the handle to the handler.
    @doubled
    @router.subscriber("words")
    async def length(word: str) -> int:
        return len(word) * 100

    @router.subscriber("doubled")
    async def collect(n: int) -> None:
        out.add(n)

    async with transport.run(transport.broker(router)):
        await numbers.publish(21)
        await words.publish("four")
        got = await out.wait(2)

    assert sorted(got) == [42, 400]


async def test_handler_publishes_onward_to_two_handles(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    audit, results = router.publisher("audit"), router.publisher("results")
    seen = Sink()

    @router.subscriber("jobs")
    @audit
    @results
    async def work(body: str) -> str:
        return body.upper()

    @router.subscriber("audit")
    async def on_audit(body: str) -> None:
        seen.add(("audit", body))

    @router.subscriber("results")
    async def on_result(body: str) -> None:
        seen.add(("results", body))

    async with transport.run(transport.broker(router)):
        await jobs.publish("x")
        got = await seen.wait(2)

    assert sorted(got) == [("audit", "X"), ("results", "X")]


async def test_pydantic_payloads_and_return_values(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    orders = router.publisher("orders")
    invoices = router.publisher("invoices")
    got = Sink()

    @router.subscriber("orders")
    @invoices
    async def bill(order: Order) -> Invoice:
        assert isinstance(order, Order)
        return _bill(order)

    @router.subscriber("invoices")
    async def collect(invoice: Invoice) -> None:
        got.add(invoice)

    async with transport.run(transport.broker(router)):
        await orders.publish(ORDER)
        [invoice] = await got.wait(1)
        # A dict that validates as the model is as good as the model.
        await orders.publish(ORDER.model_dump(mode="json") | {"id": 8})
        await got.wait(2)
        reply = await orders.request(ORDER, timeout=10)

    assert invoice == _bill(ORDER)
    assert isinstance(invoice, Invoice)
    assert got.items[1] == _bill(ORDER.model_copy(update={"id": 8}))
    assert Invoice.model_validate(reply) == _bill(ORDER)


# -- routers: prefixes, nesting, dependencies, middlewares ---------------------------------


async def test_router_prefixes_and_nested_routers(transport: Transport, unique: str) -> None:
    seen = Sink()
    inner = Router(prefix="inner.")
    service = Router(prefix="svc.")
    service.include_router(inner, prefix="v1.")
    root = Router(prefix=f"{unique}.", routers=[service])

    jobs = inner.publisher("jobs")
    by_name = root.publisher("svc.v1.inner.jobs")
    direct = service.publisher("direct")

    @inner.subscriber("jobs")
    async def inner_jobs(body: str) -> None:
        seen.add(("inner", body))

    # The composed channel is an ordinary channel: another router may consume it by name.
    @service.subscriber("v1.inner.jobs", group="observer")
    async def observer(body: str) -> None:
        seen.add(("observer", body))

    @service.subscriber("direct")
    async def service_direct(body: str) -> None:
        seen.add(("service", body))

    broker = transport.broker(root)
    assert jobs.full_channel == f"{unique}.svc.v1.inner.jobs"
    assert by_name.full_channel == jobs.full_channel
    assert direct.full_channel == f"{unique}.svc.direct"

    async with transport.run(broker):
        await jobs.publish("a")
        await seen.wait(2)
        await by_name.publish("b")
        await seen.wait(4)
        await direct.publish("c")
        await seen.wait(5)

    assert sorted(seen.items) == [
        ("inner", "a"),
        ("inner", "b"),
        ("observer", "a"),
        ("observer", "b"),
        ("service", "c"),
    ]


async def test_two_routers_passed_to_create_broker(transport: Transport, unique: str) -> None:
    seen = Sink()
    billing = Router(prefix=f"{unique}.billing.")
    shipping = Router(prefix=f"{unique}.shipping.")
    invoices = billing.publisher("invoices")
    # A handle of one router may decorate a handler of another.
    parcels = billing.publisher("parcels")

    @shipping.subscriber("orders")
    @parcels
    async def ship(body: str) -> str:
        return f"parcel:{body}"

    @billing.subscriber("invoices")
    async def on_invoice(body: str) -> None:
        seen.add(("invoice", body))

    @billing.subscriber("parcels")
    async def on_parcel(body: str) -> None:
        seen.add(("parcel", body))

    orders = shipping.publisher("orders")
    async with transport.run(transport.broker(billing, shipping)):
        await invoices.publish("i1")
        await orders.publish("o1")
        got = await seen.wait(2)

    assert sorted(got) == [("invoice", "i1"), ("parcel", "parcel:o1")]


def _recording(name: str, log: list[tuple[str, ...]]) -> type[BaseMiddleware]:
    class Recording(BaseMiddleware):
        async def consume_scope(self, call_next: Any, msg: Any) -> Any:
            log.append((name, "consume", str(await msg.decode())))
            return await call_next(msg)

        async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
            log.append((name, "publish", str(cmd.destination)))
            return await call_next(cmd)

    Recording.__name__ = f"Recording_{name}"
    return Recording


async def test_router_dependencies_and_middlewares(transport: Transport, unique: str) -> None:
    calls: list[str] = []
    log: list[tuple[str, ...]] = []
    seen = Sink()

    def root_dep() -> None:
        calls.append("root")

    def include_dep() -> None:
        calls.append("include")

    def child_dep() -> None:
        calls.append("child")

    def subscriber_dep() -> None:
        calls.append("subscriber")

    def tenant(msg: Message) -> str:
        return str(msg.headers.get("x-tenant", "none"))

    root = Router(
        prefix=f"{unique}.",
        dependencies=[Depends(root_dep)],
        middlewares=[_recording("root", log)],
    )
    child = Router(
        prefix="child.",
        dependencies=[Depends(child_dep)],
        middlewares=[_recording("child", log)],
    )
    requests = child.publisher("in")
    out = child.publisher("out")

    @child.subscriber("in", dependencies=[Depends(subscriber_dep)])
    @out
    async def handle(body: str, who: str = Depends(tenant)) -> str:
        calls.append("handler")
        return f"{body}:{who}"

    @root.subscriber("child.out")
    async def collect(body: str) -> None:
        seen.add(body)

    root.include_router(
        child, dependencies=[Depends(include_dep)], middlewares=[_recording("include", log)]
    )

    async with transport.run(transport.broker(root)):
        await requests.publish("x", headers={"x-tenant": "acme"})
        assert await seen.wait(1) == ["x:acme"]

    # The child's handler ran with every dependency of its chain, each once and before
    # it; the root's dependency also ran for the root's own subscriber.
    assert Counter(calls) == {"root": 2, "include": 1, "child": 1, "subscriber": 1, "handler": 1}
    before = calls[: calls.index("handler")]
    assert {"root", "include", "child", "subscriber"} <= set(before), calls

    consumes = [(name, body) for name, kind, body in log if kind == "consume"]
    # The child's subscriber is wrapped by the root's, the inclusion's and its own
    # middlewares (outermost first); the root's subscriber by the root's only.
    assert [name for name, body in consumes if body == "x"] == ["root", "include", "child"]
    assert [name for name, body in consumes if body == "x:acme"] == ["root"]

    publishes = {(name, dest) for name, kind, dest in log if kind == "publish"}
    onward = f"{unique}.child.out"
    # The onward publish of a child handler passes the child's publish middlewares.
    assert any(name == "child" and dest.endswith(onward) for name, dest in publishes), log


# -- headers, correlation ids, request/reply -----------------------------------------------


async def test_headers_and_correlation_id_round_trip(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs", headers={"x-team": "core", "x-tenant": "default"})
    done = router.publisher("done")
    first, second = Sink(), Sink()

    @router.subscriber("jobs")
    @done
    async def handle(body: str, msg: Message) -> str:
        first.add((dict(msg.headers), msg.correlation_id))
        return body.upper()

    @router.subscriber("done")
    async def collect(body: str, msg: Message) -> None:
        second.add((body, msg.correlation_id))

    headers = {
        "traceparent": TRACEPARENT,
        "tracestate": "vendor=value",
        "x-tenant": "acme",
        "x-unicode": "zürich",
    }
    async with transport.run(transport.broker(router)):
        await jobs.publish("job", headers=headers, correlation_id=f"cid-{unique}")
        [(got_headers, got_cid)] = await first.wait(1)
        [(onward_body, onward_cid)] = await second.wait(1)

    # Per-call headers over the handle's defaults, every value intact, and nothing else:
    # no transport's own bookkeeping (Redis' envelope carries correlation_id and
    # content-type among its headers)
    assert got_headers == {**headers, "x-team": "core"}
    assert got_cid == f"cid-{unique}"
    # The onward message carries the incoming correlation id.
    assert (onward_body, onward_cid) == ("JOB", f"cid-{unique}")


async def test_message_without_correlation_id_gets_one(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    jobs = router.publisher("jobs")
    seen = Sink()

    @router.subscriber("jobs")
    async def handle(body: int, msg: Message) -> None:
        seen.add(msg.correlation_id)

    async with transport.run(transport.broker(router)):
        await jobs.publish(1)
        await jobs.publish(2)
        first, second = await seen.wait(2)

    assert first
    assert second
    assert first != second


async def test_request_returns_the_reply(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    echo = router.publisher("echo")

    @router.subscriber("echo")
    async def handle(body: dict[str, Any], msg: Message) -> dict[str, Any]:
        return {
            "echo": body,
            "tenant": msg.headers.get("x-tenant"),
            "correlation_id": msg.correlation_id,
        }

    async with transport.run(transport.broker(router)):
        reply = await echo.request(
            {"n": 1}, headers={"x-tenant": "acme"}, correlation_id=f"cid-{unique}", timeout=10
        )
        # Concurrent requests each get their own reply.
        replies = await asyncio.gather(*(echo.request({"n": n}, timeout=10) for n in range(5)))

    assert reply == {"echo": {"n": 1}, "tenant": "acme", "correlation_id": f"cid-{unique}"}
    assert [r["echo"] for r in replies] == [{"n": n} for n in range(5)]
    assert len({r["correlation_id"] for r in replies}) == 5


async def test_request_reply_with_scalar_body(transport: Transport, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    square = router.publisher("square")

    @router.subscriber("square")
    async def handle(n: int) -> int:
        return n * n

    async with transport.run(transport.broker(router)):
        assert await square.request(12, timeout=10) == 144
