from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from faststream._internal.broker.router import ArgsContainer, BrokerRouter, SubscriberRoute
from faststream._internal.constants import EMPTY
from faststream.middlewares import AckPolicy

from msgcore.sqlite.broker.config import SqliteBrokerConfig
from msgcore.sqlite.broker.registrator import SqliteRegistrator
from msgcore.sqlite.client.base import StoredMessage

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import BrokerMiddleware, CustomCallable

    from msgcore.retry import RetryPolicy


class SqlitePublisher(ArgsContainer):
    """Delayed ``SqliteRegistrator.publisher(...)`` arguments, for ``SqliteRoute``."""

    def __init__(
        self,
        queue: str,
        *,
        headers: dict[str, Any] | None = None,
        priority: int = 0,
        persistent: bool = True,
        title: str | None = None,
        description: str | None = None,
        schema: Any | None = None,
        include_in_schema: bool = True,
    ) -> None:
        super().__init__(
            queue,
            headers=headers,
            priority=priority,
            persistent=persistent,
            title=title,
            description=description,
            schema=schema,
            include_in_schema=include_in_schema,
        )


class SqliteRoute(SubscriberRoute):
    """A subscriber registration to apply when the router is included."""

    def __init__(
        self,
        call: Callable[..., SendableMessage] | Callable[..., Awaitable[SendableMessage]],
        queue: str,
        *,
        publishers: Iterable[SqlitePublisher] = (),
        group: str | None = None,
        max_workers: int = 1,
        prefetch: int | None = None,
        lease_seconds: float = 30.0,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        ack_policy: AckPolicy = EMPTY,
        no_reply: bool = False,
        dependencies: Sequence[Dependant] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        codec: CodecProto | None = None,
        persistent: bool = True,
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
    ) -> None:
        super().__init__(
            call,
            queue,
            publishers=publishers,
            group=group,
            max_workers=max_workers,
            prefetch=prefetch,
            lease_seconds=lease_seconds,
            max_attempts=max_attempts,
            retry=retry,
            ack_policy=ack_policy,
            no_reply=no_reply,
            dependencies=dependencies,
            parser=parser,
            decoder=decoder,
            codec=codec,
            persistent=persistent,
            title=title,
            description=description,
            include_in_schema=include_in_schema,
        )


class SqliteRouter(SqliteRegistrator, BrokerRouter[StoredMessage, SqliteBrokerConfig]):
    """Groups SQLite subscribers and publishers under a prefix; include it in a broker."""

    def __init__(
        self,
        prefix: str = "",
        handlers: Iterable[SqliteRoute] = (),
        *,
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        routers: Iterable[SqliteRegistrator] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        include_in_schema: bool | None = None,
        ack_policy: AckPolicy = EMPTY,
    ) -> None:
        super().__init__(
            handlers=handlers,
            config=SqliteBrokerConfig(
                prefix=prefix,
                ack_policy=ack_policy,
                broker_dependencies=dependencies,
                broker_middlewares=middlewares,
                broker_parser=parser,
                broker_decoder=decoder,
                include_in_schema=include_in_schema,
            ),
            routers=routers,
        )
