"""The broker ``create_broker`` returns for ``redis://`` URLs.

A ``faststream.redis.RedisBroker`` in every respect (``TestRedisBroker`` and
``msgcore.testing.TestClient`` apply to it), which also runs msgcore's background work:
the mover that delivers delayed messages and retries when they are due. Subscribers run
their own heartbeats and reclaimers (see ``subscriber``).
"""

from __future__ import annotations

from types import TracebackType
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

from faststream.redis import RedisBroker
from faststream.redis.configs import ConnectionState
from faststream.redis.configs.state import RedisConnectionState
from redis.asyncio import BlockingConnectionPool, Redis
from typing_extensions import override

from msgcore.adapters.redis.connection import connection_class_for
from msgcore.adapters.redis.envelope import Utf8BinaryMessageFormat
from msgcore.adapters.redis.mover import DueMover
from msgcore.adapters.redis.producer import MsgcoreRedisProducer

__all__ = ["DEFAULT_MAX_CONNECTIONS", "MsgcoreRedisBroker"]

DEFAULT_MAX_CONNECTIONS = 1000
"""Connection pool size unless the URL sets ``?max_connections=`` (redis-py: 100)."""
POOL_TIMEOUT = 30.0
"""Seconds a command waits for a free pooled connection before redis-py's
``ConnectionError("No connection available.")``."""


class _BlockingConnectionState(RedisConnectionState):
    """FastStream's connection state with a blocking pool: a burst of publishes beyond
    the pool's size waits for a free connection instead of failing at once with
    ``MaxConnectionsError`` (2,000 publishes gathered at once did)."""

    __slots__ = ()

    @override
    async def connect(self) -> Redis:
        pool = BlockingConnectionPool(timeout=POOL_TIMEOUT, **self._options)
        client = Redis.from_pool(pool)
        self._client = client
        self._connected = True
        return client


class MsgcoreRedisBroker(RedisBroker):
    """FastStream's ``RedisBroker`` with msgcore's delays and retries.

    Messages are written with ``Utf8BinaryMessageFormat`` (FastStream's envelope, with
    non-ASCII headers intact).

    Starting or stopping it twice is harmless. ``stop()`` stops the mover, then the
    subscribers (each waits up to ``graceful_timeout`` for its running handlers and
    hands back what it still holds), then closes the connection.
    """

    def __init__(
        self,
        url: str = "redis://localhost:6379",
        *,
        polling_interval_ms: int = 100,
        **kwargs: Any,
    ) -> None:
        # before super().__init__: the producer built there wakes the mover
        self.mover = DueMover(
            client=self.redis_client,
            polling_interval=polling_interval_ms / 1000,
            log=self._log_line,
        )
        kwargs.setdefault("message_format", Utf8BinaryMessageFormat)
        if "connection_class" not in kwargs and (packed := connection_class_for(url)):
            kwargs["connection_class"] = packed
        if "max_connections" not in parse_qs(urlsplit(url).query):
            # FastStream's request() holds a pooled connection (its reply subscription)
            # until the reply arrives: leave room for many requests in flight.
            kwargs.setdefault("max_connections", DEFAULT_MAX_CONNECTIONS)
        super().__init__(url, **kwargs)

    def redis_client(self) -> Redis:
        """The connected client (``IncorrectState`` before ``connect()``)."""
        return cast("Redis", self.config.broker_config.connection.client)

    def _log_line(self, message: str, level: int) -> None:
        self.config.logger.log(message, level, extra={"channel": "", "message_id": ""})

    @override
    def _make_connection_state(
        self, connection_options: dict[str, Any], kwargs: dict[str, Any]
    ) -> ConnectionState[Any]:
        return _BlockingConnectionState(connection_options)

    @override
    def _make_producer(
        self, connection_state: ConnectionState[Any], kwargs: dict[str, Any]
    ) -> MsgcoreRedisProducer:
        producer = MsgcoreRedisProducer(
            connection=connection_state,
            parser=kwargs.get("parser"),
            decoder=kwargs.get("decoder"),
            message_format=self.message_format,
            serializer=kwargs.get("serializer"),
        )
        producer.on_schedule = self.mover.wake
        return producer

    @override
    async def start(self) -> None:
        if self.running:
            return
        await super().start()
        self.mover.start()

    @override
    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        await self.mover.stop()
        await super().stop(exc_type, exc_val, exc_tb)
