"""The sampling decisions and context handling the tracing middleware takes over from the
SDK (``telemetry/sampling.py``, ``telemetry/current.py``) agree with the SDK's own."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from types import SimpleNamespace
from typing import Any

import pytest
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags

from msgcore import telemetry
from msgcore.telemetry import current
from msgcore.telemetry import middleware as middleware_module
from msgcore.telemetry.middleware import TracingMiddleware, parse_traceparent
from msgcore.telemetry.naming import ChannelNames
from msgcore.telemetry.sampling import RootSampling, _HandedIds


class _Ids(IdGenerator):
    """Trace ids from a list, span ids counting up."""

    def __init__(self, trace_ids: list[int]) -> None:
        self.trace_ids = list(trace_ids)
        self.span = 0

    def generate_trace_id(self) -> int:
        return self.trace_ids.pop(0)

    def generate_span_id(self) -> int:
        self.span += 1
        return self.span


class _Coin(Sampler):
    """Not a function of the trace id: msgcore must leave it to the SDK."""

    def should_sample(self, *args: Any, **kwargs: Any) -> SamplingResult:
        return SamplingResult(Decision.DROP)

    def get_description(self) -> str:
        return "coin"


def _tracer(sampler: Sampler, ids: IdGenerator) -> Any:
    provider = TracerProvider(sampler=sampler, id_generator=ids)
    return provider.get_tracer("msgcore-test")


@pytest.mark.parametrize(
    ("sampler", "decides"),
    [
        (ParentBased(TraceIdRatioBased(0.1)), True),
        (TraceIdRatioBased(0.5), True),
        (ParentBased(ALWAYS_OFF), True),
        (ALWAYS_OFF, True),
        (ParentBased(ALWAYS_ON), False),  # every root sampled: nothing to decide
        (_Coin(), False),
        (ParentBased(_Coin()), False),
    ],
)
def test_roots_are_decided_here_only_for_the_sdks_deterministic_samplers(
    sampler: Sampler, decides: bool
) -> None:
    assert (RootSampling.of(_tracer(sampler, RandomIdGenerator())) is not None) is decides


def test_the_sdks_own_span_metrics_keep_every_root_in_the_sdk(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED", "true")
    assert RootSampling.of(_tracer(TraceIdRatioBased(0.5), RandomIdGenerator())) is None


def test_a_root_is_dropped_exactly_when_the_sdk_would_drop_it() -> None:
    ratio = TraceIdRatioBased(0.5)
    # around the bound, and ids whose high bits must not count (the rule reads the low 64)
    ids = [
        ratio.bound - 1,
        ratio.bound,
        ratio.bound + 1,
        1,
        (1 << 64) - 1,
        (5 << 64) | 3,
        (5 << 64) | ((1 << 64) - 2),
    ]
    for trace_id in ids:
        expected = ratio.should_sample(None, trace_id, "x").decision
        tracer = _tracer(ParentBased(ratio), _Ids([trace_id]))
        sampling = RootSampling.of(tracer)
        assert sampling is not None
        dropped = sampling.dropped_root()
        if expected is Decision.DROP:
            assert dropped is not None and dropped.trace_id == trace_id
            assert not dropped.trace_flags.sampled and not dropped.is_remote
        else:
            assert dropped is None
            # the SDK starts the span with the trace id the decision was taken on
            span = tracer.start_span("x")
            sampling.started()
            assert span.is_recording() and span.get_span_context().trace_id == trace_id


def test_a_dropped_roots_flags_are_the_sdks() -> None:
    # the SDK marks random trace ids (W3C level 2): a dropped root made here does too
    sdk = _tracer(ALWAYS_OFF, RandomIdGenerator()).start_span("x").get_span_context()
    sampling = RootSampling.of(_tracer(ALWAYS_OFF, RandomIdGenerator()))
    assert sampling is not None
    ours = sampling.dropped_root()
    assert ours is not None and ours.trace_flags == sdk.trace_flags
    assert ours.trace_state == sdk.trace_state


def test_a_handed_trace_id_stays_in_its_thread() -> None:
    # one tracer serves every broker of the process, each loop in its own thread
    handed = _HandedIds(_Ids([7, 8, 9]))
    handed.hand(42)
    got: list[int] = []
    thread = threading.Thread(target=lambda: got.append(handed.generate_trace_id()))
    thread.start()
    thread.join()
    assert got == [7]
    assert handed.generate_trace_id() == 42
    assert handed.generate_trace_id() == 8  # handed once only
    handed.hand(43)
    handed.take_back()
    assert handed.generate_trace_id() == 9  # taken back: not used later


@pytest.fixture
def _fresh() -> Iterator[None]:
    telemetry.reset()
    yield
    telemetry.reset()


@pytest.mark.usefixtures("_fresh")
def test_roots_published_through_the_middleware_are_sampled_at_the_configured_rate(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.25")
    exporter = InMemorySpanExporter()
    tel = telemetry.setup("t", exporter, set_global=False, metrics_enabled=False)
    tel.tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    names = ChannelNames("sqlite")
    names.declare("work")
    middleware = TracingMiddleware(tel, names)
    assert middleware.roots is not None

    async def publish(cmd: Any) -> None:
        return None

    async def main() -> list[SpanContext]:
        sent = []
        for _ in range(4000):
            cmd = SimpleNamespace(headers={}, destination="work", correlation_id="c")
            await middleware(None, context=SimpleNamespace()).publish_scope(publish, cmd)
            parsed = parse_traceparent(cmd.headers["traceparent"])
            assert parsed is not None
            sent.append(parsed)
        return sent

    sent = asyncio.run(main())
    sampled = [c for c in sent if c.trace_flags.sampled]
    # one decision per root: 25 % (a second draw by the SDK would give 6.25 %)
    assert 0.21 < len(sampled) / len(sent) < 0.29
    assert len({c.trace_id for c in sent}) == len(sent)
    spans = {s.context.trace_id: s for s in exporter.get_finished_spans()}
    assert set(spans) == {c.trace_id for c in sampled}  # each sampled root is one span
    assert all(spans[c.trace_id].context.span_id == c.span_id for c in sampled)


def test_the_context_made_here_is_the_one_the_api_sees() -> None:
    span = NonRecordingSpan(SpanContext(5, 6, False, TraceFlags(1)))
    outer = trace.set_span_in_context(NonRecordingSpan(SpanContext(1, 2, False)))
    outer_token = otel_context.attach(otel_context.set_value("k", "v", outer))
    try:
        token = current.attach(current.with_span(span))
        try:
            assert trace.get_current_span() is span
            assert otel_context.get_value("k") == "v"  # the rest of the context is kept
            assert current.current_span_context() == span.get_span_context()
        finally:
            current.detach(token)
        assert trace.get_current_span().get_span_context().trace_id == 1
        assert current.current_span_context().trace_id == 1
        explicit = current.with_span(span, trace.set_span_in_context(span))
        assert trace.get_current_span(explicit) is span
    finally:
        otel_context.detach(outer_token)
    assert not current.current_span_context().is_valid


def test_span_context_is_the_tuple_the_middleware_reads_and_builds() -> None:
    # else every message takes the property path (still correct, tested below)
    assert middleware_module._AS_TUPLE


@pytest.mark.usefixtures("_fresh")
@pytest.mark.parametrize("as_tuple", [True, False], ids=["tuple", "properties"])
def test_an_unsampled_message_continues_its_trace_on_either_path(
    monkeypatch: pytest.MonkeyPatch, as_tuple: bool
) -> None:
    if not as_tuple:  # what an OpenTelemetry with another SpanContext layout gets
        monkeypatch.setattr(middleware_module, "_AS_TUPLE", False)
        monkeypatch.setattr(middleware_module, "_fields", middleware_module._properties)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv("OTEL_TRACES_SAMPLER_ARG", "0.5")
    exporter = InMemorySpanExporter()
    tel = telemetry.setup("t", exporter, set_global=False, metrics_enabled=False)
    names = ChannelNames("sqlite")
    names.declare("work")
    middleware = TracingMiddleware(tel, names)
    trace_id, parent_id = 0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331
    given = {"traceparent": f"00-{trace_id:032x}-{parent_id:016x}-00", "tracestate": "v=abc"}
    msg = SimpleNamespace(
        headers=given, raw_message=SimpleNamespace(queue="work"), message_id="m", body=b""
    )
    onward_headers = {"x": "1"}
    seen: dict[str, Any] = {}

    async def publish(cmd: Any) -> None:
        seen["published"] = cmd.headers

    async def handle(_: Any) -> None:
        seen["process"] = trace.get_current_span().get_span_context()
        cmd = SimpleNamespace(headers=onward_headers, destination="work", correlation_id="c")
        await middleware(None, context=SimpleNamespace()).publish_scope(publish, cmd)

    asyncio.run(middleware(None, context=SimpleNamespace()).consume_scope(handle, msg))

    process: SpanContext = seen["process"]
    assert (process.trace_id, process.is_remote, process.trace_flags.sampled) == (
        trace_id,
        False,
        False,
    )
    assert process.is_valid and process.span_id not in (0, parent_id)
    assert process.trace_state.get("v") == "abc"
    # the same value the constructor makes, field for field
    assert process == SpanContext(
        trace_id, process.span_id, False, TraceFlags(0), process.trace_state
    )
    onward = parse_traceparent(seen["published"]["traceparent"])
    assert onward is not None
    assert (onward.trace_id, onward.trace_flags.sampled) == (trace_id, False)
    assert onward.span_id not in (0, parent_id, process.span_id)
    assert seen["published"]["tracestate"] == "v=abc"
    assert seen["published"]["x"] == "1"
    assert onward_headers == {"x": "1"}  # the caller's headers are copied, not changed
    assert not exporter.get_finished_spans()  # the parent's decision holds: none recorded


def test_the_current_span_of_any_span_class_is_read_and_anything_else_is_none() -> None:
    class _Own(NonRecordingSpan):
        pass

    own = _Own(SpanContext(7, 8, False, TraceFlags(1)))
    for value, expected in ((own, own.get_span_context()), (object(), None)):
        token = current.attach(Context({current.SPAN_KEY: value}))
        try:
            found = current.current_span_context()
            assert found == expected if expected is not None else not found.is_valid
        finally:
            current.detach(token)
