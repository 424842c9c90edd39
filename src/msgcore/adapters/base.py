"""The seam between msgcore's neutral declarations and one FastStream transport."""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar

from msgcore.urls import redact_url

if TYPE_CHECKING:
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.broker import BrokerUsecase

    from msgcore.router import PublisherHandle, SubscriberDeclaration
    from msgcore.settings import Settings, Transport


@dataclass(frozen=True)
class DeadLetterRecord:
    """A message given up on, as every transport reports it."""

    channel: str
    group: str
    body: bytes
    headers: dict[str, Any]
    correlation_id: str | None
    message_id: str | None
    attempts: int
    reason: str
    error: str | None
    failed_at: float


class BoundPublisher(ABC):
    """A ``PublisherHandle`` bound to one broker."""

    connection_errors: ClassVar[tuple[type[BaseException], ...]] = ()
    """What the transport's client raises when the broker cannot be reached or the
    connection drops during a call (``PublisherHandle`` reports them as
    ``BrokerConnectionError``)."""
    server: str = ""
    """The broker's URL without its password (set by ``TransportAdapter.bind``)."""

    @abstractmethod
    async def publish(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        delay: float | None,
        not_before: datetime | None,
        priority: int | None,
    ) -> None: ...

    @abstractmethod
    async def request(
        self,
        message: SendableMessage,
        *,
        headers: dict[str, Any],
        correlation_id: str | None,
        timeout: float | None,
    ) -> Any: ...


class TransportAdapter(ABC):
    """Builds a FastStream broker for one transport and binds declarations to it."""

    name: Transport

    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    @property
    def log_kwargs(self) -> dict[str, Any]:
        # FastStream logs two lines per message at the broker's log_level; DEBUG keeps
        # them out of an INFO log without silencing msgcore's own warnings.
        return {} if self.settings.log_messages else {"log_level": logging.DEBUG}

    @abstractmethod
    def broker(self) -> BrokerUsecase[Any, Any, Any]: ...

    @abstractmethod
    def native_router(self, *, dependencies: Sequence[Any], middlewares: Sequence[Any]) -> Any:
        """A transport router carrying a msgcore router's dependencies and middlewares."""

    @abstractmethod
    def publisher(self, native_router: Any, channel: str, handle: PublisherHandle) -> Any:
        """Declare a transport publisher for ``channel`` on ``native_router``."""

    @abstractmethod
    def bind_publisher(self, broker: Any, native_publisher: Any) -> BoundPublisher: ...

    def bind(self, broker: Any, native_publisher: Any) -> BoundPublisher:
        """``bind_publisher``, with the broker's redacted URL for its error messages."""
        bound = self.bind_publisher(broker, native_publisher)
        bound.server = redact_url(self.settings.url)
        return bound

    @abstractmethod
    def subscribe(
        self,
        native_router: Any,
        decl: SubscriberDeclaration,
        channel: str,
    ) -> Any:
        """Declare a subscriber for ``decl`` on ``native_router`` consuming ``channel``.

        Returns the transport subscriber; ``create_broker`` attaches the handler and its
        publishers to it, the same way for every transport.
        """

    @abstractmethod
    async def dead_letters(
        self, broker: Any, channel: str | None = None, *, limit: int = 100
    ) -> list[DeadLetterRecord]:
        """Dead letters of ``channel`` (all channels if None), oldest first."""
