"""Sampling decisions the tracing middleware takes itself, exactly as the SDK would.

Under head sampling most messages are not sampled, and for those the SDK's
``start_span`` is most of what tracing costs: a root publish that its sampler drops
took ~71k instructions through the SDK against ~20k for everything else the middleware
does for it (docs/benchmarks.md "Tracing"). Where the provider's sampler is one of the
SDK's deterministic ones, the decisions are taken here instead:

- the child of an unsampled parent is never sampled (``ParentBased`` with its default
  delegates): its context gets a new span id, nothing else;
- a root is decided by the SDK's own rule on its trace id (``TraceIdRatioBased``:
  the id's low 64 bits below the rate's bound; ``ALWAYS_ON``/``ALWAYS_OFF``). A dropped
  root needs only a context; a sampled one is started by the SDK as before, with the
  trace id drawn here (the tracer's id generator hands it over), so the decision and
  the span agree.

Any other sampler (a custom one, the SDK's own span metrics switched on) keeps every
span going through the SDK.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from typing import Any

from opentelemetry.sdk.environment_variables import OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)
from opentelemetry.trace import SpanContext, TraceFlags

__all__ = ["RootSampling", "unsampled_child_ids"]


def unsampled_child_ids(provider: Any) -> Callable[[], int] | None:
    """The provider's span id generator when its sampler never samples the child of an
    unsampled parent (the default ``parentbased_*`` samplers), else None."""
    sampler = getattr(provider, "sampler", None)
    generator = getattr(provider, "id_generator", None)
    if generator is None or not isinstance(sampler, ParentBased):
        return None
    delegates = (sampler._remote_parent_not_sampled, sampler._local_parent_not_sampled)
    if any(d is not ALWAYS_OFF for d in delegates):
        return None
    new_id: Callable[[], int] = generator.generate_span_id
    return new_id


class _HandedIds(IdGenerator):
    """A tracer's id generator that can be handed the next trace id (per thread: one
    tracer serves every broker of the process)."""

    def __init__(self, inner: IdGenerator) -> None:
        self.inner = inner
        self._next = threading.local()

    def hand(self, trace_id: int) -> None:
        self._next.trace_id = trace_id

    def take_back(self) -> None:
        self._next.trace_id = 0

    def generate_span_id(self) -> int:
        return self.inner.generate_span_id()

    def generate_trace_id(self) -> int:
        trace_id: int = getattr(self._next, "trace_id", 0)
        if trace_id:
            self._next.trace_id = 0
            return trace_id
        return self.inner.generate_trace_id()

    def is_trace_id_random(self) -> bool:
        return self.inner.is_trace_id_random()


def _root_bound(sampler: Sampler) -> int | None:
    """The trace-id bound below which ``sampler`` samples a root (every id: 2**64, none:
    0), or None if its decision is not a function of the trace id alone."""
    if isinstance(sampler, ParentBased):
        sampler = sampler._root
    if sampler is ALWAYS_OFF:
        return 0
    if sampler is ALWAYS_ON:
        return TraceIdRatioBased.TRACE_ID_LIMIT + 1
    if type(sampler) is TraceIdRatioBased:
        return sampler.bound
    return None


class RootSampling:
    """Decides the sampling of a root span of ``tracer`` (see the module)."""

    def __init__(self, tracer: Any, bound: int, ids: _HandedIds) -> None:
        self._tracer = tracer
        self._bound = bound
        self._ids = ids
        random = ids.is_trace_id_random()
        self._flags = TraceFlags(TraceFlags.RANDOM_TRACE_ID if random else TraceFlags.DEFAULT)

    @classmethod
    def of(cls, tracer: Any) -> RootSampling | None:
        """For an SDK tracer whose sampler decides roots by trace id alone, else None."""
        if os.environ.get(OTEL_PYTHON_SDK_INTERNAL_METRICS_ENABLED, "").strip().lower() == "true":
            return None  # the SDK counts every span it starts, sampled or not
        sampler = getattr(tracer, "sampler", None)
        ids = getattr(tracer, "id_generator", None)
        bound = None if sampler is None else _root_bound(sampler)
        if bound is None or not isinstance(ids, IdGenerator) or not hasattr(tracer, "_is_enabled"):
            return None
        if bound > TraceIdRatioBased.TRACE_ID_LIMIT:
            return None  # every root sampled: nothing to decide
        if not isinstance(ids, _HandedIds):
            ids = _HandedIds(ids)
            tracer.id_generator = ids
        return cls(tracer, bound, ids)

    def dropped_root(self) -> SpanContext | None:
        """A new root's context when the sampler drops it. None: the root is sampled
        (or the tracer is switched off), the caller starts it with the SDK and then
        calls ``started()``; its trace id is the one drawn here."""
        if not self._tracer._is_enabled():
            return None
        trace_id = self._ids.inner.generate_trace_id()
        if (trace_id & TraceIdRatioBased.TRACE_ID_LIMIT) < self._bound:
            self._ids.hand(trace_id)
            return None
        return SpanContext(trace_id, self._ids.inner.generate_span_id(), False, self._flags)

    def started(self) -> None:
        """After the SDK started the span: a trace id it did not take is not kept."""
        self._ids.take_back()
