"""Reading the subscriber registry workers keep in the job store (``Store.register_subscribers``).

Tools need it where the transport cannot list its queues (RabbitMQ over AMQP). It is the
store ``settings`` select, so the tool must be given the workers' ``MSGCORE_STORE_URL``.
"""

from __future__ import annotations

from pathlib import Path

from msgcore.settings import Settings, transport_of
from msgcore.store import store_for, store_url_for
from msgcore.urls import parse_sqlite_url

__all__ = ["no_store_file", "registered_subscribers"]


def no_store_file(settings: Settings) -> bool:
    """The store is a SQLite file that does not exist: no worker ever wrote to it (and
    opening it would create an empty one)."""
    url = store_url_for(settings)
    return transport_of(url) == "sqlite" and not Path(parse_sqlite_url(url).path).is_file()


async def registered_subscribers(settings: Settings) -> list[tuple[str, str]]:
    """Every ``(channel, group)`` a worker of these settings registered, sorted."""
    if no_store_file(settings):
        return []
    async with store_for(settings) as store:
        return await store.registered_subscribers()
