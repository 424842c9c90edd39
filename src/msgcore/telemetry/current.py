"""The current OpenTelemetry context, read and set without the API's call layers.

``trace.get_current_span()``, ``set_span_in_context()`` and ``context.attach()`` each go
through three to five Python calls to reach one ``ContextVar``; the tracing middleware
uses them for every message, traced or not (docs/benchmarks.md "Tracing": about 30 calls
per message pair). When OpenTelemetry keeps its context in its default contextvars
runtime, this module reads and sets that variable directly; with any other runtime
context (``OTEL_PYTHON_CONTEXT``) it calls the API. Either way the context is the one
every OpenTelemetry user sees.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar, Token
from typing import Any, cast

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext
from opentelemetry.trace import (
    INVALID_SPAN,
    INVALID_SPAN_CONTEXT,
    NonRecordingSpan,
    Span,
    SpanContext,
)

__all__ = ["SPAN_KEY", "attach", "current_span_context", "detach", "get_current", "with_span"]

SPAN_KEY: str = next(iter(trace.set_span_in_context(INVALID_SPAN, Context())))
"""The key the trace API keeps the current span under (taken from the API itself)."""


def _runtime_variable() -> ContextVar[Context] | None:
    runtime = getattr(otel_context, "_RUNTIME_CONTEXT", None)
    variable = getattr(runtime, "_current_context", None)
    if type(runtime) is ContextVarsRuntimeContext and isinstance(variable, ContextVar):
        return variable
    return None


_VARIABLE = _runtime_variable()

get_current: Callable[[], Context]
attach: Callable[[Context], Token[Context]]
detach: Callable[[Token[Context]], Any]
if _VARIABLE is not None:
    get_current = _VARIABLE.get
    attach = _VARIABLE.set
    detach = _VARIABLE.reset
else:  # pragma: no cover - another runtime context: the API's own calls
    get_current = otel_context.get_current
    attach = otel_context.attach
    detach = otel_context.detach


_SPAN_TYPES: set[type] = {NonRecordingSpan}
"""Classes known to be ``Span``s: a set lookup instead of the ABC's ``isinstance``
(a Python-level call) for every publish."""


def current_span_context() -> SpanContext:
    """``trace.get_current_span().get_span_context()``."""
    span = get_current().get(SPAN_KEY)
    if span is None:  # before the ABC check: most contexts hold no span
        return INVALID_SPAN_CONTEXT
    kind = type(span)
    if kind not in _SPAN_TYPES:
        if not isinstance(span, Span):
            return INVALID_SPAN_CONTEXT
        _SPAN_TYPES.add(kind)
    return cast(Span, span).get_span_context()


def with_span(span: Span, parent: Context | None = None) -> Context:
    """``trace.set_span_in_context(span, parent)``: ``parent`` (default: the current
    context) with ``span`` as its span."""
    base = get_current() if parent is None else parent
    return Context({**base, SPAN_KEY: span})
