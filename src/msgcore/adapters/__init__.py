"""Per-transport binding of msgcore declarations."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from msgcore.adapters.base import TransportAdapter
    from msgcore.settings import Settings


def adapter_for(settings: Settings) -> TransportAdapter:
    """The adapter of the transport ``settings.url`` selects."""
    transport = settings.transport
    if transport == "sqlite":
        from msgcore.adapters.sqlite import SqliteAdapter

        return SqliteAdapter(settings)
    if transport == "redis":
        from msgcore.adapters.redis import RedisAdapter

        return RedisAdapter(settings)
    from msgcore.adapters.rabbit import RabbitAdapter

    return RabbitAdapter(settings)
