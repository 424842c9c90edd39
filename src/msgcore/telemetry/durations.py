"""The processing-duration histogram, aggregated by msgcore and read with the SDK's.

Recording one measurement in OpenTelemetry's SDK (1.45) costs about as much as a span:
it cleans, copies, sorts and hashes the attributes of every measurement (~7-20 µs here,
docs/benchmarks.md "Tracing"), on every processed message. msgcore knows each channel's
attributes in advance, so it counts durations into buckets itself (a dict lookup, a
bisection and a few additions) and hands the SDK finished data points when a reader
collects. The SDK offers no hook for pre-aggregated data (no metric producers in 1.45),
so ``setup()`` builds its metric readers from the classes here, which add the points to
what the SDK collected, and registers ``observe_counts`` as the processed-messages
counter (an observable instrument: no per-message SDK work either).
"""

from __future__ import annotations

import threading
import time
from bisect import bisect_left
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from opentelemetry.metrics import CallbackOptions, Observation
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Histogram,
    HistogramDataPoint,
    InMemoryMetricReader,
    Metric,
    MetricReader,
    MetricsData,
    PeriodicExportingMetricReader,
    ResourceMetrics,
    ScopeMetrics,
)
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.util.instrumentation import InstrumentationScope

__all__ = [
    "DURATION_BUCKETS",
    "PROCESS_DURATION",
    "PROCESS_DURATION_DESCRIPTION",
    "DurationHistogram",
    "InMemoryDurationReader",
    "PeriodicDurationReader",
]

DURATION_BUCKETS: tuple[float, ...] = (
    0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
)  # fmt: skip
"""Bucket bounds in seconds: OpenTelemetry's advice for messaging durations (the SDK's
default bounds, 0-10000, are meant for milliseconds: every duration in seconds would
fall into the first bucket)."""

_SCOPE = InstrumentationScope("msgcore")

PROCESS_DURATION = "messaging.process.duration"
PROCESS_DURATION_DESCRIPTION = "Time to process a message"


@dataclass(slots=True)
class _Point:
    attributes: dict[str, Any]
    start_ns: int
    buckets: list[int]
    bounds: tuple[float, ...]
    lock: threading.Lock
    """The histogram's: ``add`` and the reader's ``collect`` take it."""
    count: int = 0
    total: float = 0.0
    low: float = float("inf")
    high: float = float("-inf")
    processed: int = 0
    """All measurements ever (``count`` starts again after a delta collect)."""

    def restart(self) -> None:
        self.count, self.total, self.low, self.high = 0, 0.0, float("inf"), float("-inf")
        self.buckets = [0] * len(self.buckets)

    def add(self, seconds: float) -> None:
        """Count one measurement (the caller does not hold the lock)."""
        with self.lock:
            self.count += 1
            self.processed += 1
            self.total += seconds
            self.low = min(self.low, seconds)
            self.high = max(self.high, seconds)
            self.buckets[bisect_left(self.bounds, seconds)] += 1


