"""OpenTelemetry and Prometheus on the SQLite broker have FastStream's usual shape.

Each scenario runs against a real database file, and again on FastStream's own Redis
broker (``TestRedisBroker``, in memory) as the reference: spans and metrics must match
it in names, kinds, parents and attribute/label keys, differing only in the messaging
system ("sqlite" instead of "redis").
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any

import pytest
from faststream.redis import RedisBroker, TestRedisBroker
from faststream.redis.opentelemetry import RedisTelemetryMiddleware
from faststream.redis.prometheus import RedisPrometheusMiddleware
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace import SpanKind
from prometheus_client import CollectorRegistry

from msgcore.constants import MESSAGES_TABLE, REPLY_QUEUE_PREFIX
from msgcore.retry import RetryPolicy
from msgcore.sqlite import SqliteBroker
from msgcore.sqlite.opentelemetry import SqliteTelemetryMiddleware
from msgcore.sqlite.prometheus import SqlitePrometheusMiddleware

Runner = Callable[[Any], AbstractAsyncContextManager[Any]]


# -- helpers ---------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


def tracing() -> tuple[InMemorySpanExporter, TracerProvider]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return exporter, provider


@asynccontextmanager
async def real_sqlite(broker: SqliteBroker) -> AsyncIterator[SqliteBroker]:
    """Run ``broker`` on its database file."""
    async with broker:
        await broker.start()
        yield broker


@asynccontextmanager
async def in_memory_redis(broker: RedisBroker) -> AsyncIterator[RedisBroker]:
    """Run ``broker`` on FastStream's in-memory Redis test client."""
    async with TestRedisBroker(broker) as br:
        yield br


def shape(spans: tuple[ReadableSpan, ...], roles: dict[str, str]) -> list[tuple[Any, ...]]:
    """Spans as comparable tuples: queue names replaced by their role, ids by parent names.

    ``(name, kind, parent name, attribute keys, messaging.operation)``
    """

    def rename(name: str) -> str:
        destination, _, action = name.rpartition(" ")
        return f"{roles.get(destination, destination)} {action}"

    by_id = {s.context.span_id: s for s in spans}
    out = []
    for s in spans:
        parent = by_id.get(s.parent.span_id) if s.parent is not None else None
        attrs = s.attributes or {}
        out.append(
            (
                rename(s.name),
                s.kind,
                rename(parent.name) if parent is not None else None,
                tuple(sorted(attrs)),
                attrs.get(SpanAttributes.MESSAGING_OPERATION),
            )
        )
    return sorted(out, key=repr)


async def two_hops(broker: Any, run: Runner, first: str, second: str) -> tuple[ReadableSpan, ...]:
    """publish -> first handler -> publishes onward -> second handler."""
    exporter: InMemorySpanExporter = broker._test_exporter
    done = asyncio.Event()

    @broker.subscriber(first)
    async def forward(body: str) -> None:
        await broker.publish(f"{body}+1", second)

    @broker.subscriber(second)
    async def finish(body: str) -> None:
        assert body == "hello+1"
        done.set()

    async with run(broker):
        await broker.publish("hello", first)
        await asyncio.wait_for(done.wait(), 5)
        # The first handler's spans end when its middlewares exit, just after the
        # onward message may already have been handled.
        await wait_until(lambda: len(exporter.get_finished_spans()) >= 6)
        await asyncio.sleep(0.05)
    return exporter.get_finished_spans()


def sqlite_with_tracing(url: str) -> SqliteBroker:
    exporter, provider = tracing()
    broker = SqliteBroker(url, middlewares=[SqliteTelemetryMiddleware(tracer_provider=provider)])
    broker._test_exporter = exporter  # type: ignore[attr-defined]
    return broker


def redis_with_tracing() -> RedisBroker:
    exporter, provider = tracing()
    broker = RedisBroker(middlewares=[RedisTelemetryMiddleware(tracer_provider=provider)])
    broker._test_exporter = exporter  # type: ignore[attr-defined]
    return broker


