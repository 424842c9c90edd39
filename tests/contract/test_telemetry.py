"""Traces on every transport (in memory and real): one trace per job, the same span names
and msgcore attributes everywhere, only ``messaging.system`` differs."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest
from faststream import Header
from opentelemetry import trace
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan

from msgcore import Client, JobFailed, JobStatus, RetryPolicy, Router, telemetry
from msgcore.telemetry import Telemetry
from tests.metrics import queue_depth_points

from .harness import Transport, running, wait_until

SYSTEM = {"sqlite": "sqlite", "redis": "redis", "rabbit": "rabbitmq"}


def _memory_traces() -> Iterator[Telemetry]:
    tel = telemetry.setup("contract", "memory", set_global=False)
    try:
        yield tel
    finally:
        telemetry.reset()


@pytest.fixture
def traces() -> Iterator[Telemetry]:
    yield from _memory_traces()


@pytest.fixture
def unsampled_traces(monkeypatch: pytest.MonkeyPatch) -> Iterator[Telemetry]:
    """``traces`` under head sampling that keeps no trace (the SDK's own variables)."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0")
    yield from _memory_traces()


def shape(spans: list[ReadableSpan], unique: str) -> list[tuple[str, str, dict[str, Any]]]:
    """Spans as (name without the test's prefix, kind, msgcore attributes), sorted."""
    out = []
    for span in spans:
        attrs = {
            k: v.replace(f"{unique}.", "") if isinstance(v, str) else v
            for k, v in (span.attributes or {}).items()
            if k.startswith("msgcore.") and k != "msgcore.job_id"
        }
        out.append((span.name.replace(f"{unique}.", ""), span.kind.name, attrs))
    return sorted(out, key=repr)


def metric_points(traces: Telemetry) -> dict[tuple[str, str | None], Any]:
    """(metric name, msgcore.channel attribute) -> value of sums (count of histograms)."""
    assert isinstance(traces.metric_reader, InMemoryMetricReader)
    data = traces.metric_reader.get_metrics_data()
    points: dict[tuple[str, str | None], Any] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    channel = point.attributes.get("msgcore.channel") if point.attributes else None
                    value = getattr(point, "value", None)
                    if value is None:
                        value = getattr(point, "count", None)
                    points[(metric.name, None if channel is None else str(channel))] = value
    return points


async def test_one_trace_from_submit_to_completion(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    router = Router(prefix=f"{unique}.")
    onward = router.publisher("thumbs")

    @router.subscriber("render")
    @onward
    async def render(doc: str) -> str:
        return doc.upper()

    @router.subscriber("thumbs")
    async def thumbs(doc: str) -> None:
        return None

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running(transport, router, store_url) as client:
        traces.clear()
        job = await client.submit(f"{unique}.render", "a.md")
        assert await job.result(timeout=10) == "A.MD"
        names = {f"{unique}.render submit", f"{unique}.render process"}
        names |= {f"{unique}.thumbs publish", f"{unique}.thumbs process"}
        await wait_until(lambda: names <= {s.name for s in traces.spans()}, what=f"spans {names}")
        spans = traces.spans()

    trace_ids = {s.context.trace_id for s in spans if s.context is not None}
    assert len(trace_ids) == 1, [(s.name, s.context) for s in spans]
    by_name = {s.name: s for s in spans}
    submit = by_name[f"{unique}.render submit"]
    assert submit.parent is None  # the job's trace starts at the client
    process = by_name[f"{unique}.render process"]
    assert process.attributes is not None
    assert process.attributes["messaging.system"] == SYSTEM[transport.name]
    assert process.attributes["msgcore.job_id"] == job.id
    assert process.attributes["msgcore.channel"] == f"{unique}.render"
    assert process.attributes["msgcore.attempt"] == 1
    complete = by_name[f"{unique}.render complete"]
    assert complete.parent is not None and complete.parent.span_id == process.context.span_id
    # submit -> publish -> process: the worker's span hangs off the client's publish
    publish = by_name[f"{unique}.render publish"]
    assert publish.parent is not None and publish.parent.span_id == submit.context.span_id
    assert process.parent is not None and process.parent.span_id == publish.context.span_id

    # the same span names and msgcore attributes on every transport
    assert shape(spans, unique) == [
        (
            "render complete",
            "INTERNAL",
            {"msgcore.attempt": 1, "msgcore.channel": "render"},
        ),
        (
            "render process",
            "CONSUMER",
            {"msgcore.attempt": 1, "msgcore.channel": "render"},
        ),
        ("render publish", "PRODUCER", {"msgcore.channel": "render"}),
        ("render submit", "PRODUCER", {"msgcore.channel": "render"}),
        (
            "thumbs process",
            "CONSUMER",
            {"msgcore.attempt": 1, "msgcore.channel": "thumbs"},
        ),
        ("thumbs publish", "PRODUCER", {"msgcore.channel": "thumbs"}),
    ]


async def test_a_publish_outside_any_span_starts_the_trace(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    router = Router(prefix=f"{unique}.")
    send = router.publisher("work")

    @router.subscriber("work")
    async def work(n: int) -> None:
        return None

    async with running(transport, router, f"sqlite:///{tmp_path / 'store.db'}"):
        traces.clear()
        await send.publish(1)
        names = {f"{unique}.work publish", f"{unique}.work process"}
        await wait_until(lambda: names <= {s.name for s in traces.spans()}, what=f"spans {names}")
        by_name = {s.name: s for s in traces.spans()}
    publish, process = by_name[f"{unique}.work publish"], by_name[f"{unique}.work process"]
    assert publish.parent is None
    assert process.parent is not None and process.parent.span_id == publish.context.span_id
    assert process.context.trace_id == publish.context.trace_id


async def test_unsampled_traces_carry_their_trace_id_across_hops(
    transport: Transport, unsampled_traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    """Head sampling (the SDK's ``parentbased_traceidratio``) drops a trace: no span is
    exported, but every hop still sees the one trace id (logs and downstream services
    correlate on it) and the metrics count every message."""
    tel = unsampled_traces
    router = Router(prefix=f"{unique}.")
    onward = router.publisher("thumbs")
    seen: dict[str, tuple[int, bool, str | None]] = {}

    def note(hop: str, header: Any) -> None:
        ctx = trace.get_current_span().get_span_context()
        seen[hop] = (ctx.trace_id, ctx.trace_flags.sampled, header)

    @router.subscriber("render")
    @onward
    async def render(doc: str, traceparent: str | None = Header(default=None)) -> str:
        note("render", traceparent)
        return doc.upper()

    @router.subscriber("thumbs")
    async def thumbs(doc: str, traceparent: str | None = Header(default=None)) -> None:
        note("thumbs", traceparent)

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.render", "a.md")
        assert await job.result(timeout=10) == "A.MD"
        await wait_until(lambda: "thumbs" in seen, what="the second hop")
        tel.flush()
        assert tel.spans() == []
        found = metric_points(tel)
    (render_trace, render_sampled, render_header), (thumbs_trace, thumbs_sampled, header) = (
        seen["render"],
        seen["thumbs"],
    )
    assert render_trace and render_trace == thumbs_trace
    assert not render_sampled and not thumbs_sampled
    # (the SDK sets the W3C "random trace id" flag 02 beside the unset sampled flag 01)
    assert render_header is not None and not int(render_header[53:], 16) & 1
    # the onward message names a new (unrecorded) parent in the same trace
    assert header is not None and header[3:35] == f"{render_trace:032x}"
    assert header[53:] == render_header[53:] and header != render_header
    assert found[("messaging.process.duration", f"{unique}.render")] == 1
    assert found[("messaging.process.duration", f"{unique}.thumbs")] == 1


async def test_cache_hits_and_misses_are_on_the_spans(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("render", cache=True)
    async def render(doc: str) -> str:
        return doc[::-1]

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running(transport, router, store_url) as client:
        first = await client.submit(f"{unique}.render", "abc")
        assert await first.result(timeout=10) == "cba"
        await wait_until(
            lambda: any(s.name.endswith("render process") for s in traces.spans()),
            what="the process span",
        )
        traces.clear()
        again = await client.submit(f"{unique}.render", "abc")
        assert again.cached
        spans = traces.spans()
    [submit] = [s for s in spans if s.name == f"{unique}.render submit"]
    assert submit.attributes is not None and submit.attributes["msgcore.cache"] == "hit"
    assert not [s for s in spans if s.name.endswith("publish")]  # nothing was sent
    # metrics: the worker's miss, and FastStream's messaging metrics of the same broker
    found = metric_points(traces)
    assert found[("msgcore.cache.misses", f"{unique}.render")] == 1
    assert any(name.startswith("messaging.process") for name, _ in found)


async def running_job(client: Client, job_id: str) -> bool:
    found = await client.store.get_job(job_id)
    return found is not None and found.status is JobStatus.RUNNING


async def test_lock_wait_is_on_the_span_and_in_a_histogram(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("orders", lock="customer")
    async def place(order: dict[str, Any]) -> int:
        return int(order["n"])

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running(transport, router, store_url) as client:
        first = await client.submit(f"{unique}.orders", {"customer": "ada", "n": 1})
        assert await first.result(timeout=10) == 1
        held = await client.lock(f"{unique}.orders:ada").__aenter__()
        second_id = "lock-wait-" + unique

        async def release_once_waiting() -> None:
            # the attempt is running (waiting for the key) before the lock goes: its wait
            # is at least the 0.3 s slept here, however slow the delivery was
            await wait_until(
                lambda: running_job(client, second_id), what="the second job's attempt"
            )
            await asyncio.sleep(0.3)
            await held.release()

        # in memory the handler runs inside submit(): the release cannot wait for it
        releasing = asyncio.create_task(release_once_waiting())
        second = await client.submit(
            f"{unique}.orders", {"customer": "ada", "n": 2}, job_id=second_id
        )
        assert await second.result(timeout=10) == 2
        await releasing
        await wait_until(
            lambda: len([s for s in traces.spans() if s.name.endswith("orders process")]) == 2,
            what="two process spans",
        )
        spans = traces.spans()
    waits = {}
    for span in spans:
        if span.name == f"{unique}.orders process":
            assert span.attributes is not None
            assert span.attributes["msgcore.lock.key"] == f"{unique}.orders:ada"
            waits[span.attributes["msgcore.job_id"]] = span.attributes["msgcore.lock.wait"]
    assert waits[first.id] < 1.0  # the key was free: one store round trip
    assert 0.3 <= waits[second.id] < 10
    found = metric_points(traces)
    assert found[("msgcore.lock.wait.duration", f"{unique}.orders")] == 2


@pytest.mark.real_only
async def test_dead_letter_is_an_event_and_retries_share_the_trace(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("fragile", retry=RetryPolicy(max_attempts=2, backoff=0.05, jitter=0))
    async def fragile(n: int) -> int:
        raise ValueError(f"cannot handle {n}")

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.fragile", 7)
        with pytest.raises(JobFailed):
            await job.result(timeout=20)
        await wait_until(
            lambda: len([s for s in traces.spans() if s.name.endswith("fragile process")]) >= 2,
            what="two attempts' process spans",
        )
        spans = traces.spans()
    attempts = sorted(
        (s for s in spans if s.name == f"{unique}.fragile process"),
        key=lambda s: (s.attributes or {}).get("msgcore.attempt", 0),
    )
    assert [(s.attributes or {}).get("msgcore.attempt") for s in attempts] == [1, 2]
    assert len({s.context.trace_id for s in spans if s.context is not None}) == 1
    [event] = [e for e in attempts[-1].events if e.name == "msgcore.dead_letter"]
    assert event.attributes is not None
    assert event.attributes["reason"] == "ValueError: cannot handle 7"
    assert not [e for e in attempts[0].events if e.name == "msgcore.dead_letter"]


async def test_opting_out_leaves_brokers_untraced(
    transport: Transport, traces: Telemetry, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("quiet")
    async def quiet(n: int) -> int:
        return n

    broker = transport.broker(router, telemetry={"enabled": False})
    assert not hasattr(broker, "msgcore_telemetry")
    assert telemetry.active(transport.settings(telemetry={"enabled": False})) is None
    assert telemetry.active(transport.settings()) is traces


@pytest.mark.real_only  # in memory the reply is handed back, not published
async def test_a_request_and_its_reply_share_the_trace(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("price")
    async def price(n: int) -> int:
        return n * 100

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    async with running(transport, router, store_url) as client:
        traces.clear()
        assert await client.request(f"{unique}.price", 3, timeout=10) == 300
        await wait_until(
            lambda: "(reply) publish" in {s.name for s in traces.spans()}, what="the reply span"
        )
        spans = traces.spans()
    by_name = {s.name: s for s in spans}
    process = by_name[f"{unique}.price process"]
    reply = by_name["(reply) publish"]
    assert reply.context.trace_id == process.context.trace_id
    assert reply.parent is not None and reply.parent.span_id == process.context.span_id


@pytest.mark.real_only  # the counts are the transport's own: in memory there is no queue
async def test_queue_depth_gauge_counts_each_state(
    transport: Transport, traces: Telemetry, unique: str, tmp_path: Any
) -> None:
    """A worker reports its channels' messages per group and state, read from the
    transport; after it stops it reports nothing (not its last, stale counts)."""
    router = Router(prefix=f"{unique}.")
    release = asyncio.Event()

    @router.subscriber("slow")
    async def slow(n: int) -> int:
        await release.wait()
        return n

    @router.subscriber("doomed", retry=RetryPolicy(max_attempts=1))
    async def doomed(n: int) -> int:
        raise ValueError(n)

    store_url = f"sqlite:///{tmp_path / 'store.db'}"
    broker = transport.broker(
        router,
        store_url=store_url,
        telemetry={"queue_depth_interval": 0.05},
        # one delivery at a time: RabbitMQ counts the rest as waiting (it cannot tell
        # delivered-but-unsettled ones apart)
        rabbit={"exchange": transport.unique, "prefetch": 1},
    )
    sampler = broker.msgcore_queue_depth
    rabbit = transport.name == "rabbit"

    def depth() -> dict[tuple[str, str, str], int]:
        return queue_depth_points(traces.metric_reader, f"{unique}.")

    async with (
        transport.run(broker),
        Client(settings=transport.settings(store_url=store_url)) as client,
    ):
        await client.submit(f"{unique}.slow", 0, delay=60)
        for n in range(1, 5):
            await client.submit(f"{unique}.slow", n)
        await client.submit(f"{unique}.doomed", 1)

        def settled() -> dict[tuple[str, str, str], int] | None:
            found = depth()
            busy = found.get(("slow", "default", "waiting"), 0)
            busy += found.get(("slow", "default", "running"), 1 if rabbit else 0)
            # RabbitMQ's reader leaves the delay queues out (see OpsBackend.depth)
            delayed = rabbit or found.get(("slow", "default", "delayed")) == 1
            wanted = delayed and busy == 4
            return found if wanted and found.get(("doomed", "default", "dead")) == 1 else None

        try:
            found = await wait_until(
                settled,
                within=20,
                what="the queue depth of both channels",
            )
        finally:
            release.set()  # else stopping the broker waits for the blocked handlers
        drained = await wait_until(
            lambda: (
                depth().get(("slow", "default", "waiting")) == 0
                and depth().get(("slow", "default", "running"), 0) == 0
            ),
            within=20,
            what="the slow channel drained",
        )
        assert drained
    # a state the reader does not tell is no point, not a 0: RabbitMQ cannot tell
    # delivered-but-unsettled messages, and its wait and delay queues are left out
    states = {"waiting", "dead"}
    states |= set() if rabbit else {"running", "delayed", "retrying"}
    assert {s for (c, g, s) in found if c == "slow"} == states
    assert rabbit or found[("slow", "default", "retrying")] == 0
    assert found[("doomed", "default", "waiting")] == 0
    assert sampler.observations() == []
    assert depth() == {}
