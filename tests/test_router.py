"""The neutral Router: declarations, prefixes and binding, on the SQLite transport."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from pydantic import BaseModel

from msgcore import (
    ConfigurationError,
    Message,
    PayloadError,
    RetryPolicy,
    Router,
    Settings,
    create_broker,
)
from msgcore.testing import TestClient


class Order(BaseModel):
    id: int
    qty: int


def _settings(tmp_path: Path) -> Settings:
    return Settings(url=f"sqlite:///{tmp_path / 'r.db'}", log_messages=False)


async def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, "condition not reached in time"
        await asyncio.sleep(0.01)


async def test_publisher_decorator_either_side_of_subscriber(tmp_path: Path) -> None:
    router = Router()
    out_a = router.publisher("a.out")
    out_b = router.publisher("b.out")
    in_a = router.publisher("a.in")
    in_b = router.publisher("b.in")
    seen: list[tuple[str, int]] = []

    @router.subscriber("a.in")
    @out_a
    async def below(x: int) -> int:
        return x + 1

    @out_b
    @router.subscriber("b.in")
    async def above(x: int) -> int:
        return x + 2

    @router.subscriber("a.out")
    async def sink_a(x: int) -> None:
        seen.append(("a", x))

    @router.subscriber("b.out")
    async def sink_b(x: int) -> None:
        seen.append(("b", x))

    async with create_broker(router, settings=_settings(tmp_path)) as broker:
        await broker.start()
        await in_a.publish(1)
        await in_b.publish(1)
        await _wait_for(lambda: len(seen) == 2)
    assert sorted(seen) == [("a", 2), ("b", 3)]


async def test_prefixes_and_nested_routers(tmp_path: Path) -> None:
    inner = Router(prefix="inner.")
    outer = Router(prefix="outer.")
    got: list[str] = []

    @inner.subscriber("ping")
    async def ping(x: str, msg: Message) -> None:
        got.append(f"{x}@{msg.attempt}")

    outer.include_router(inner, prefix="mid.")
    pong = inner.publisher("ping")
    async with create_broker(outer, settings=_settings(tmp_path)) as broker:
        await broker.start()
        assert pong.full_channel == "outer.mid.inner.ping"
        await pong.publish("hi")
        await _wait_for(lambda: got == ["hi@1"])
        await broker.publish("direct", "outer.mid.inner.ping")
        await _wait_for(lambda: len(got) == 2)


async def test_typed_payloads_and_request_reply(tmp_path: Path) -> None:
    router = Router()

    @router.subscriber("price")
    async def price(order: Order) -> dict[str, int]:
        return {"id": order.id, "total": order.qty * 3}

    quote = router.publisher("price")
    async with create_broker(router, settings=_settings(tmp_path)) as broker:
        await broker.start()
        assert await quote.request(Order(id=7, qty=2)) == {"id": 7, "total": 6}


async def test_two_brokers_from_one_router_do_not_share_publishers(tmp_path: Path) -> None:
    router = Router()
    out = router.publisher("out")

    @router.subscriber("in")
    @out
    async def handler(x: int) -> int:
        return x

    first = create_broker(router, settings=Settings(url=f"sqlite:///{tmp_path / 'a.db'}"))
    second = create_broker(router, settings=Settings(url=f"sqlite:///{tmp_path / 'b.db'}"))
    first_wrappers = [h.handler for s in first.subscribers for h in s.calls]
    second_wrappers = [h.handler for s in second.subscribers for h in s.calls]
    assert first_wrappers and second_wrappers
    assert first_wrappers[0] is not second_wrappers[0]
    assert first_wrappers[0]._publishers is not second_wrappers[0]._publishers
    assert len(first_wrappers[0]._publishers) == 1


async def test_in_memory_test_client(tmp_path: Path) -> None:
    router = Router()

    @router.subscriber("orders")
    async def handle(order: Order) -> None: ...

    async with TestClient(create_broker(router, settings=_settings(tmp_path))) as broker:
        await broker.publish({"id": 1, "qty": 2}, "orders")
    assert handle is not None


async def test_unbound_publisher_says_what_to_do() -> None:
    router = Router()
    handle = router.publisher("nowhere")
    with pytest.raises(ConfigurationError, match="create_broker"):
        await handle.publish(1)


def test_declaration_errors() -> None:
    router = Router()
    with pytest.raises(ConfigurationError, match="contradicts"):
        router.subscriber("x", max_attempts=3, retry=RetryPolicy(max_attempts=4))
    for bad in (0, 1.5, "4"):
        with pytest.raises(ConfigurationError, match="max_workers"):
            router.subscriber("x", max_workers=bad)  # type: ignore[arg-type]
    # max_attempts=0 was taken for "the default" (five attempts) without a word
    with pytest.raises(ConfigurationError, match="max_attempts"):
        router.subscriber("x", max_attempts=0)
    # a dict was taken, and the first failure could not be settled: redelivered for ever
    with pytest.raises(ConfigurationError, match="RetryPolicy"):
        router.subscriber("x", retry={"max_attempts": 2})  # type: ignore[arg-type]
    for bad_lease in (0, -1, float("nan"), "x"):
        with pytest.raises(ConfigurationError, match="lease_seconds"):
            router.subscriber("x", lease_seconds=bad_lease)  # type: ignore[arg-type]
    for bad_name in (5, b"x"):
        with pytest.raises(ConfigurationError, match="non-empty str"):
            router.subscriber(bad_name)  # type: ignore[arg-type]
        with pytest.raises(ConfigurationError, match="group"):
            router.subscriber("x", group=bad_name)  # type: ignore[arg-type]
    # prefix=None named every channel "None<channel>"
    with pytest.raises(ConfigurationError, match="prefix"):
        Router(prefix=None)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="prefix"):
        router.include_router(Router(), prefix=5)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="channel"):
        router.subscriber("")
    for bad_channel in ("", None):
        with pytest.raises(ConfigurationError, match="needs a channel"):
            router.publisher(bad_channel)  # type: ignore[arg-type]
    for bad in (-1, 1.5, True, "2"):
        with pytest.raises(ConfigurationError, match="prefetch must be"):
            router.subscriber("x", prefetch=bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"msgcore\.Router"):
        router.include_router(object())  # type: ignore[arg-type]


async def test_a_publisher_checks_what_is_passed_beside_the_payload() -> None:
    """The same checks as the client's, before the publisher needs a broker."""
    router = Router()
    handle = router.publisher("invoices")
    with pytest.raises(ConfigurationError, match="priority="):
        await handle.publish(1, priority="high")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match="delay="):
        await handle.publish(1, delay=float("nan"))
    with pytest.raises(ConfigurationError, match="not_before="):
        await handle.publish(1, not_before=3)  # type: ignore[arg-type]
    with pytest.raises(PayloadError, match="msgcore's own"):
        await handle.publish(1, headers={"x-msgcore-attempt": 7})
    with pytest.raises(ConfigurationError, match="timeout="):
        await handle.request(1, timeout=0)
    with pytest.raises(PayloadError, match="msgcore's own"):
        router.publisher("receipts", headers={"correlation_id": "c"})
    with pytest.raises(ConfigurationError, match="not bound"):
        await handle.publish(1, priority=0, headers={"h": "v"})  # checked, then unbound