def named(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, (name, [s.name for s in spans])
    return found[0]


# -- OpenTelemetry -----------------------------------------------------------------------


async def test_two_hops_through_the_database_are_one_trace(db_url: str, unique: str) -> None:
    first, second = f"{unique}-first", f"{unique}-second"
    spans = await two_hops(sqlite_with_tracing(db_url), real_sqlite, first, second)

    assert {s.context.trace_id for s in spans} == {spans[0].context.trace_id}, [
        (s.name, f"{s.context.trace_id:x}") for s in spans
    ]
    assert sorted(s.name for s in spans) == sorted(
        [
            f"{first} create",
            f"{first} publish",
            f"{first} process",
            f"{second} create",
            f"{second} publish",
            f"{second} process",
        ]
    )
    # A consumer-side "create" span is FastStream's sign that no trace context arrived.
    assert not [s.name for s in spans if s.kind is SpanKind.CONSUMER and s.name.endswith("create")]

    first_create = named(spans, f"{first} create")
    first_process = named(spans, f"{first} process")
    second_create = named(spans, f"{second} create")
    second_process = named(spans, f"{second} process")
    assert first_create.parent is None  # the root: the test's publish
    # Each consumer continues the context its message carried through the file...
    assert first_process.parent.span_id == first_create.context.span_id
    assert second_process.parent.span_id == second_create.context.span_id
    # ...and the onward publish happened inside the first handler.
    assert second_create.parent.span_id == first_process.context.span_id
    assert first_process.kind is SpanKind.CONSUMER
    assert named(spans, f"{second} publish").kind is SpanKind.PRODUCER

    for s in spans:
        assert s.attributes[SpanAttributes.MESSAGING_SYSTEM] == "sqlite"
    assert first_process.attributes["messaging.destination_publish.name"] == first
    assert (
        named(spans, f"{second} publish").attributes[SpanAttributes.MESSAGING_DESTINATION_NAME]
        == second
    )
    assert second_process.attributes[SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES] == len(
        b"hello+1"
    )
    # The correlation id survives storage: both ends of each hop report the same one.
    conversation = SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID
    for queue in (first, second):
        sent = named(spans, f"{queue} publish").attributes[conversation]
        assert sent
        assert named(spans, f"{queue} process").attributes[conversation] == sent


async def test_span_shape_matches_faststream_redis(db_url: str, unique: str) -> None:
    first, second = f"{unique}-first", f"{unique}-second"
    roles = {first: "<first>", second: "<second>"}

    sqlite_spans = await two_hops(sqlite_with_tracing(db_url), real_sqlite, first, second)
    redis_spans = await two_hops(redis_with_tracing(), in_memory_redis, first, second)

    assert shape(sqlite_spans, roles) == shape(redis_spans, roles)
    assert {s.attributes[SpanAttributes.MESSAGING_SYSTEM] for s in sqlite_spans} == {"sqlite"}
    assert {s.attributes[SpanAttributes.MESSAGING_SYSTEM] for s in redis_spans} == {"redis"}

    # Attribute values other than the system name agree too, where they are not ids.
    def values(spans: tuple[ReadableSpan, ...]) -> list[tuple[str, Any]]:
        stable = (
            SpanAttributes.MESSAGING_DESTINATION_NAME,
            "messaging.destination_publish.name",
            SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES,
            SpanAttributes.MESSAGING_OPERATION,
        )
        return sorted(
            (s.name, f"{k}={s.attributes[k]}") for s in spans for k in stable if k in s.attributes
        )

    assert values(sqlite_spans) == values(redis_spans)


async def test_traceparent_is_stored_with_the_row_and_read_by_another_broker(
    db_path: Path, db_url: str, unique: str
) -> None:
    """The trace context travels in the stored row, not in this process's memory."""
    producer = sqlite_with_tracing(db_url)
    async with producer:
        await producer.publish({"order": 1}, unique)
    produced = producer._test_exporter.get_finished_spans()  # type: ignore[attr-defined]
    publish_span = named(produced, f"{unique} publish")
    trace_id = publish_span.context.trace_id

    with sqlite3.connect(db_path) as conn:
        (headers,) = conn.execute(
            f"SELECT headers FROM {MESSAGES_TABLE} WHERE queue = ?", (unique,)
        ).fetchone()
    traceparent = json.loads(headers)["traceparent"]
    assert traceparent.split("-")[1] == f"{trace_id:032x}"

    consumer = sqlite_with_tracing(db_url)  # its own connection and tracer provider
    done = asyncio.Event()

    @consumer.subscriber(unique)
    async def handle(body: dict[str, int]) -> None:
        done.set()

    async with real_sqlite(consumer):
        await asyncio.wait_for(done.wait(), 5)
        exporter = consumer._test_exporter  # type: ignore[attr-defined]
        await wait_until(lambda: len(exporter.get_finished_spans()) >= 1)
    process = named(exporter.get_finished_spans(), f"{unique} process")
    assert process.context.trace_id == trace_id
    assert process.parent is not None
    assert process.parent.span_id == named(produced, f"{unique} create").context.span_id
    assert process.parent.is_remote


async def test_request_reply_spans_share_the_request_trace(db_url: str, unique: str) -> None:
    broker = sqlite_with_tracing(db_url)
    exporter: InMemorySpanExporter = broker._test_exporter  # type: ignore[attr-defined]

    @broker.subscriber(unique)
    async def echo(body: str) -> str:
        return body.upper()

    async with real_sqlite(broker):
        reply = await broker.request("ping", unique, timeout=5)
        assert await reply.decode() == "PING"
        await wait_until(lambda: len(exporter.get_finished_spans()) >= 5)
        await asyncio.sleep(0.05)
    spans = exporter.get_finished_spans()

    assert {s.context.trace_id for s in spans} == {spans[0].context.trace_id}, [
        (s.name, f"{s.context.trace_id:x}") for s in spans
    ]
    create = named(spans, f"{unique} create")
    process = named(spans, f"{unique} process")
    assert named(spans, f"{unique} publish").kind is SpanKind.PRODUCER
    assert process.kind is SpanKind.CONSUMER
    assert process.parent.span_id == create.context.span_id
    # The handler's reply is published from inside the handler's span.
    reply_publish = [
        s for s in spans if s.name.startswith(REPLY_QUEUE_PREFIX) and s.name.endswith(" publish")
    ]
    assert len(reply_publish) == 1
    assert reply_publish[0].kind is SpanKind.PRODUCER
    assert reply_publish[0].parent.span_id == process.context.span_id
    # The requester's side of the reply is in the same trace (checked above) too.
    assert [
        s for s in spans if s.name.startswith(REPLY_QUEUE_PREFIX) and s.name.endswith(" process")
    ]

    # The request leg has the same shape as FastStream's Redis broker gives it.
    redis = redis_with_tracing()

    @redis.subscriber(unique)
    async def redis_echo(body: str) -> str:
        return body.upper()

    async with in_memory_redis(redis):
        reply = await redis.request("ping", unique, timeout=5)
        assert await reply.decode() == "PING"
    redis_spans = redis._test_exporter.get_finished_spans()  # type: ignore[attr-defined]

    def request_leg(spans: tuple[ReadableSpan, ...]) -> list[tuple[Any, ...]]:
        leg = tuple(s for s in spans if s.name.startswith(f"{unique} "))
        return shape(leg, {unique: "<rpc>"})

    assert request_leg(spans) == request_leg(redis_spans)
    assert len(request_leg(spans)) == 3


async def test_batch_publish_links_each_message_to_the_batch_like_redis(
    db_url: str, unique: str
) -> None:
    """FastStream's batch convention: each consumed message gets its own trace, linked
    to the producer's "create" span (baggage in the stored headers marks the batch)."""

    async def run_batch(broker: Any, run: Runner, publish: Callable[[], Any]) -> Any:
        exporter: InMemorySpanExporter = broker._test_exporter
        got: list[str] = []
        kwargs = {"list": unique} if isinstance(broker, RedisBroker) else {"queue": unique}

        @broker.subscriber(**kwargs)
        async def handle(body: str) -> None:
            got.append(body)

        async with run(broker):
            await publish()
            await wait_until(lambda: len(got) >= 2)
            await wait_until(lambda: len(exporter.get_finished_spans()) >= 6)
            await asyncio.sleep(0.05)
        assert sorted(got) == ["a", "b"]
        return exporter.get_finished_spans()

    sqlite_broker = sqlite_with_tracing(db_url)
    spans = await run_batch(
        sqlite_broker, real_sqlite, lambda: sqlite_broker.publish_batch("a", "b", queue=unique)
    )
    redis_broker = redis_with_tracing()
    redis_spans = await run_batch(
        redis_broker, in_memory_redis, lambda: redis_broker.publish_batch("a", "b", list=unique)
    )

    producer_create = [
        s for s in spans if s.kind is SpanKind.PRODUCER and s.name.endswith("create")
    ]
    assert len(producer_create) == 1
    assert producer_create[0].attributes[SpanAttributes.MESSAGING_BATCH_MESSAGE_COUNT] == 2
    consumer_create = [
        s for s in spans if s.kind is SpanKind.CONSUMER and s.name.endswith("create")
    ]
    assert len(consumer_create) == 2
    for span in consumer_create:
        assert [(link.context.trace_id, link.context.span_id) for link in span.links] == [
            (producer_create[0].context.trace_id, producer_create[0].context.span_id)
        ]

    def unparent_consumer_create(rows: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
        # TestRedisBroker runs handlers inline, inside the publish span, so its consumer
        # "create" spans get that span as parent; a real broker's consumer runs elsewhere.
        out = [
            (r[0], r[1], None, *r[3:])
            if r[1] is SpanKind.CONSUMER and r[0].endswith("create")
            else r
            for r in rows
        ]
        return sorted(out, key=repr)

    roles = {unique: "<q>"}
    assert unparent_consumer_create(shape(spans, roles)) == unparent_consumer_create(
        shape(redis_spans, roles)
    )


# -- Prometheus ----------------------------------------------------------------------------


async def consume_n(broker: Any, run: Runner, queue: str, n: int) -> None:
    got: list[str] = []

    @broker.subscriber(queue)
    async def handle(body: str) -> None:
        got.append(body)

    async with run(broker):
        for i in range(n):
            await broker.publish(f"m{i}", queue)
        await wait_until(lambda: len(got) >= n)
        await asyncio.sleep(0.05)
    assert sorted(got) == sorted(f"m{i}" for i in range(n))


def families(registry: CollectorRegistry) -> dict[str, tuple[str, frozenset[str]]]:
    """Metric family name -> (type, label names of its samples)."""
    out: dict[str, tuple[str, frozenset[str]]] = {}
    for metric in registry.collect():
        labels = frozenset(k for s in metric.samples for k in s.labels if k != "le")
        out[metric.name] = (metric.type, labels)
    return out


async def test_prometheus_metrics_are_labelled_with_the_queue(db_url: str, unique: str) -> None:
    n = 4
    registry = CollectorRegistry()
    broker = SqliteBroker(
        db_url, middlewares=[SqlitePrometheusMiddleware(registry=registry, app_name="app")]
    )
    await consume_n(broker, real_sqlite, unique, n)

    consumed = {"app_name": "app", "broker": "sqlite", "handler": unique}
    get = registry.get_sample_value
    assert get("faststream_received_messages_total", consumed) == n
    assert get("faststream_received_messages_size_bytes_count", consumed) == n
    assert get("faststream_received_messages_size_bytes_sum", consumed) == n * len(b"m0")
    assert get("faststream_received_processed_messages_total", {**consumed, "status": "acked"}) == n
    assert get("faststream_received_processed_messages_duration_seconds_count", consumed) == n
    assert get("faststream_received_processed_messages_duration_seconds_sum", consumed) > 0
    assert get("faststream_received_messages_in_process", consumed) == 0
    published = {"app_name": "app", "broker": "sqlite", "destination": unique}
    assert get("faststream_published_messages_total", {**published, "status": "success"}) == n
    assert get("faststream_published_messages_duration_seconds_count", published) == n


async def test_prometheus_metric_names_match_faststream_redis(db_url: str, unique: str) -> None:
    sqlite_registry, redis_registry = CollectorRegistry(), CollectorRegistry()
    await consume_n(
        SqliteBroker(db_url, middlewares=[SqlitePrometheusMiddleware(registry=sqlite_registry)]),
        real_sqlite,
        unique,
        3,
    )
    await consume_n(
        RedisBroker(middlewares=[RedisPrometheusMiddleware(registry=redis_registry)]),
        in_memory_redis,
        unique,
        3,
    )
    sqlite_families, redis_families = families(sqlite_registry), families(redis_registry)
    assert sqlite_families == redis_families
    assert "faststream_received_processed_messages_duration_seconds" in sqlite_families

    # Same samples, label for label, apart from the broker label.
    def samples(registry: CollectorRegistry, system: str) -> dict[tuple[Any, ...], float]:
        out = {}
        for metric in registry.collect():
            for s in metric.samples:
                if s.name.endswith(("_created", "_sum")) or s.name.endswith("_bucket"):
                    continue  # timestamps and timings differ by nature
                assert s.labels.get("broker", system) == system
                labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "broker"))
                out[(s.name, labels)] = s.value
        return out

    assert samples(sqlite_registry, "sqlite") == samples(redis_registry, "redis")


