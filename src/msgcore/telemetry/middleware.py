"""msgcore's tracing middleware: a ``publish`` and a ``process`` span per message.

It replaces FastStream's ``TelemetryMiddleware`` on msgcore's brokers because of what
that one costs per message (measured in docs/benchmarks.md: 34-54 % of throughput, 25-47 %
even with 10 % of traces sampled): a ``create`` span per root publish, baggage extraction
on every publish and consume, context scopes. This one keeps to what a trace needs:

- the W3C ``traceparent`` header, written and parsed directly (FastStream's middleware
  and any OpenTelemetry consumer read it: mixed deployments stay in one trace);
- spans named ``"{channel} publish"`` / ``"{channel} process"`` with the attributes of
  ``naming.py``, the same on every transport;
- FastStream's processing duration histogram (``messaging.process.duration``, with the
  system, destination and channel); publishing is on the ``publish`` spans only.

Measured per message (docs/benchmarks.md "Tracing"): a histogram recording costs about as
much as a span (OpenTelemetry cleans, copies and hashes the attributes each time), and
a span the sampler drops still costs the SDK's whole ``start_span``. So there is one
recording per processed message, and under head sampling a message that is not sampled
(most of them) gets a context made here, with the SDK's own decision (``sampling.py``):
no span object, no sampler call. The current context is read and set through
``current.py``.
"""

from __future__ import annotations

import re
import time
from collections.abc import Awaitable, Callable
from functools import partial
from operator import itemgetter
from typing import TYPE_CHECKING, Any

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
from opentelemetry.trace.span import DEFAULT_TRACE_STATE

from msgcore.failures import ErrorRecorder, RecordError
from msgcore.message import MessageView
from msgcore.telemetry import current
from msgcore.telemetry.durations import (
    DURATION_BUCKETS,
    PROCESS_DURATION,
    PROCESS_DURATION_DESCRIPTION,
)
from msgcore.telemetry.naming import (
    ATTR_ATTEMPT,
    ATTR_CHANNEL,
    ChannelNames,
    MsgcoreTelemetryProvider,
)
from msgcore.telemetry.sampling import RootSampling, unsampled_child_ids

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage

    from msgcore.telemetry.setup import Telemetry

__all__ = ["TracingMiddleware", "format_traceparent", "parse_traceparent"]

TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"
_TRACEPARENT = re.compile(r"00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_FLAGS = tuple(TraceFlags(f) for f in range(256))
"""TraceFlags by value: made once, not per message."""
_SAMPLED = TraceFlags.SAMPLED


_new_tuple = tuple.__new__


def _tuple_layout() -> bool:
    """Whether ``SpanContext`` is the tuple (trace id, span id, remote, flags, state,
    valid) that OpenTelemetry 1.x makes it: then the middleware builds and reads the
    contexts of unsampled messages as tuples, not through ``__new__`` and five properties
    (a fifth of the per-message instructions of an unsampled process/publish pair)."""
    fields = (1, 2, True, _FLAGS[1], DEFAULT_TRACE_STATE, True)
    probe = SpanContext(*fields[:5])
    built = _new_tuple(SpanContext, fields)
    read = (built.trace_id, built.span_id, built.is_remote, built.trace_flags)
    return tuple(probe) == fields and (*read, built.trace_state, built.is_valid) == fields


_AS_TUPLE = _tuple_layout()


def _properties(ctx: SpanContext) -> tuple[int, int, TraceFlags, TraceState, bool]:
    return ctx.trace_id, ctx.span_id, ctx.trace_flags, ctx.trace_state, ctx.is_valid


_fields: Callable[[SpanContext], tuple[int, int, TraceFlags, TraceState, bool]] = (
    itemgetter(0, 1, 3, 4, 5) if _AS_TUPLE else _properties
)
"""(trace id, span id, flags, state, valid) of a ``SpanContext``: one C call where the
layout allows, instead of five property calls."""


_FORMAT = "00-%032x-%016x-%02x"
"""``traceparent`` by %-formatting: a third of an f-string's time with three format
specs."""


def format_traceparent(ctx: SpanContext) -> str:
    return _FORMAT % (ctx.trace_id, ctx.span_id, ctx.trace_flags)


def _parse(value: Any) -> tuple[int, int, int] | None:
    """(trace id, span id, flags) of a ``traceparent`` header (version 00), or None."""
    found = _TRACEPARENT.fullmatch(value) if type(value) is str else None
    if found is None:
        return None
    trace_id, span_id, flags = found.groups()
    tid, sid = int(trace_id, 16), int(span_id, 16)
    if not tid or not sid:
        return None
    return tid, sid, int(flags, 16)


def _trace_state(state: Any) -> TraceState | None:
    return TraceState.from_header([state]) if isinstance(state, str) and state else None


def parse_traceparent(value: Any, state: Any = None) -> SpanContext | None:
    """The remote parent of a ``traceparent`` header (version 00), or None if invalid."""
    parsed = _parse(value)
    return None if parsed is None else _remote(parsed, _trace_state(state))


def _remote(parsed: tuple[int, int, int], state: TraceState | None) -> SpanContext:
    tid, sid, flags = parsed
    return SpanContext(
        trace_id=tid, span_id=sid, is_remote=True, trace_flags=_FLAGS[flags], trace_state=state
    )


class TracingMiddleware:
    """The broker middleware factory (one ``_Tracing`` per message)."""

    def __init__(self, telemetry: Telemetry, names: ChannelNames) -> None:
        self.tracer = telemetry.tracer_provider.get_tracer("msgcore")
        self.provider = MsgcoreTelemetryProvider(names)
        self.system = self.provider.messaging_system
        self.record_duration, self.add_duration = _duration_recorders(telemetry, self.system)
        # per (channel, operation): the span attributes; operation None: the metric's
        self._attrs: dict[tuple[str, str | None], dict[str, Any]] = {}
        self.processed: dict[str, Callable[[float], None]] = {}
        """Per channel: records a processing duration of a message that succeeded."""
        self._new_span_id = unsampled_child_ids(telemetry.tracer_provider)
        """Span ids for children of unsampled parents, whose contexts are made here
        without a span object or the SDK's sampling work: ``ParentBased`` with its
        default delegates drops them anyway (None: the sampler may record such a child,
        every span goes through the SDK)."""
        self.roots = RootSampling.of(self.tracer)
        """Root sampling decided here (None: by the SDK for every root)."""

    def attrs(self, channel: str, operation: str | None) -> dict[str, Any]:
        """Attributes of ``channel``'s spans of ``operation`` (``process``/``publish``), or
        of its metric (None: no operation), built once per channel."""
        attrs = self._attrs.get((channel, operation))
        if attrs is None:
            attrs = {
                SpanAttributes.MESSAGING_SYSTEM: self.system,
                SpanAttributes.MESSAGING_DESTINATION_NAME: channel,
                ATTR_CHANNEL: channel,
            }
            if operation is not None:
                attrs[SpanAttributes.MESSAGING_OPERATION] = operation
            self._attrs[(channel, operation)] = attrs
        return attrs

    def record_processed(self, channel: str, failed: str | None, seconds: float) -> None:
        """The duration of a message of ``channel`` (``failed``: its error type); the
        first success of a channel makes its entry in ``processed``."""
        attrs = self.attrs(channel, None)
        if failed is None:
            self.processed[channel] = add = self.add_duration(channel, attrs)
            add(seconds)
        else:
            self.record_duration(channel, attrs, failed, seconds)

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _Tracing:
        return _Tracing(msg, context=context, owner=self)

    def recording(self, record: ErrorRecorder) -> Callable[..., _Tracing]:
        """This factory, whose middlewares also hand the handler's exception to the
        transport's ``record``: one middleware layer per message instead of two
        (``msgcore.failures.ErrorRecording``)."""

        return partial(_Tracing, owner=self, record=record)


class _Tracing(RecordError):
    __slots__ = ("_process", "owner")

    def __init__(
        self,
        msg: Any,
        /,
        *,
        context: ContextRepo,
        owner: TracingMiddleware,
        record: ErrorRecorder | None = None,
    ) -> None:
        self.msg, self.context, self.record = msg, context, record
        self.owner = owner
        self._process: Span | None = None

    async def consume_scope(
        self, call_next: Callable[[Any], Awaitable[Any]], msg: StreamMessage[Any]
    ) -> Any:
        owner = self.owner
        channel = owner.provider.get_consume_destination_name(msg)
        headers = msg.headers
        parsed = _parse(headers.get(TRACEPARENT))
        state = headers.get(TRACESTATE)
        state = _trace_state(state) if state else None
        new_span_id = owner._new_span_id
        span: Span
        recording = True
        if parsed is not None and new_span_id is not None and not parsed[2] & _SAMPLED:
            # the common case under head sampling: one context, no parent span object
            # (see _new_span_id; written out: this runs for every message)
            tid, _, flags = parsed
            if _AS_TUPLE:
                own = (tid, new_span_id(), False, _FLAGS[flags], state or DEFAULT_TRACE_STATE, True)
                span = NonRecordingSpan(_new_tuple(SpanContext, own))
            else:  # another OpenTelemetry's SpanContext layout
                span = NonRecordingSpan(
                    SpanContext(tid, new_span_id(), False, _FLAGS[flags], state)
                )
            ctx = current.with_span(span)
            recording = False
        else:
            parent = None
            if parsed is not None:
                parent = current.with_span(NonRecordingSpan(_remote(parsed, state)))
            # given at the start: each set_attribute afterwards takes the span's lock and
            # cleans the value again (~4 µs of a ~39 µs sampled process span)
            attributes = {
                **owner.attrs(channel, "process"),
                ATTR_ATTEMPT: MessageView(msg).attempt,
                SpanAttributes.MESSAGING_MESSAGE_ID: msg.message_id,
            }
            if msg.correlation_id:
                attributes[SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID] = msg.correlation_id
            span = owner.tracer.start_span(
                f"{channel} process", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
            )
            ctx = current.with_span(span, parent)
        self._process = span
        token = current.attach(ctx)
        started = time.perf_counter()
        failed: str | None = None
        try:
            return await call_next(msg)
        except Exception as exc:
            failed = type(exc).__name__
            _failed(span, exc)
            raise
        finally:
            current.detach(token)
            if recording:  # a NonRecordingSpan's end() does nothing
                span.end()
            seconds = time.perf_counter() - started
            add = owner.processed.get(channel) if failed is None else None
            if add is None:
                owner.record_processed(channel, failed, seconds)
            else:
                add(seconds)

    async def publish_scope(self, call_next: Callable[[Any], Awaitable[Any]], cmd: Any) -> Any:
        owner = self.owner
        up = current.current_span_context()
        trace_id, _, flags, state, valid = _fields(up)
        after_process = not valid and self._process is not None
        if after_process:
            # a reply is published after the process scope has left: parent it explicitly
            assert self._process is not None
            up = self._process.get_span_context()
            trace_id, _, flags, state, valid = _fields(up)
        if valid:
            if owner._new_span_id is not None and not flags & _SAMPLED:
                # a child of an unsampled parent (see _new_span_id)
                span_id = owner._new_span_id()
                cmd.headers = _with_traceparent(cmd.headers, trace_id, span_id, flags, state)
                return await call_next(cmd)
        elif owner.roots is not None:  # a root: the sampler decides
            root = owner.roots.dropped_root()
            if root is not None:
                _inject(cmd, root)
                return await call_next(cmd)
        channel = owner.provider.get_publish_destination_name(cmd)
        parent = None
        if after_process:
            assert self._process is not None
            parent = current.with_span(self._process)
        try:
            span = owner.tracer.start_span(
                f"{channel} publish",
                context=parent,
                kind=SpanKind.PRODUCER,
                attributes=owner.attrs(channel, "publish"),
            )
        finally:
            if owner.roots is not None:
                owner.roots.started()
        _inject(cmd, span.get_span_context())
        try:
            return await call_next(cmd)
        except Exception as exc:
            _failed(span, exc)
            raise
        finally:
            span.end()


def _inject(cmd: Any, ctx: SpanContext) -> None:
    trace_id, span_id, flags, state, valid = _fields(ctx)
    if valid:
        cmd.headers = _with_traceparent(cmd.headers, trace_id, span_id, flags, state)


def _with_traceparent(
    given: dict[str, Any] | None, trace_id: int, span_id: int, flags: int, state: TraceState
) -> dict[str, Any]:
    """A copy of ``given`` headers (the caller's dict stays as it was) with the W3C
    context of span ``span_id``."""
    headers = dict(given) if given else {}
    headers[TRACEPARENT] = _FORMAT % (trace_id, span_id, flags)
    if state is not DEFAULT_TRACE_STATE and state:
        headers[TRACESTATE] = state.to_header()
    return headers


def _failed(span: Span, exc: Exception) -> None:
    if span.is_recording():
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, str(exc)))


