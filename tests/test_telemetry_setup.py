"""Telemetry set up by environment alone, as a ``faststream run`` worker gets it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import metrics

from msgcore import Settings, telemetry


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
