"""msgcore's own processing-duration histogram against the SDK's (same points, less work)."""

from __future__ import annotations

import math
from typing import Any

from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics import Histogram as SdkHistogram
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    InMemoryMetricReader,
    MetricExporter,
    MetricExportResult,
    MetricsData,
)
from opentelemetry.sdk.resources import Resource

from msgcore import telemetry
from msgcore.telemetry.durations import (
    DURATION_BUCKETS,
    DurationHistogram,
    PeriodicDurationReader,
)

ATTRS = {"messaging.system": "sqlite", "msgcore.channel": "render"}
FAILED = {**ATTRS, "error.type": "ValueError"}
VALUES = [0.0, 0.004, 0.005, 0.0051, 0.3, 10.0, 42.0]


def points(data: MetricsData | None) -> dict[tuple[str, str, str | None], Any]:
    """(scope, metric, error.type) -> data point."""
    assert data is not None
    found = {}
    for resource in data.resource_metrics:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                for point in metric.data.data_points:
                    error = (point.attributes or {}).get("error.type")
                    found[(scope.scope.name, metric.name, error)] = point
    return found


def test_the_same_points_as_the_sdk_histogram() -> None:
    tel = telemetry.setup("durations", exporter="memory", set_global=False)
    try:
        assert tel.process_duration is not None
        # the SDK's own histogram with the same bounds, as a reference
        reference_reader = InMemoryMetricReader()
        reference = (
            MeterProvider(
                metric_readers=[reference_reader], exemplar_filter=AlwaysOffExemplarFilter()
            )
            .get_meter("ref")
            .create_histogram("d", unit="s", explicit_bucket_boundaries_advisory=DURATION_BUCKETS)
        )
        for value in VALUES:
            tel.process_duration.record(("sqlite", "render", None), ATTRS, value)
            reference.record(value, ATTRS)
        tel.process_duration.record(("sqlite", "render", "ValueError"), FAILED, 0.02)

        found = points(tel.metric_reader.get_metrics_data())  # type: ignore[union-attr]
        ours = found[("msgcore", "messaging.process.duration", None)]
        (theirs,) = points(reference_reader.get_metrics_data()).values()
        for name in ("count", "sum", "min", "max"):
            assert getattr(ours, name) == getattr(theirs, name), name
        assert list(ours.bucket_counts) == list(theirs.bucket_counts)
        assert list(ours.explicit_bounds) == list(theirs.explicit_bounds) == list(DURATION_BUCKETS)
        assert dict(ours.attributes) == ATTRS
        assert found[("msgcore", "messaging.process.duration", "ValueError")].count == 1
        # the processed-messages counter follows the histogram's counts
        assert found[("msgcore", "messaging.process.messages", None)].value == len(VALUES)
        assert found[("msgcore", "messaging.process.messages", "ValueError")].value == 1
        # cumulative: a second read still holds everything
        again = points(tel.metric_reader.get_metrics_data())  # type: ignore[union-attr]
        assert again[("msgcore", "messaging.process.duration", None)].count == len(VALUES)
    finally:
        tel.shutdown()


def test_joins_msgcore_scope_of_the_sdk_metrics() -> None:
    tel = telemetry.setup("durations", exporter="memory", set_global=False)
    try:
        assert tel.process_duration is not None
        tel.meter_provider.get_meter("msgcore").create_counter("msgcore.cache.hits").add(2)
        tel.process_duration.record("k", ATTRS, 0.01)
        data = tel.metric_reader.get_metrics_data()  # type: ignore[union-attr]
        assert data is not None
        scopes = [s for r in data.resource_metrics for s in r.scope_metrics]
        assert [s.scope.name for s in scopes] == ["msgcore"]
        names = sorted(m.name for m in scopes[0].metrics)
        assert names == [
            "messaging.process.duration",
            "messaging.process.messages",
            "msgcore.cache.hits",
        ]
    finally:
        tel.shutdown()


class _Capture(MetricExporter):
    def __init__(self, temporality: AggregationTemporality) -> None:
        super().__init__(preferred_temporality={SdkHistogram: temporality})
        self.exports: list[MetricsData] = []

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **kwargs: Any
    ) -> MetricExportResult:
        self.exports.append(metrics_data)
        return MetricExportResult.SUCCESS

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
        return None


