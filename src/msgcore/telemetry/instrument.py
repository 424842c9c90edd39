"""Putting msgcore's tracing middleware on a broker (see ``middleware.py`` for why it is
not FastStream's ``TelemetryMiddleware``; it speaks the same ``traceparent`` header)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry import metrics

from msgcore.lifecycle import with_lifecycle
from msgcore.telemetry.depth import DepthGauge, QueueDepthSampler
from msgcore.telemetry.middleware import TracingMiddleware
from msgcore.telemetry.naming import ChannelNames

if TYPE_CHECKING:
    from msgcore.router import Router
    from msgcore.settings import Settings
    from msgcore.telemetry.setup import Telemetry

__all__ = ["channel_names", "instrument", "watch_queue_depth"]


def channel_names(settings: Settings, routers: tuple[Router, ...] = ()) -> ChannelNames:
    """The destination → channel map of a broker built from ``routers``."""
    names = ChannelNames(settings.transport, redis_prefix=settings.redis.stream_prefix)
    for root in routers:
        for router, prefix in root.walk():
            for decl in router.subscribers:
                names.declare(f"{prefix}{decl.channel}", decl.group)
            for handle in router.publishers:
                names.declare(f"{prefix}{handle.channel}")
    return names


def instrument(broker: Any, telemetry: Telemetry, names: ChannelNames) -> None:
    """Trace every publish and every message ``broker`` handles, as its outermost
    middleware (msgcore's job middleware then runs inside the process span)."""
    broker.insert_middleware(TracingMiddleware(telemetry, names))
    broker.msgcore_telemetry = telemetry


def watch_queue_depth(
    broker: Any, telemetry: Telemetry, settings: Settings, channels: Sequence[str]
) -> QueueDepthSampler | None:
    """Report ``channels``' queue depth (``msgcore.queue.depth``) while ``broker`` runs:
    read from the transport every ``settings.telemetry.queue_depth_interval`` seconds.
    None: nothing to read (no channels, interval 0, or no metrics)."""
    interval = settings.telemetry.queue_depth_interval
    if (
        not channels
        or interval <= 0
        or isinstance(telemetry.meter_provider, metrics.NoOpMeterProvider)
    ):
        return None
    if telemetry.depth_gauge is None:
        telemetry.depth_gauge = DepthGauge(telemetry.meter_provider)
    gauge = telemetry.depth_gauge
    sampler = QueueDepthSampler(settings, channels, interval)

    async def start_sampling() -> None:
        gauge.add(sampler)
        await sampler.start()

    async def stop_sampling() -> None:
        gauge.remove(sampler)
        await sampler.stop()

    with_lifecycle(broker, started=start_sampling, stopped=stop_sampling)
    broker.msgcore_queue_depth = sampler
    return sampler