@pytest.mark.parametrize(
    ("channel", "group"),
    [
        ("é", None),  # ran on SQLite and Redis, failed only when RabbitMQ started
        ("a\tb", None),
        ("_jobs", None),  # refused on Redis only (its own keys)
        ("a*b", None),  # refused on RabbitMQ only (a topic wildcard)
        ("[x]", None),
        ("x" * 181, None),
        ("a", "b.c"),  # on RabbitMQ the queue of ("a.b", "c") as well
        ("a", "g" * 41),
        ("a", ""),
    ],
)
def test_a_name_some_transport_cannot_carry_is_refused_on_every_transport(
    tmp_path: Path, channel: str, group: str | None
) -> None:
    router = Router()
    # an empty group is refused at the declaration already, the rest when bound
    with pytest.raises(
        ConfigurationError, match=r"the same way by every transport|over 180|non-empty str"
    ):

        @router.subscriber(channel, group=group)
        async def handle(body: str) -> None: ...

        create_broker(router, settings=Settings(url=f"sqlite:///{tmp_path / 'n.db'}"))


def test_names_every_transport_carries_are_taken(tmp_path: Path) -> None:
    router = Router(prefix="billing.")

    @router.subscriber("orders.created", group="workers-1")
    async def a(body: str) -> None: ...

    @router.subscriber("a b/c:d@e,f+g-h_i", group="x y:z")
    async def b(body: str) -> None: ...

    router.publisher("invoices")
    create_broker(router, settings=Settings(url=f"sqlite:///{tmp_path / 'n.db'}"))


