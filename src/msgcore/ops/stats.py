"""``channel_stats``: how many messages each consumer group has, in which state."""

from __future__ import annotations

from msgcore.ops.backends import backend_for
from msgcore.ops.models import GroupStats
from msgcore.settings import Settings

__all__ = ["channel_stats"]


async def channel_stats(settings: Settings, *, channel: str | None = None) -> list[GroupStats]:
    """One ``GroupStats`` per consumer group of ``channel`` (every channel if None),
    sorted by channel and group. See ``GroupStats`` for what each number means on each
    transport.

    Which groups exist: on SQLite the groups registered in the file and those holding
    messages or dead letters; on Redis the consumer groups of the channels' streams and
    the groups with dead letters; on RabbitMQ the groups workers registered in the job
    store (the same ``MSGCORE_STORE_URL`` as the workers' is needed) whose queue exists,
    and a named channel's ``default`` group.

    Raises ``TransportUnreachableError`` (a ``StorageError``) when the server or file
    does not answer; the message names the URL with its password redacted.
    """
    async with backend_for(settings) as backend:
        return await backend.stats(channel)
