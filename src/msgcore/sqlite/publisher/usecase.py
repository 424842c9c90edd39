from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

from faststream._internal.endpoint.publisher import PublisherUsecase
from faststream.response.publish_type import PublishType
from typing_extensions import override

from msgcore.sqlite.response import SqlitePublishCommand

if TYPE_CHECKING:
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.endpoint.publisher import PublisherSpecification
    from faststream._internal.types import PublisherMiddleware
    from faststream.response.response import PublishCommand

    from msgcore.sqlite.broker.config import SqliteBrokerConfig
    from msgcore.sqlite.message import SqliteMessage
    from msgcore.sqlite.publisher.config import SqlitePublisherConfig


class SqlitePublisher(PublisherUsecase):
    """Publishes to one SQLite queue; made by ``broker.publisher(queue)``."""

    _outer_config: SqliteBrokerConfig

    def __init__(
        self,
        config: SqlitePublisherConfig,
        specification: PublisherSpecification[Any, Any],
    ) -> None:
        super().__init__(config, specification)
        self._queue = config.queue
        self.headers = config.headers or {}
        self.priority = config.priority

    @property
    def queue(self) -> str:
        return f"{self._outer_config.prefix}{self._queue}"

    @override
    async def publish(
        self,
        message: SendableMessage = None,
        queue: str = "",
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        reply_to: str = "",
        priority: int | None = None,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        message_id: str | None = None,
    ) -> None:
        cmd = SqlitePublishCommand(
            message,
            queue=queue or self.queue,
            headers=self.headers | (headers or {}),
            correlation_id=correlation_id or self._outer_config.id_generator(),
            reply_to=reply_to,
            priority=self.priority if priority is None else priority,
            delay=delay,
            not_before=not_before,
            message_id=message_id,
            _publish_type=PublishType.PUBLISH,
        )
        await self._basic_publish(cmd, producer=self._outer_config.producer, _extra_middlewares=())

    @override
    async def _publish(
        self,
        cmd: PublishCommand | SqlitePublishCommand,
        *,
        _extra_middlewares: Iterable[PublisherMiddleware],
    ) -> None:
        """Called in the subscriber flow only (a handler's return value)."""
        cmd = SqlitePublishCommand.from_cmd(cmd)
        cmd.destination = self.queue
        cmd.add_headers(self.headers, override=False)
        cmd.priority = cmd.priority or self.priority
        await self._basic_publish(
            cmd, producer=self._outer_config.producer, _extra_middlewares=_extra_middlewares
        )

    @override
    async def request(
        self,
        message: SendableMessage = None,
        queue: str = "",
        *,
        correlation_id: str | None = None,
        headers: dict[str, Any] | None = None,
        priority: int | None = None,
        timeout: float = 30.0,
    ) -> SqliteMessage:
        cmd = SqlitePublishCommand(
            message,
            queue=queue or self.queue,
            headers=self.headers | (headers or {}),
            correlation_id=correlation_id or self._outer_config.id_generator(),
            priority=self.priority if priority is None else priority,
            timeout=timeout,
            _publish_type=PublishType.REQUEST,
        )
        msg: SqliteMessage = await self._basic_request(cmd, producer=self._outer_config.producer)
        return msg

    async def publish_batch(
        self,
        *messages: SendableMessage,
        queue: str = "",
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        priority: int | None = None,
        delay: float | None = None,
    ) -> None:
        cmd = SqlitePublishCommand(
            *messages,
            queue=queue or self.queue,
            headers=self.headers | (headers or {}),
            correlation_id=correlation_id or self._outer_config.id_generator(),
            priority=self.priority if priority is None else priority,
            delay=delay,
            _publish_type=PublishType.PUBLISH,
        )
        await self._basic_publish_batch(
            cmd, producer=self._outer_config.producer, _extra_middlewares=()
        )