async def test_prometheus_request_reply_matches_redis_without_reply_queue_labels(
    db_url: str, unique: str
) -> None:
    """Replies are not counted as publishes to (or receptions from) a per-requester queue:
    such labels would grow without bound, one per broker instance."""

    async def requests(broker: Any, run: Runner) -> None:
        @broker.subscriber(unique)
        async def echo(body: str) -> str:
            return body.upper()

        async with run(broker):
            for _ in range(2):
                reply = await broker.request("x", unique, timeout=5)
                assert await reply.decode() == "X"

    sqlite_registry, redis_registry = CollectorRegistry(), CollectorRegistry()
    await requests(
        SqliteBroker(db_url, middlewares=[SqlitePrometheusMiddleware(registry=sqlite_registry)]),
        real_sqlite,
    )
    await requests(
        RedisBroker(middlewares=[RedisPrometheusMiddleware(registry=redis_registry)]),
        in_memory_redis,
    )

    def totals(registry: CollectorRegistry) -> dict[tuple[Any, ...], float]:
        return {
            (s.name, tuple(sorted((k, v) for k, v in s.labels.items() if k != "broker"))): s.value
            for m in registry.collect()
            for s in m.samples
            if s.name.endswith("_total")
        }

    sqlite_totals = totals(sqlite_registry)
    assert sqlite_totals == totals(redis_registry)
    assert not [k for k in sqlite_totals if REPLY_QUEUE_PREFIX in repr(k)]
    assert (
        sqlite_totals[
            (
                "faststream_received_messages_total",
                (("app_name", "faststream"), ("handler", unique)),
            )
        ]
        == 2
    )


