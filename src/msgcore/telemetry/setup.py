"""``msgcore.telemetry.setup``: tracer and meter providers in one call.

Where spans go, in order of precedence: the ``exporter`` argument; ``otlp`` when the
standard ``OTEL_EXPORTER_OTLP_ENDPOINT`` / ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`` is set or
``OTEL_TRACES_EXPORTER=otlp``; ``console`` for ``OTEL_TRACES_EXPORTER=console``; else an
in-memory exporter (``Telemetry.spans()``), which is what tests read.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import IO, Any

from opentelemetry import metrics, trace
from opentelemetry.sdk.metrics import AlwaysOffExemplarFilter, MeterProvider
from opentelemetry.sdk.metrics.export import MetricReader
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    SimpleSpanProcessor,
    SpanExporter,
    SpanExportResult,
)
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from msgcore.exceptions import ConfigurationError
from msgcore.telemetry.depth import DepthGauge
from msgcore.telemetry.durations import (
    PROCESS_DURATION,
    PROCESS_DURATION_DESCRIPTION,
    DurationHistogram,
    InMemoryDurationReader,
    PeriodicDurationReader,
)

__all__ = ["JsonLinesSpanExporter", "Telemetry", "active", "setup"]

_EXPORTERS = ("otlp", "console", "memory", "none")
MEMORY_SPAN_LIMIT = 10_000
"""Spans the in-memory exporter keeps (the latest)."""


class JsonLinesSpanExporter(SpanExporter):
    """Each finished span as one line of JSON on a stream (default: stdout).

    The ``console`` exporter: one line per span is what a terminal, ``grep`` and a test
    reading a worker's output all handle well.
    """

    def __init__(self, out: IO[str] | None = None) -> None:
        self._out = out

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        out = self._out or sys.stdout
        for span in spans:
            out.write(json.dumps(json.loads(span.to_json()), separators=(",", ":")) + "\n")
        out.flush()
        return SpanExportResult.SUCCESS

    def shutdown(self) -> None:
        return None


@dataclass
class Telemetry:
    """The providers msgcore traces and measures with (``setup()`` returns it)."""

    tracer_provider: trace.TracerProvider
    meter_provider: metrics.MeterProvider
    exporter: SpanExporter | None = None
    metric_reader: MetricReader | None = None
    service_name: str = "msgcore"
    process_duration: DurationHistogram | None = None
    """``messaging.process.duration`` counted by msgcore and read with ``metric_reader``
    (None: the meter provider is not ``setup()``'s, the SDK histogram is used)."""
    depth_gauge: DepthGauge | None = field(default=None, repr=False)
    """``msgcore.queue.depth`` on ``meter_provider``, made by the first worker that reads
    queue depth."""
    _closed: bool = field(default=False, repr=False)

    def spans(self) -> list[ReadableSpan]:
        """Finished spans, when the exporter is the in-memory one."""
        if isinstance(self.exporter, InMemorySpanExporter):
            return list(self.exporter.get_finished_spans())
        raise ConfigurationError("spans() needs the in-memory exporter: setup(exporter='memory')")

    def clear(self) -> None:
        if isinstance(self.exporter, InMemorySpanExporter):
            self.exporter.clear()

    def flush(self) -> None:
        flush = getattr(self.tracer_provider, "force_flush", None)
        if flush is not None:
            flush()

    def shutdown(self) -> None:
        if self._closed:
            return
        self._closed = True
        for provider in (self.tracer_provider, self.meter_provider):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                stop()


class _Active:
    """The telemetry of this process (a holder, not a module global rebound)."""

    current: Telemetry | None = None


class _NoExport(SpanExporter):
    """``OTEL_TRACES_EXPORTER=none``: spans are made (trace context still propagates)
    and dropped."""

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _check_sampler() -> None:
    """A ratio sampler's ``OTEL_TRACES_SAMPLER_ARG`` is a number from 0 to 1: the SDK
    takes anything else for 1.0 with a warning, so a typo traced every message."""
    sampler = os.environ.get("OTEL_TRACES_SAMPLER", "").strip().lower()
    arg = os.environ.get("OTEL_TRACES_SAMPLER_ARG")
    if sampler not in ("traceidratio", "parentbased_traceidratio") or arg is None:
        return
    try:
        rate = float(arg)
    except ValueError:
        rate = math.nan
    if not 0 <= rate <= 1:
        raise ConfigurationError(
            f"OTEL_TRACES_SAMPLER_ARG={arg!r}: {sampler} takes the share of traces to keep, "
            "a number from 0 to 1 (0.1: one in ten); the SDK would trace every one instead."
        )


def _chosen_exporter(exporter: str | SpanExporter | None) -> str | SpanExporter:
    if exporter is not None:
        return exporter
    configured = os.environ.get("OTEL_TRACES_EXPORTER", "").strip().lower()
    if configured in ("otlp", "console", "none"):
        return configured
    if configured:
        raise ConfigurationError(
            f"OTEL_TRACES_EXPORTER={configured!r} is not an exporter msgcore sets up: use "
            "otlp, console or none (or unset it: spans are then kept in memory)."
        )
    if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"
    ):
        return "otlp"
    return "memory"


