"""msgcore's tracing middleware: a ``publish`` and a ``process`` span per message.

It replaces FastStream's ``TelemetryMiddleware`` on msgcore's brokers because of what
that one costs per message (measured in docs/benchmarks.md: 34-54 % of throughput, 25-47 %
even with 10 % of traces sampled): a ``create`` span per root publish, baggage extraction
on every publish and consume, context scopes. This one keeps to what a trace needs:

- the W3C ``traceparent`` header, written and parsed directly (FastStream's middleware
  and any OpenTelemetry consumer read it: mixed deployments stay in one trace);
- spans named ``"{channel} publish"`` / ``"{channel} process"`` with the attributes of
  ``naming.py``, the same on every transport;
- FastStream's duration histograms (``messaging.publish.duration``,
  ``messaging.process.duration``) with the same names and attributes.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.metrics import Histogram
from opentelemetry.semconv.trace import SpanAttributes
from opentelemetry.trace import (
    NonRecordingSpan,
    Span,
    SpanContext,
    SpanKind,
    Status,
    StatusCode,
    TraceFlags,
    TraceState,
)

from msgcore.telemetry.naming import ATTR_CHANNEL, ChannelNames, MsgcoreTelemetryProvider

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage

    from msgcore.telemetry.setup import Telemetry

__all__ = ["TracingMiddleware", "format_traceparent", "parse_traceparent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_HEX = frozenset("0123456789abcdef")


def format_traceparent(ctx: SpanContext) -> str:
    return f"00-{ctx.trace_id:032x}-{ctx.span_id:016x}-{int(ctx.trace_flags):02x}"


def parse_traceparent(value: Any, state: Any = None) -> SpanContext | None:
    """The remote parent of a ``traceparent`` header (version 00), or None if invalid."""
    if not isinstance(value, str) or len(value) != 55:
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:]
    if version != "00" or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    if not (_HEX.issuperset(trace_id) and _HEX.issuperset(span_id) and _HEX.issuperset(flags)):
        return None
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if not tid or not sid:
        return None
    trace_state = TraceState.from_header([state]) if isinstance(state, str) and state else None
    return SpanContext(
        trace_id=tid,
        span_id=sid,
        is_remote=True,
        trace_flags=TraceFlags(int(flags, 16) & 0x01),
        trace_state=trace_state,
    )


class TracingMiddleware:
    """The broker middleware factory (one ``_Tracing`` per message)."""

    def __init__(self, telemetry: Telemetry, names: ChannelNames) -> None:
        self.tracer = telemetry.tracer_provider.get_tracer("msgcore")
        self.provider = MsgcoreTelemetryProvider(names)
        self.system = self.provider.messaging_system
        meter = telemetry.meter_provider.get_meter("msgcore")
        self.process_duration = meter.create_histogram(
            "messaging.process.duration", unit="s", description="Time to process a message"
        )
        self.publish_duration = meter.create_histogram(
            "messaging.publish.duration", unit="s", description="Time to publish a message"
        )
        # per channel: the span attributes and metric attributes, built once
        self._consume_attrs: dict[str, dict[str, Any]] = {}
        self._publish_attrs: dict[str, dict[str, Any]] = {}

    def consume_attrs(self, channel: str) -> dict[str, Any]:
        attrs = self._consume_attrs.get(channel)
        if attrs is None:
            attrs = self._consume_attrs[channel] = {
                SpanAttributes.MESSAGING_SYSTEM: self.system,
                SpanAttributes.MESSAGING_DESTINATION_NAME: channel,
                SpanAttributes.MESSAGING_OPERATION: "process",
                ATTR_CHANNEL: channel,
            }
        return attrs

    def publish_attrs(self, channel: str) -> dict[str, Any]:
        attrs = self._publish_attrs.get(channel)
        if attrs is None:
            attrs = self._publish_attrs[channel] = {
                SpanAttributes.MESSAGING_SYSTEM: self.system,
                SpanAttributes.MESSAGING_DESTINATION_NAME: channel,
                SpanAttributes.MESSAGING_OPERATION: "publish",
                ATTR_CHANNEL: channel,
            }
        return attrs

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _Tracing:
        return _Tracing(msg, context=context, owner=self)


class _Tracing(BaseMiddleware):
    __slots__ = ("_process_ctx", "owner")

    def __init__(self, msg: Any, /, *, context: ContextRepo, owner: TracingMiddleware) -> None:
        super().__init__(msg, context=context)
        self.owner = owner
        self._process_ctx: otel_context.Context | None = None

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        owner = self.owner
        channel = owner.provider.get_consume_destination_name(msg)
        headers = msg.headers
        parent = parse_traceparent(headers.get(TRACEPARENT), headers.get(TRACESTATE))
        parent_ctx = None if parent is None else trace.set_span_in_context(NonRecordingSpan(parent))
        attrs = owner.consume_attrs(channel)
        span = owner.tracer.start_span(
            f"{channel} process", context=parent_ctx, kind=SpanKind.CONSUMER, attributes=attrs
        )
        if span.is_recording():
            span.set_attribute(SpanAttributes.MESSAGING_MESSAGE_ID, msg.message_id)
            if msg.correlation_id:
                span.set_attribute(
                    SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID, msg.correlation_id
                )
        self._process_ctx = trace.set_span_in_context(span, parent_ctx)
        token = otel_context.attach(self._process_ctx)
        try:
            return await _measured(call_next(msg), span, owner.process_duration, attrs)
        finally:
            otel_context.detach(token)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        owner = self.owner
        channel = owner.provider.get_publish_destination_name(cmd)
        attrs = owner.publish_attrs(channel)
        # a reply is published after the process scope has left: parent it explicitly
        current = trace.get_current_span().get_span_context()
        parent = self._process_ctx if not current.is_valid else None
        span = owner.tracer.start_span(
            f"{channel} publish", context=parent, kind=SpanKind.PRODUCER, attributes=attrs
        )
        ctx = span.get_span_context()
        if ctx.is_valid:
            headers = dict(cmd.headers or {})
            headers[TRACEPARENT] = format_traceparent(ctx)
            if ctx.trace_state:
                headers[TRACESTATE] = ctx.trace_state.to_header()
            cmd.headers = headers
        return await _measured(call_next(cmd), span, owner.publish_duration, attrs)


async def _measured(
    step: Awaitable[Any], span: Span, duration: Histogram, attrs: dict[str, Any]
) -> Any:
    """Await ``step``; then end ``span`` (with the error, if any) and record its duration
    (failures with ``error.type``, as FastStream's middleware records them)."""
    started = time.perf_counter()
    failed: str | None = None
    try:
        return await step
    except Exception as exc:
        failed = type(exc).__name__
        if span.is_recording():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, str(exc)))
        raise
    finally:
        span.end()
        metric = attrs if failed is None else {**attrs, "error.type": failed}
        duration.record(time.perf_counter() - started, metric)