async def test_prometheus_counts_a_failing_handler(db_url: str, unique: str) -> None:
    registry = CollectorRegistry()
    broker = SqliteBroker(db_url, middlewares=[SqlitePrometheusMiddleware(registry=registry)])
    calls: list[str] = []

    @broker.subscriber(unique, retry=RetryPolicy(max_attempts=1))
    async def handle(body: str) -> None:
        calls.append(body)
        raise RuntimeError("boom")

    async with real_sqlite(broker):
        await broker.publish("bad", unique)
        await wait_until(lambda: bool(calls))
        dead: list[Any] = []

        async def dead_lettered() -> None:
            while not dead:
                dead.extend(await broker.dead_letters(unique))
                await asyncio.sleep(0.01)

        await asyncio.wait_for(dead_lettered(), 5)

    labels = {"app_name": "faststream", "broker": "sqlite", "handler": unique}
    get = registry.get_sample_value
    assert get("faststream_received_messages_total", labels) == 1
    assert (
        get(
            "faststream_received_processed_messages_exceptions_total",
            {**labels, "exception_type": "RuntimeError"},
        )
        == 1
    )
    assert get("faststream_received_processed_messages_duration_seconds_count", labels) == 1
    statuses = {
        s.labels["status"]: s.value
        for m in registry.collect()
        if m.name == "faststream_received_processed_messages"
        for s in m.samples
        if s.name.endswith("_total") and s.labels.get("handler") == unique
    }
    assert sum(statuses.values()) == 1
    assert "acked" not in statuses, statuses