def test_create_broker_checks_what_it_is_given(tmp_path: Path) -> None:
    """Bare AttributeErrors before ('transport', 'walk')."""
    settings = Settings(url=f"sqlite:///{tmp_path / 'n.db'}")
    router = Router()
    for bad_settings in ("sqlite:///x.db", {"url": "sqlite:///x.db"}, Settings):
        with pytest.raises(ConfigurationError, match=r"msgcore\.Settings"):
            create_broker(router, settings=bad_settings)  # type: ignore[arg-type]
    for bad_router in (None, "orders", [router]):
        with pytest.raises(ConfigurationError, match=r"msgcore\.Router"):
            create_broker(bad_router, settings=settings)  # type: ignore[arg-type]
    parent = Router()
    parent.include_router(router)
    with pytest.raises(ConfigurationError, match="included already"):
        parent.include_router(router)


async def test_a_router_passed_twice_is_bound_once(tmp_path: Path) -> None:
    """Under TestClient on RabbitMQ one publish ran its handler twice."""
    from msgcore.testing import TestClient

    router = Router()
    seen: list[int] = []
    out = router.publisher("orders")

    @router.subscriber("orders")
    async def handle(n: int) -> None:
        seen.append(n)

    # in memory: no server is reached under TestClient
    rabbit = Settings(
        url="amqp://guest:guest@127.0.0.1:5672/", store_url=f"sqlite:///{tmp_path}/s.db"
    )
    broker = create_broker(router, router, settings=rabbit)
    async with TestClient(broker):
        await out.publish(1)
    assert seen == [1]


def test_a_client_refuses_a_broker_of_another_transport(tmp_path: Path) -> None:
    """Its publishes failed later with a transport's TypeError (an unexpected 'stream'
    or 'delay' keyword)."""
    from msgcore import Client

    sqlite = Settings(url=f"sqlite:///{tmp_path / 'n.db'}")
    broker = create_broker(Router(), settings=sqlite)
    redis = Settings(url="redis://127.0.0.1:6379/0")
    with pytest.raises(ConfigurationError, match=r"SqliteBroker.*redis transport"):
        Client(settings=redis, broker=broker)
    Client(settings=sqlite, broker=broker)  # its own settings: fine


def test_a_handler_taking_kwargs_is_refused_at_the_declaration() -> None:
    """FastStream cannot fill **kwargs: every attempt failed inside it and each message
    was dead-lettered."""
    router = Router()
    with pytest.raises(ConfigurationError, match=r"\*\*kwargs"):

        @router.subscriber("orders")
        async def handle(body: str, **extra: object) -> None: ...

    with pytest.raises(ConfigurationError, match="decorates a function"):
        router.subscriber("orders")("not a function")  # type: ignore[type-var]


async def test_test_client_refuses_a_started_broker(tmp_path: Path) -> None:
    """It patched the running broker: after the test its subscribers stayed stopped."""
    broker = create_broker(Router(), settings=Settings(url=f"sqlite:///{tmp_path / 'n.db'}"))
    async with broker:
        await broker.start()
        with pytest.raises(ConfigurationError, match="not started"):
            TestClient(broker)
