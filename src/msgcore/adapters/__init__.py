"""Per-transport binding of msgcore declarations."""

from __future__ import annotations

from typing import TYPE_CHECKING

from msgcore.exceptions import ConfigurationError

if TYPE_CHECKING:
    from msgcore.adapters.base import TransportAdapter
    from msgcore.settings import Settings


def adapter_for(settings: Settings) -> TransportAdapter:
    """The adapter of the transport ``settings.url`` selects."""
    transport = settings.transport
    if transport == "sqlite":
        from msgcore.adapters.sqlite import SqliteAdapter

        return SqliteAdapter(settings)
    # Redis and RabbitMQ adapters land with the rest of issue 3.
    raise ConfigurationError(
        f"msgcore.Router cannot bind to {transport} in this version yet; use a sqlite:/// "
        "URL, or FastStream's own broker for that transport."
    )
