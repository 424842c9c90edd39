"""``msgcore.store``: job records, the completion feed and application state.

``store_for(settings)`` picks the backend: ``MSGCORE_STORE_URL`` when set, else the
transport's own SQLite file or Redis server, else (RabbitMQ) a local SQLite file
``./msgcore-store.db`` -- use Redis for a multi-host RabbitMQ deployment.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from msgcore.exceptions import InvalidURLError
from msgcore.settings import Settings, transport_of
from msgcore.store.base import TERMINAL, FeedEvent, JobRecord, JobStatus, Store
from msgcore.urls import parse_sqlite_url, redact_url, sqlite_url_seconds

__all__ = [
    "DEFAULT_RABBIT_STORE_URL",
    "TERMINAL",
    "FeedEvent",
    "JobRecord",
    "JobStatus",
    "Store",
    "open_store",
    "store_for",
    "store_url_for",
]

DEFAULT_RABBIT_STORE_URL = "sqlite:///./msgcore-store.db"


def store_url_for(settings: Settings) -> str:
    """Where ``settings`` keep job state: ``store_url``, or beside the transport."""
    if settings.store_url:
        return settings.store_url
    if settings.transport in ("sqlite", "redis"):
        return settings.url
    return DEFAULT_RABBIT_STORE_URL


def open_store(url: str, *, settings: Settings | None = None) -> Store:
    """An unopened store for ``url`` (``sqlite:///…`` or ``redis://…``).

    Its tuning comes from ``settings``, by default ``Settings()`` (``MSGCORE_*``, as the
    services read them): the SQLite ``busy_timeout`` (``?busy_timeout=`` in the URL wins)
    and the Redis key prefix, which must be the workers' to see their jobs.
    """
    kind = transport_of(url)
    config = settings if settings is not None else Settings()
    if kind == "sqlite":
        from msgcore.store.sqlite import SqliteStore

        options = parse_sqlite_url(url).options
        busy = sqlite_url_seconds(options, "busy_timeout", config.sqlite.busy_timeout)
        if busy < 0:
            raise InvalidURLError("URL option busy_timeout must be >= 0 seconds.")
        return SqliteStore(url, busy_timeout=busy)
    if kind == "redis":
        from msgcore.store.redis import RedisStore

        return RedisStore(url, prefix=config.redis.stream_prefix)
    raise InvalidURLError(
        f"{redact_url(url)!r} cannot hold job state: MSGCORE_STORE_URL must be a "
        "sqlite:///path.db or redis://host:6379/0 URL (RabbitMQ stores no state)."
    )


def store_for(settings: Settings, *, broker: Any = None) -> Store:
    """The (unopened) store ``settings`` select.

    ``broker``: a connected broker of the same settings. When the store is the SQLite
    transport's own file, the store then shares the transport's connection: one writer
    for both, so a job's record and its message's ack can commit together.
    """
    url = store_url_for(settings)
    if broker is not None and settings.transport == "redis" and url == settings.url:
        from msgcore.store.redis import RedisStore

        # same server: records ride in the same scripts as their messages and acks
        return RedisStore(url, prefix=settings.redis.stream_prefix, transport=True)
    client = getattr(broker, "_connection", None) if settings.transport == "sqlite" else None
    if client is not None and transport_of(url) == "sqlite":
        from msgcore.sqlite.client.connection import SqliteClient
        from msgcore.store.sqlite import SqliteStore

        # the broker's own file, not the settings': a broker handed to a Client may
        # have been made for another one
        if (
            isinstance(client, SqliteClient)
            and client.connected
            and Path(client.path).resolve() == Path(parse_sqlite_url(url).path).resolve()
        ):
            return SqliteStore(url, client=client)
    return open_store(url, settings=settings)
