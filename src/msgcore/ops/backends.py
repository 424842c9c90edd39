"""Which ``OpsBackend`` serves a ``Settings``."""

from __future__ import annotations

from msgcore.ops.backend import OpsBackend
from msgcore.settings import Settings

__all__ = ["backend_for"]


def backend_for(settings: Settings) -> OpsBackend:
    """The (unopened) backend of the transport ``settings.url`` selects."""
    transport = settings.transport
    if transport == "sqlite":
        from msgcore.ops.sqlite import SqliteOps

        return SqliteOps(settings)
    if transport == "redis":
        from msgcore.ops.redis import RedisOps

        return RedisOps(settings)
    from msgcore.ops.rabbit import RabbitOps

    return RabbitOps(settings)
