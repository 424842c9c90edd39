"""The ``traceparent`` header msgcore's tracing middleware writes and reads."""

from __future__ import annotations

import pytest
from opentelemetry.trace import SpanContext, TraceFlags
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from msgcore.telemetry.middleware import format_traceparent, parse_traceparent


def test_round_trip_and_the_standard_propagator_agree() -> None:
    ctx = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=False,
        trace_flags=TraceFlags(1),
    )
    header = format_traceparent(ctx)
    assert header == "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    parsed = parse_traceparent(header, "vendor=abc")
    assert parsed is not None
    assert (parsed.trace_id, parsed.span_id, parsed.trace_flags.sampled) == (
        ctx.trace_id,
        ctx.span_id,
        True,
    )
    assert parsed.is_remote
    assert parsed.trace_state is not None and parsed.trace_state.get("vendor") == "abc"
    # what OpenTelemetry's own propagator (FastStream's middleware uses it) reads back
    from opentelemetry import trace

    extracted = trace.get_current_span(
        TraceContextTextMapPropagator().extract({"traceparent": header})
    ).get_span_context()
    assert (extracted.trace_id, extracted.span_id) == (ctx.trace_id, ctx.span_id)


@pytest.mark.parametrize(
    "value",
    [
        None,
        b"00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "",
        "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",  # unknown version
        "00-00000000000000000000000000000000-b7ad6b7169203331-01",  # zero trace id
        "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",  # zero span id
        "00-0AF7651916CD43DD8448EB211C80319C-b7ad6b7169203331-01",  # upper case
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b716920333z-01",
        "00_0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-extra",
    ],
)
def test_malformed_headers_start_a_new_trace(value: object) -> None:
    assert parse_traceparent(value) is None
