from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, cast

from faststream._internal.broker.registrator import Registrator
from faststream._internal.constants import EMPTY
from faststream.middlewares import AckPolicy
from typing_extensions import override

from msgcore.constants import DEFAULT_GROUP
from msgcore.retry import RetryPolicy
from msgcore.sqlite.broker.config import SqliteBrokerConfig
from msgcore.sqlite.client.base import StoredMessage
from msgcore.sqlite.publisher.factory import create_publisher
from msgcore.sqlite.subscriber.factory import create_subscriber

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.parser import CodecProto
    from faststream._internal.types import BrokerMiddleware, CustomCallable

    from msgcore.sqlite.publisher.usecase import SqlitePublisher
    from msgcore.sqlite.subscriber.usecase import SqliteSubscriber


def resolve_retry(max_attempts: int | None, retry: RetryPolicy | None) -> RetryPolicy:
    if retry is None:
        return RetryPolicy() if max_attempts is None else RetryPolicy(max_attempts=max_attempts)
    if max_attempts is not None and max_attempts != retry.max_attempts:
        raise ValueError(
            f"max_attempts={max_attempts} contradicts retry.max_attempts={retry.max_attempts}: "
            "pass one of them."
        )
    return retry


class SqliteRegistrator(Registrator[StoredMessage, SqliteBrokerConfig]):
    """What ``SqliteBroker`` and ``SqliteRouter`` share: declaring endpoints."""

    @override
    def subscriber(  # type: ignore[override]
        self,
        queue: str,
        *,
        group: str | None = None,
        max_workers: int = 1,
        prefetch: int | None = None,
        lease_seconds: float = 30.0,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        # broker arguments
        ack_policy: AckPolicy = EMPTY,
        no_reply: bool = False,
        dependencies: Sequence[Dependant] = (),
        parser: CustomCallable | None = None,
        decoder: CustomCallable | None = None,
        codec: CodecProto | None = None,
        persistent: bool = True,
        # AsyncAPI information
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
    ) -> SqliteSubscriber:
        """Consume ``queue``.

        Args:
            queue: Queue name. Router prefixes are prepended.
            group: Consumer group. Every group on a queue receives every message;
                subscribers of one group (in any process) compete for them. Without
                a group, subscribers share the ``"default"`` group.
            max_workers: Handlers of this subscriber running at once in this process.
            prefetch: Rows claimed beyond the free handler slots (default
                ``max(16, 2*max_workers)``): the worker holds at most
                ``max_workers + prefetch`` rows, leased to this process until handled.
                ``0`` claims a row only when a handler can start it (long jobs spread
                over the workers; a queued job stays cancellable).
            lease_seconds: How long a claim lasts without renewal. A heartbeat renews
                it every third of this while the handler runs; a worker that dies
                (or freezes) loses its rows to other workers after this long.
            max_attempts: Deliveries before a failing message is dead-lettered
                (default 5). Shorthand for ``retry=RetryPolicy(max_attempts=...)``.
            retry: Backoff between attempts and the attempt limit.
            ack_policy: Defaults to ``NACK_ON_ERROR``: a raising handler's message
                is retried with backoff, then dead-lettered, never dropped.
            no_reply: Do not send the handler's return value to ``reply_to``.
            dependencies: FastDepends dependencies applied to this subscriber.
            parser: Custom parser.
            decoder: Custom decoder.
            codec: Custom codec (replaces ``decoder``).
            persistent: Keep a strong reference to the subscriber in the broker.
            title: AsyncAPI title.
            description: AsyncAPI description.
            include_in_schema: Whether to include the operation in AsyncAPI.
        """
        subscriber = create_subscriber(
            queue=queue,
            group=group or DEFAULT_GROUP,
            max_workers=max_workers,
            prefetch=prefetch,
            lease_seconds=lease_seconds,
            retry=resolve_retry(max_attempts, retry),
            ack_policy=ack_policy,
            no_reply=no_reply,
            config=cast("SqliteBrokerConfig", self.config),
            title_=title,
            description_=description,
            include_in_schema=include_in_schema,
        )
        super().subscriber(subscriber, persistent=persistent)
        return subscriber.add_call(
            parser_=parser or self._parser,
            decoder_=decoder or self._decoder,
            codec_=codec,
            dependencies_=dependencies,
        )

    @override
    def publisher(  # type: ignore[override]
        self,
        queue: str,
        *,
        headers: dict[str, Any] | None = None,
        priority: int = 0,
        persistent: bool = True,
        # AsyncAPI information
        title: str | None = None,
        description: str | None = None,
        schema: Any | None = None,
        include_in_schema: bool = True,
    ) -> SqlitePublisher:
        """A publisher to ``queue``: call ``publish()`` on it, or decorate a handler to
        publish its return value there."""
        publisher = create_publisher(
            queue=queue,
            headers=headers,
            priority=priority,
            broker_config=cast("SqliteBrokerConfig", self.config),
            schema_=schema,
            title_=title,
            description_=description,
            include_in_schema=include_in_schema,
        )
        super().publisher(publisher, persistent=persistent)
        return publisher

    @override
    def include_router(
        self,
        router: SqliteRegistrator,  # type: ignore[override]
        *,
        prefix: str = "",
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[BrokerMiddleware[Any, Any]] = (),
        include_in_schema: bool | None = None,
    ) -> None:
        if not isinstance(router, SqliteRegistrator):
            raise TypeError(
                f"Router must be an instance of SqliteRegistrator, got {type(router).__name__}"
                " instead. Use SqliteRouter, or msgcore.Router for transport-neutral code."
            )
        super().include_router(
            router,
            prefix=prefix,
            dependencies=dependencies,
            middlewares=middlewares,
            include_in_schema=include_in_schema,
        )
