"""Putting msgcore's tracing middleware on a broker (see ``middleware.py`` for why it is
not FastStream's ``TelemetryMiddleware``; it speaks the same ``traceparent`` header)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgcore.telemetry.middleware import TracingMiddleware
from msgcore.telemetry.naming import ChannelNames

if TYPE_CHECKING:
    from msgcore.router import Router
    from msgcore.settings import Settings
    from msgcore.telemetry.setup import Telemetry

__all__ = ["channel_names", "instrument"]


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
