"""``SqliteBroker``: a FastStream broker whose queues live in one SQLite file."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fast_depends import Provider, dependency_provider
from faststream._internal.broker import BrokerUsecase
from faststream._internal.constants import EMPTY
from faststream._internal.context.repository import ContextRepo
from faststream._internal.di import FastDependsConfig
from faststream.message import gen_cor_id
from faststream.middlewares import AckPolicy
from faststream.response.publish_type import PublishType
from faststream.specification.schema import BrokerSpec
from typing_extensions import override

from msgcore.exceptions import InvalidURLError
from msgcore.sqlite.broker.config import SqliteBrokerConfig
from msgcore.sqlite.broker.logging import make_sqlite_logger_state
from msgcore.sqlite.broker.registrator import SqliteRegistrator
from msgcore.sqlite.client.base import DeadLetter, StoredMessage
from msgcore.sqlite.client.connection import SqliteClient, pid_worker_id
from msgcore.sqlite.client.notifier import Notifier
from msgcore.sqlite.publisher.producer import SqliteProducer
from msgcore.sqlite.response import SqlitePublishCommand
from msgcore.sqlite.subscriber.usecase import SqliteSubscriber
from msgcore.urls import parse_sqlite_url, sqlite_url_seconds

if TYPE_CHECKING:
    from types import TracebackType

    from fast_depends.dependencies import Dependant
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.basic_types import LoggerProto, SendableMessage
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import BrokerMiddleware, CustomCallable, IdGenerator
    from faststream.specification.schema.extra import Tag, TagDict

    from msgcore.sqlite.message import SqliteMessage


class SqliteBroker(
    SqliteRegistrator,
    BrokerUsecase[StoredMessage, SqliteClient, SqliteBrokerConfig],
):
    """A FastStream broker on a SQLite file: durable, leased, no server to run.

    Processes on one host share work through the same file (WAL mode). Use a local
    disk: SQLite's locking is unreliable on network file systems.
    """

    def __init__(
        self,
        url: str = "sqlite:///./msgcore.db",
        *,
        busy_timeout: float = EMPTY,
        min_poll_interval: float = EMPTY,
        max_poll_interval: float = EMPTY,
        transactional_publish: bool = True,
        graceful_timeout: float | None = 15.0,
        decoder: CustomCallable | None = None,
        parser: CustomCallable | None = None,
        codec: CodecProto | None = None,
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        routers: Iterable[SqliteRegistrator] = (),
        ack_policy: AckPolicy = EMPTY,
        id_generator: IdGenerator = gen_cor_id,
        # AsyncAPI
        specification_url: str | None = None,
        protocol_version: str | None = None,
        description: str | None = None,
        tags: Iterable[Tag | TagDict] = (),
        # logging
        logger: LoggerProto | None = EMPTY,
        log_level: int = logging.INFO,
        # FastDepends
        apply_types: bool = True,
        serializer: SerializerProto | None = EMPTY,
        provider: Provider | None = None,
        context: ContextRepo | None = None,
    ) -> None:
        """Create a broker on ``url`` (``sqlite:///relative.db`` or ``sqlite:////abs.db``).

        Args:
            url: Database file. URL options ``busy_timeout``, ``min_poll_interval`` and
                ``max_poll_interval`` (seconds) are read when the keyword is not given.
            busy_timeout: How long a write waits for another connection's lock before
                raising ``DatabaseLockedError`` (default 5 s).
            min_poll_interval: Fastest polling for other processes' commits, right after
                activity (default 1 ms).
            max_poll_interval: Slowest polling while idle (default 100 ms): the worst
                added latency for a message published by another process to an idle
                consumer.
            transactional_publish: Messages a handler publishes commit in the same
                transaction as its ack: a crash or lost lease never leaves one without
                the other.
            graceful_timeout: Seconds shutdown waits for running handlers.
        """
        parsed = parse_sqlite_url(url)
        opts = parsed.options
        busy = (
            busy_timeout
            if busy_timeout is not EMPTY
            else sqlite_url_seconds(opts, "busy_timeout", 5.0)
        )
        min_poll = (
            min_poll_interval
            if min_poll_interval is not EMPTY
            else sqlite_url_seconds(opts, "min_poll_interval", 0.001)
        )
        max_poll = (
            max_poll_interval
            if max_poll_interval is not EMPTY
            else sqlite_url_seconds(opts, "max_poll_interval", 0.1)
        )
        if busy < 0 or min_poll <= 0 or max_poll < min_poll:
            raise InvalidURLError(
                "busy_timeout must be >= 0 and 0 < min_poll_interval <= max_poll_interval."
            )

        super().__init__(
            path=parsed.path,
            busy_timeout=busy,
            routers=routers,
            config=SqliteBrokerConfig(
                producer=SqliteProducer(parser, decoder, transactional=transactional_publish),
                worker_id=pid_worker_id(),
                min_poll_interval=min_poll,
                max_poll_interval=max_poll,
                broker_middlewares=middlewares,
                broker_parser=parser,
                broker_decoder=decoder,
                broker_codec=codec,
                logger=make_sqlite_logger_state(logger=logger, log_level=log_level),
                fd_config=FastDependsConfig(
                    use_fastdepends=apply_types,
                    serializer=serializer,
                    provider=provider or dependency_provider,
                    context=context or ContextRepo(),
                ),
                broker_dependencies=dependencies,
                graceful_timeout=graceful_timeout,
                ack_policy=ack_policy,
                id_generator=id_generator,
                extra_context={"broker": self},
            ),
            specification=BrokerSpec(
                description=description,
                url=[specification_url or f"sqlite://localhost/{Path(parsed.path).resolve()}"],
                protocol="sqlite",
                protocol_version=protocol_version or "3",
                tags=tags,
                security=None,
            ),
        )
        self.url = url
        self.path = parsed.path

    @override
    async def _connect(self) -> SqliteClient:
        client = SqliteClient(
            self._connection_kwargs["path"], busy_timeout=self._connection_kwargs["busy_timeout"]
        )
        await client.connect()
        try:
            await client.delete_expired()
        except BaseException:
            # FastStream keeps no connection from a failed _connect: close it here, or
            # its aiosqlite thread keeps the process from exiting.
            await client.close()
            raise
        notifier = Notifier(
            client,
            min_interval=self.config.min_poll_interval,
            max_interval=self.config.max_poll_interval,
        )
        client.on_commit = notifier.notify
        self.config.connect(client, notifier)
        return client

    @override
    async def start(self) -> None:
        await self.connect()
        self.config.logger.log(
            f"Connection established: {self.path}",
            logging.INFO,
            SqliteSubscriber.build_log_context(None),
        )
        await super().start()

    @override
    async def stop(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> None:
        await super().stop(exc_type, exc_val, exc_tb)
        if self._connection is not None:
            notifier = self.config._notifier
            await self.config.disconnect()
            if notifier is not None:
                await notifier.close()
            await self._connection.close()
            self._connection = None

    @override
    async def ping(self, timeout: float | None = None) -> bool:
        if self._connection is None:
            return False
        return await self._connection.ping()

    @override
    async def publish(
        self,
        message: SendableMessage = None,
        queue: str = "",
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        reply_to: str = "",
        priority: int = 0,
        delay: float | None = None,
        not_before: datetime | float | None = None,
        message_id: str | None = None,
    ) -> None:
        """Store ``message`` in ``queue``; it is durable when this returns.

        Args:
            priority: Higher is delivered first among claimable messages.
            delay: Seconds before the message may be delivered.
            not_before: A datetime (or epoch seconds) before which it is not delivered.
            message_id: Defaults to a new UUID.
        """
        cmd = SqlitePublishCommand(
            message,
            queue=queue,
            headers=headers,
            correlation_id=correlation_id or self.config.id_generator(),
            reply_to=reply_to,
            priority=priority,
            delay=delay,
            not_before=not_before,
            message_id=message_id,
            _publish_type=PublishType.PUBLISH,
        )
        await self._basic_publish(cmd, producer=self.config.producer)

    @override
    async def publish_batch(
        self,
        *messages: SendableMessage,
        queue: str,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        priority: int = 0,
        delay: float | None = None,
    ) -> None:
        """Store many messages in one transaction: all or none are stored."""
        cmd = SqlitePublishCommand(
            *messages,
            queue=queue,
            headers=headers,
            correlation_id=correlation_id or self.config.id_generator(),
            priority=priority,
            delay=delay,
            _publish_type=PublishType.PUBLISH,
        )
        await self._basic_publish_batch(cmd, producer=self.config.producer)

    @override
    async def request(  # type: ignore[override]
        self,
        message: SendableMessage = None,
        queue: str = "",
        *,
        timeout: float = 30.0,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        priority: int = 0,
    ) -> SqliteMessage:
        """Publish and wait for the handler's reply; raises ``RequestTimeoutError``."""
        cmd = SqlitePublishCommand(
            message,
            queue=queue,
            headers=headers,
            correlation_id=correlation_id or self.config.id_generator(),
            priority=priority,
            timeout=timeout,
            _publish_type=PublishType.REQUEST,
        )
        msg: SqliteMessage = await self._basic_request(cmd, producer=self.config.producer)
        return msg

    # -- operations -------------------------------------------------------------------

    async def dead_letters(self, queue: str | None = None, *, limit: int = 100) -> list[DeadLetter]:
        """Messages that will not be retried, oldest first, with the reason and error."""
        return await self.config.broker_config.transport.dead_letters(queue, limit)

    async def replay_dead_letter(self, dead_letter_id: int) -> bool:
        """Put a dead letter back on its queue and group with a fresh attempt count."""
        return await self.config.broker_config.transport.replay_dead_letter(dead_letter_id)

    async def queue_depth(self, queue: str, group: str | None = None) -> int:
        """Rows stored for ``queue`` (waiting, delayed or leased), for one group or all."""
        return await self.config.broker_config.transport.depth(queue, group)