@dataclass
class DurationHistogram:
    """``name``'s points, one per attribute set, counted here (thread-safe: readers
    collect from their own thread)."""

    name: str
    unit: str = "s"
    description: str = ""
    bounds: tuple[float, ...] = DURATION_BUCKETS
    _points: dict[Hashable, _Point] = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _since_ns: int = field(default_factory=time.time_ns, repr=False)

    def record(self, key: Hashable, attributes: Mapping[str, Any], seconds: float) -> None:
        """Count ``seconds`` under ``attributes`` (``key`` names the attribute set: the
        caller knows it, so no hashing of the attributes themselves)."""
        with self._lock:
            point = self._point(key, attributes)
        point.add(seconds)

    def adder(self, key: Hashable, attributes: Mapping[str, Any]) -> Callable[[float], None]:
        """``record(key, attributes, seconds)`` as ``add(seconds)``: the point looked up
        once (per channel, for every message it processes); one Python call a message."""
        with self._lock:
            return self._point(key, attributes).add

    def _point(self, key: Hashable, attributes: Mapping[str, Any]) -> _Point:
        """``key``'s point, made on first use (the caller holds the lock)."""
        point = self._points.get(key)
        if point is None:
            buckets = [0] * (len(self.bounds) + 1)
            point = _Point(dict(attributes), time.time_ns(), buckets, self.bounds, self._lock)
            self._points[key] = point
        return point

    def collect(self, *, delta: bool) -> Metric | None:
        """The points so far (cumulative), or since the last collect (``delta``)."""
        now = time.time_ns()
        with self._lock:
            since = self._since_ns if delta else 0
            data = [
                HistogramDataPoint(
                    attributes=dict(p.attributes),
                    start_time_unix_nano=since or p.start_ns,
                    time_unix_nano=now,
                    count=p.count,
                    sum=p.total,
                    bucket_counts=list(p.buckets),
                    explicit_bounds=list(self.bounds),
                    min=p.low,
                    max=p.high,
                )
                for p in self._points.values()
                if p.count
            ]
            if delta:
                self._since_ns = now
                for point in self._points.values():
                    point.restart()
        if not data:
            return None
        temporality = AggregationTemporality.DELTA if delta else AggregationTemporality.CUMULATIVE
        return Metric(
            name=self.name,
            description=self.description,
            unit=self.unit,
            data=Histogram(data_points=data, aggregation_temporality=temporality),
        )

    def observe_counts(self, _options: CallbackOptions) -> Iterable[Observation]:
        """The measurements per attribute set, for an observable counter: the messages
        processed (and failed, with ``error.type``). It also makes the SDK collect
        something whenever this histogram has points (it skips exporting otherwise)."""
        with self._lock:
            return [Observation(p.processed, dict(p.attributes)) for p in self._points.values()]


def _merged(data: MetricsData, metrics: list[Metric], resource: Resource) -> MetricsData:
    """``data`` with ``metrics`` added to msgcore's scope (made if absent)."""
    if not metrics:
        return data
    if not data.resource_metrics:
        return MetricsData(
            resource_metrics=[
                ResourceMetrics(
                    resource=resource,
                    scope_metrics=[ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url="")],
                    schema_url="",
                )
            ]
        )
    first, *rest = data.resource_metrics
    scopes = list(first.scope_metrics)
    for i, scope in enumerate(scopes):
        if scope.scope.name == _SCOPE.name:
            scopes[i] = replace(scope, metrics=[*scope.metrics, *metrics])
            break
    else:
        scopes.append(ScopeMetrics(scope=_SCOPE, metrics=metrics, schema_url=""))
    return MetricsData(resource_metrics=[replace(first, scope_metrics=scopes), *rest])


def _is_delta(reader: MetricReader) -> bool:
    """The reader collects histograms as deltas (configured by its exporter for OTLP:
    OTEL_EXPORTER_OTLP_METRICS_TEMPORALITY_PREFERENCE)."""
    configured = getattr(reader, "_instrument_class_temporality", {})
    return any(
        isinstance(kind, type)
        and issubclass(kind, SdkHistogram)
        and temporality == AggregationTemporality.DELTA
        for kind, temporality in configured.items()
    )


def _with_histograms(
    reader: MetricReader, histograms: list[DurationHistogram], data: MetricsData, resource: Resource
) -> MetricsData:
    delta = _is_delta(reader)
    metrics = [m for h in histograms if (m := h.collect(delta=delta)) is not None]
    return _merged(data, metrics, resource)


# _receive_metrics is the SDK's hook for a reader's subclasses: every collection passes it.


class InMemoryDurationReader(InMemoryMetricReader):
    """``InMemoryMetricReader`` whose data include msgcore's histograms."""

    def __init__(self, histograms: list[DurationHistogram], resource: Resource) -> None:
        super().__init__()
        self.histograms, self.resource = histograms, resource

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        merged = _with_histograms(self, self.histograms, metrics_data, self.resource)
        super()._receive_metrics(merged, timeout_millis, **kwargs)


class PeriodicDurationReader(PeriodicExportingMetricReader):
    """``PeriodicExportingMetricReader`` that exports msgcore's histograms with the rest."""

    def __init__(
        self, exporter: Any, histograms: list[DurationHistogram], resource: Resource
    ) -> None:
        # set before the SDK starts its export thread
        self.histograms, self.resource = histograms, resource
        super().__init__(exporter)

    def _receive_metrics(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> None:
        merged = _with_histograms(self, self.histograms, metrics_data, self.resource)
        super()._receive_metrics(merged, timeout_millis, **kwargs)