def _duration_recorders(
    telemetry: Telemetry, system: str
) -> tuple[
    Callable[[str, dict[str, Any], str | None, float], None],
    Callable[[str, dict[str, Any]], Callable[[float], None]],
]:
    """``record(channel, attributes, error type, seconds)``, and ``adder(channel,
    attributes)`` making ``add(seconds)`` for a channel's successes, into msgcore's own
    histogram when ``setup()`` made the meter provider (a few µs cheaper per message
    than the SDK's, docs/benchmarks.md), else into an SDK histogram (an application's
    provider, its views apply)."""
    own = telemetry.process_duration
    if own is not None:

        def record(channel: str, attrs: dict[str, Any], failed: str | None, s: float) -> None:
            own.record(
                (system, channel, failed),
                attrs if failed is None else {**attrs, "error.type": failed},
                s,
            )

        def adder(channel: str, attrs: dict[str, Any]) -> Callable[[float], None]:
            return own.adder((system, channel, None), attrs)

        return record, adder
    histogram = telemetry.meter_provider.get_meter("msgcore").create_histogram(
        PROCESS_DURATION,
        unit="s",
        description=PROCESS_DURATION_DESCRIPTION,
        explicit_bucket_boundaries_advisory=DURATION_BUCKETS,
    )

    def record_sdk(channel: str, attrs: dict[str, Any], failed: str | None, s: float) -> None:
        histogram.record(s, attrs if failed is None else {**attrs, "error.type": failed})

    def adder_sdk(channel: str, attrs: dict[str, Any]) -> Callable[[float], None]:
        return partial(_record_sdk, histogram, attrs)

    return record_sdk, adder_sdk


def _record_sdk(histogram: Any, attrs: dict[str, Any], seconds: float) -> None:
    histogram.record(seconds, attrs)
