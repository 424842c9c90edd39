"""Configuration shared by the SQLite broker, its routers and endpoints."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from faststream._internal.configs import BrokerConfig
from faststream.exceptions import IncorrectState

from msgcore.sqlite.publisher.producer import SqliteProducer

if TYPE_CHECKING:
    from msgcore.sqlite.client.connection import SqliteClient
    from msgcore.sqlite.client.notifier import Notifier


@dataclass(kw_only=True)
class SqliteBrokerConfig(BrokerConfig):
    producer: SqliteProducer = field(default_factory=SqliteProducer)
    worker_id: str = ""
    min_poll_interval: float = 0.001
    max_poll_interval: float = 0.1

    _transport: SqliteClient | None = field(default=None, init=False, repr=False)
    _notifier: Notifier | None = field(default=None, init=False, repr=False)

    @property
    def transport(self) -> SqliteClient:
        if self._transport is None:
            raise IncorrectState(
                "The SQLite broker is not connected: start it (faststream run, "
                "`async with broker`, or `await broker.start()`) first."
            )
        return self._transport

    @property
    def notifier(self) -> Notifier:
        if self._notifier is None:
            raise IncorrectState("The SQLite broker is not connected.")
        return self._notifier

    def connect(self, transport: SqliteClient, notifier: Notifier) -> None:
        self._transport = transport
        self._notifier = notifier
        self.producer.connect(
            transport, notifier, self.fd_config._serializer, codec=self.broker_codec
        )

    async def disconnect(self) -> None:
        await self.producer.disconnect()
        self._transport = None
        self._notifier = None