def setup(
    service_name: str | None = None,
    exporter: str | SpanExporter | None = None,
    *,
    metrics_enabled: bool = True,
    set_global: bool = True,
) -> Telemetry:
    """Configure tracing (and metrics) for msgcore and everything else using OpenTelemetry.

    Args:
        service_name: ``service.name`` of every span (default ``OTEL_SERVICE_NAME``, else
            ``"msgcore"``).
        exporter: ``"otlp"`` (HTTP, configured by the ``OTEL_EXPORTER_OTLP_*`` variables),
            ``"console"`` (one JSON line per span on stdout), ``"memory"``, or any
            ``SpanExporter``. Default: see the module documentation.
        metrics_enabled: Also set up a meter provider (OTLP metrics with ``otlp``,
            in memory otherwise).
        set_global: Install the providers as OpenTelemetry's global ones (once per process;
            later calls keep the first global provider but still return working ones).

    After ``setup()``, every broker ``create_broker``/``create_app`` build and every
    ``Client`` trace their messages (``MSGCORE_TELEMETRY__ENABLED=false`` opts out).
    """
    name = service_name or os.environ.get("OTEL_SERVICE_NAME") or "msgcore"
    _check_sampler()
    choice = _chosen_exporter(exporter)
    resource = Resource.create({"service.name": name})
    provider = TracerProvider(resource=resource)
    span_exporter: SpanExporter
    if isinstance(choice, SpanExporter):
        span_exporter = choice
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    elif choice == "memory":
        # the latest spans only: setup() without an exporter in the environment picks
        # this one, and a worker running for days must not keep every span it made
        span_exporter = InMemorySpanExporter(max_spans=MEMORY_SPAN_LIMIT)
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif choice == "none":
        span_exporter = _NoExport()
    elif choice == "console":
        span_exporter = JsonLinesSpanExporter()
        provider.add_span_processor(SimpleSpanProcessor(span_exporter))
    elif choice == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        span_exporter = OTLPSpanExporter()
        provider.add_span_processor(BatchSpanProcessor(span_exporter))
    else:
        raise ConfigurationError(
            f"Unknown telemetry exporter {choice!r}: use one of {', '.join(_EXPORTERS)} "
            "or a SpanExporter (MSGCORE_TELEMETRY__EXPORTER / OTEL_TRACES_EXPORTER)."
        )

    reader: MetricReader | None = None
    durations: DurationHistogram | None = None
    meter_provider: metrics.MeterProvider
    if metrics_enabled:
        durations = DurationHistogram(PROCESS_DURATION, description=PROCESS_DURATION_DESCRIPTION)
        if choice == "otlp":
            from opentelemetry.exporter.otlp.proto.http.metric_exporter import (
                OTLPMetricExporter,
            )

            reader = PeriodicDurationReader(OTLPMetricExporter(), [durations], resource)
        else:
            reader = InMemoryDurationReader([durations], resource)
        # Exemplars (a sampled span's context attached to each measurement) cost more
        # than the measurement itself on every message; traces already link the two.
        meter_provider = MeterProvider(
            resource=resource,
            metric_readers=[reader],
            exemplar_filter=AlwaysOffExemplarFilter(),
        )
        meter_provider.get_meter("msgcore").create_observable_counter(
            "messaging.process.messages",
            callbacks=[durations.observe_counts],
            unit="{message}",
            description="Messages processed (failed ones carry error.type)",
        )
    else:
        meter_provider = metrics.NoOpMeterProvider()

    if set_global:
        # OpenTelemetry keeps the first global provider of a process and warns on later
        # ones; msgcore passes its providers explicitly, so it works either way
        if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
            trace.set_tracer_provider(provider)
        if metrics_enabled and type(metrics.get_meter_provider()).__name__.startswith("_Proxy"):
            metrics.set_meter_provider(meter_provider)

    _Active.current = Telemetry(
        tracer_provider=provider,
        meter_provider=meter_provider,
        exporter=span_exporter,
        metric_reader=reader,
        service_name=name,
        process_duration=durations,
    )
    return _Active.current


def active(settings: Any) -> Telemetry | None:
    """The telemetry brokers and clients of ``settings`` use now, if any.

    ``setup()`` was called: that. Else ``MSGCORE_TELEMETRY__EXPORTER`` or the standard
    OTLP variables ask for it: ``setup()`` now (a ``faststream run`` worker needs no code
    for it). Else a global SDK tracer provider configured by the application: that one.
    ``MSGCORE_TELEMETRY__ENABLED=false``: None. ``MSGCORE_TELEMETRY__METRICS=false``: a
    setup made here records no metrics.
    """
    config = settings.telemetry
    if not config.enabled:
        return None
    current = _Active.current
    if current is not None and not current._closed:
        return current
    wants = config.exporter or (
        "otlp"
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
        else None
    )
    if wants:
        return setup(config.service_name, wants, metrics_enabled=config.metrics)
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        return Telemetry(tracer_provider=provider, meter_provider=metrics.get_meter_provider())
    return None


def reset() -> None:
    """Forget the active telemetry (tests that set up several in one process)."""
    if _Active.current is not None:
        _Active.current.shutdown()
    _Active.current = None
