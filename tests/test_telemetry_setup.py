"""Telemetry set up by environment alone, as a ``faststream run`` worker gets it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics

from msgcore import ConfigurationError, Settings, telemetry
from msgcore.telemetry.setup import MEMORY_SPAN_LIMIT


@pytest.fixture(autouse=True)
def _fresh() -> Iterator[None]:
    telemetry.reset()
    yield
    telemetry.reset()


def test_metrics_can_be_left_out(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGCORE_TELEMETRY__EXPORTER", "memory")
    monkeypatch.setenv("MSGCORE_TELEMETRY__METRICS", "false")
    traced = telemetry.active(Settings())
    assert traced is not None and traced.metric_reader is None
    assert isinstance(traced.meter_provider, metrics.NoOpMeterProvider)


def test_metrics_are_on_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGCORE_TELEMETRY__EXPORTER", "memory")
    monkeypatch.delenv("MSGCORE_TELEMETRY__METRICS", raising=False)
    traced = telemetry.active(Settings())
    assert traced is not None and traced.metric_reader is not None


def test_spans_kept_in_memory_are_the_latest_only(monkeypatch: pytest.MonkeyPatch) -> None:
    """setup() without an exporter in the environment keeps spans in memory: a worker
    running for days kept every one it ever made."""
    for name in ("OTEL_TRACES_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    traced = telemetry.setup(service_name="svc", set_global=False)
    tracer = traced.tracer_provider.get_tracer("t")
    for _ in range(MEMORY_SPAN_LIMIT + 50):
        tracer.start_span("s").end()
    assert len(traced.spans()) == MEMORY_SPAN_LIMIT


def test_otel_traces_exporter_none_keeps_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OTEL_TRACES_EXPORTER", "none")
    traced = telemetry.setup(service_name="svc", set_global=False)
    traced.tracer_provider.get_tracer("t").start_span("s").end()
    with pytest.raises(ConfigurationError, match="in-memory exporter"):
        traced.spans()


@pytest.mark.parametrize(
    ("variable", "value", "says"),
    [
        ("OTEL_TRACES_EXPORTER", "bogus", "otlp, console or none"),
        ("OTEL_TRACES_SAMPLER_ARG", "2", "from 0 to 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "x", "from 0 to 1"),
        ("OTEL_TRACES_SAMPLER_ARG", "nan", "from 0 to 1"),
    ],
)
def test_a_bad_otel_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, says: str
) -> None:
    """An unknown exporter fell back to memory, and a bad ratio to tracing every
    message (the SDK's default 1.0), each with at most a warning."""
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "parentbased_traceidratio")
    monkeypatch.setenv(variable, value)
    with pytest.raises(ConfigurationError, match=says):
        telemetry.setup(service_name="svc", set_global=False)