def _periodic(temporality: AggregationTemporality) -> tuple[DurationHistogram, _Capture, Any]:
    histogram = DurationHistogram("messaging.process.duration")
    exporter = _Capture(temporality)
    reader = PeriodicDurationReader(exporter, [histogram], Resource.create({}))
    reader._export_interval_millis = math.inf  # collect only when the test says
    provider = MeterProvider(metric_readers=[reader])
    provider.get_meter("msgcore").create_observable_counter(
        "messaging.process.messages", callbacks=[histogram.observe_counts]
    )
    return histogram, exporter, provider


def test_delta_exporters_get_what_came_since_the_last_export() -> None:
    histogram, exporter, provider = _periodic(AggregationTemporality.DELTA)
    try:
        histogram.record("k", ATTRS, 0.01)
        histogram.record("k", ATTRS, 0.02)
        provider.force_flush()
        histogram.record("k", ATTRS, 0.5)
        provider.force_flush()
        provider.force_flush()  # nothing new
    finally:
        provider.shutdown()
    first = points(exporter.exports[0])[("msgcore", "messaging.process.duration", None)]
    second = points(exporter.exports[1])[("msgcore", "messaging.process.duration", None)]
    assert (first.count, round(first.sum, 6), first.max) == (2, 0.03, 0.02)
    assert (second.count, second.sum, second.min, second.max) == (1, 0.5, 0.5, 0.5)
    assert second.start_time_unix_nano == first.time_unix_nano
    assert ("msgcore", "messaging.process.duration", None) not in points(exporter.exports[2])


def test_a_channel_adder_counts_into_the_same_point_as_record() -> None:
    # the tracing middleware records a channel's successes through adder(): the point
    # is looked up once per channel instead of once per message
    by_record = DurationHistogram("d")
    by_adder = DurationHistogram("d")
    add = by_adder.adder(("sqlite", "render", None), ATTRS)
    for value in VALUES:
        by_record.record(("sqlite", "render", None), ATTRS, value)
        add(value)
    ours, theirs = (h.collect(delta=False) for h in (by_adder, by_record))
    assert ours is not None and theirs is not None

    def seen(metric: Any) -> list[tuple[Any, ...]]:
        return [
            (p.count, p.sum, p.min, p.max, list(p.bucket_counts), dict(p.attributes))
            for p in metric.data.data_points
        ]

    assert seen(ours) == seen(theirs)
    assert seen(ours)[0][0] == len(VALUES)


def test_a_channel_adder_keeps_counting_across_delta_exports() -> None:
    histogram, exporter, provider = _periodic(AggregationTemporality.DELTA)
    try:
        add = histogram.adder("k", ATTRS)
        add(0.01)
        add(0.02)
        provider.force_flush()
        add(0.5)
        histogram.record("k", ATTRS, 0.25)  # the same point either way
        provider.force_flush()
    finally:
        provider.shutdown()
    first = points(exporter.exports[0])[("msgcore", "messaging.process.duration", None)]
    second = points(exporter.exports[1])[("msgcore", "messaging.process.duration", None)]
    assert (first.count, round(first.sum, 6), first.min, first.max) == (2, 0.03, 0.01, 0.02)
    assert (second.count, second.sum, second.min, second.max) == (2, 0.75, 0.25, 0.5)
    assert sum(second.bucket_counts) == 2


def test_periodic_export_carries_the_histogram_without_other_metrics() -> None:
    histogram, exporter, provider = _periodic(AggregationTemporality.CUMULATIVE)
    try:
        provider.force_flush()  # nothing recorded: nothing to export
        histogram.record("k", ATTRS, 0.01)
        provider.force_flush()
    finally:
        provider.shutdown()
    exported = [points(data) for data in exporter.exports]
    durations = [p[("msgcore", "messaging.process.duration", None)] for p in exported if p]
    assert durations and durations[0].count == 1
    assert all(d.count == 1 for d in durations)  # cumulative: the same point again
