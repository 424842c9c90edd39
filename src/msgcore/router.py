"""``msgcore.Router``: declare subscribers and publishers once, bind them to any transport.

Declarations are plain data until ``create_broker``/``create_app`` binds them to the
transport chosen by ``Settings.url``. Decorated functions stay plain functions: binding
wraps them afresh for every broker, so two brokers never share publishers.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic_core import PydanticSerializationError

from msgcore.cache.policy import CachePolicy
from msgcore.exceptions import BrokerConnectionError, ConfigurationError, PayloadError
from msgcore.locks.policy import LockPolicy
from msgcore.naming import check_group_name
from msgcore.publish_args import check_headers, check_publish, check_request
from msgcore.retry import RetryPolicy
from msgcore.timespans import seconds
from msgcore.urls import redact_url

if TYPE_CHECKING:
    from fast_depends.dependencies import Dependant
    from faststream._internal.basic_types import SendableMessage

    from msgcore.adapters.base import BoundPublisher

__all__ = ["PublisherHandle", "Router", "SubscriberDeclaration"]

F = TypeVar("F", bound=Callable[..., Any])

_PENDING_PUBLISHERS = "__msgcore_publishers__"
_SUBSCRIPTIONS = "__msgcore_subscriptions__"


@dataclass(eq=False)
class SubscriberDeclaration:
    """One ``@router.subscriber(...)``: what to consume and how, on any transport."""

    channel: str
    call: Callable[..., Any]
    group: str | None = None
    max_workers: int = 1
    prefetch: int | None = None
    """Messages held beyond the free handler slots (None: the transport's default)."""
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    lease_seconds: float = 30.0
    no_reply: bool = False
    dependencies: Sequence[Dependant] = ()
    title: str | None = None
    description: str | None = None
    include_in_schema: bool = True
    publishers: list[PublisherHandle] = field(default_factory=list)
    cache: CachePolicy | None = None
    lock: LockPolicy | None = None

    @property
    def endpoint_options(self) -> dict[str, Any]:
        """The FastStream subscriber options every transport passes through unchanged."""
        return {
            "no_reply": self.no_reply,
            "dependencies": self.dependencies,
            "title": self.title,
            "description": self.description,
            "include_in_schema": self.include_in_schema,
        }


class PublisherHandle:
    """``router.publisher(channel)``: a decorator for handlers and a publisher of its own.

    ``await handle.publish(payload)`` works once a broker built from its router is
    connected (``async with create_broker(router):``).
    """

    def __init__(
        self,
        router: Router,
        channel: str,
        *,
        headers: dict[str, Any] | None = None,
        title: str | None = None,
        description: str | None = None,
        schema: Any | None = None,
        include_in_schema: bool = True,
    ) -> None:
        self.router = router
        self.channel = channel
        _check_channel(channel)
        check_headers(headers, channel)
        self.headers = dict(headers or {})
        self.title = title
        self.description = description
        self.schema = schema
        self.include_in_schema = include_in_schema
        self.full_channel = f"{router.prefix}{channel}"
        self._bound: BoundPublisher | None = None

    def __repr__(self) -> str:
        return f"PublisherHandle({self.full_channel!r})"

    def __call__(self, func: F) -> F:
        """Publish the decorated handler's return value to this channel."""
        subscriptions: list[SubscriberDeclaration] | None = getattr(func, _SUBSCRIPTIONS, None)
        if subscriptions:
            # applied above @router.subscriber: attach to what is declared already
            for decl in subscriptions:
                decl.publishers.append(self)
        pending: list[PublisherHandle] = getattr(func, _PENDING_PUBLISHERS, [])
        setattr(func, _PENDING_PUBLISHERS, [*pending, self])
        return func

    def _bind(self, bound: BoundPublisher) -> None:
        self._bound = bound

    @property
    def bound(self) -> BoundPublisher:
        if self._bound is None:
            raise ConfigurationError(
                f"Publisher {self.full_channel!r} is not bound to a broker: pass its router "
                "to create_broker()/create_app(), and publish inside `async with broker:`."
            )
        return self._bound

    async def publish(
        self,
        message: SendableMessage = None,
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        delay: float | None = None,
        not_before: datetime | None = None,
        priority: int | None = None,
    ) -> None:
        """Publish ``message`` to this channel on the bound transport.

        Raises ``BrokerConnectionError`` when the broker cannot be reached or the
        connection drops during the publish; ``PayloadError`` or ``ConfigurationError``
        for a payload, header, delay or priority no transport takes alike."""
        check_publish(self.full_channel, headers, delay, priority, not_before)
        await self._publish(
            message,
            headers=headers,
            correlation_id=correlation_id,
            delay=delay,
            not_before=not_before,
            priority=priority,
        )

    async def _publish(
        self,
        message: SendableMessage = None,
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        delay: float | None = None,
        not_before: datetime | None = None,
        priority: int | None = None,
    ) -> None:
        """``publish`` with arguments checked by the caller: the client's, which adds
        msgcore's own headers (the job id) to checked ones."""
        bound = self.bound
        try:
            await bound.publish(
                message,
                headers={**self.headers, **(headers or {})},
                correlation_id=correlation_id,
                delay=delay,
                not_before=not_before,
                priority=priority,
            )
        except bound.connection_errors as exc:
            raise _unreachable(bound, f"publish to channel {self.full_channel!r}", exc) from exc
        except (PydanticSerializationError, UnicodeEncodeError) as exc:
            raise unencodable(self.full_channel, exc) from exc

    async def request(
        self,
        message: SendableMessage = None,
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        """Publish and wait for the handler's reply (the decoded body).

        ``timeout`` defaults to ``Settings.request_timeout`` (30 s) on every transport.
        """
        check_request(self.full_channel, headers, timeout)
        return await self._request(
            message, headers=headers, correlation_id=correlation_id, timeout=timeout
        )

    async def _request(
        self,
        message: SendableMessage = None,
        *,
        headers: dict[str, Any] | None = None,
        correlation_id: str | None = None,
        timeout: float | None = None,
    ) -> Any:
        bound = self.bound
        try:
            return await bound.request(
                message,
                headers={**self.headers, **(headers or {})},
                correlation_id=correlation_id,
                timeout=timeout,
            )
        except bound.connection_errors as exc:
            raise _unreachable(
                bound, f"send a request to channel {self.full_channel!r}", exc
            ) from exc
        except (PydanticSerializationError, UnicodeEncodeError) as exc:
            raise unencodable(self.full_channel, exc) from exc


def _check_handler(func: Any, channel: str) -> None:
    """Refuse what FastStream cannot call: its every attempt failed inside FastStream
    (a serializer error) and each message was dead-lettered."""
    if not callable(func):
        raise ConfigurationError(f"@router.subscriber({channel!r}) decorates a function")
    try:
        parameters = inspect.signature(func).parameters.values()
    except (TypeError, ValueError):  # a builtin or C callable: FastStream will tell
        return
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters):
        raise ConfigurationError(
            f"The handler of {channel!r} takes **kwargs, which FastStream cannot fill: "
            "name the parameters (the body, then Message, Context(...) or Depends(...))."
        )


def _check_channel(
    channel: Any, who: str = "A publisher", example: str = "router.publisher('invoices')"
) -> None:
    """A channel given at all: a non-empty string (an empty one made a stream named after
    the prefix on Redis, an empty routing key on RabbitMQ, and an error on SQLite). The
    one check for subscribers, ``router.publisher`` and the client's publishers; the
    name's characters are checked once it has its prefixes (``check_channel_name``)."""
    if not isinstance(channel, str) or not channel:
        raise ConfigurationError(
            f"{who} needs a channel: a non-empty string such as {example}, got {channel!r}."
        )


def unencodable(channel: str, exc: Exception) -> PayloadError:
    """The error of a payload (or header) the transport cannot encode."""
    return PayloadError(
        f"Cannot encode a message for channel {channel!r}: {exc}. Send bytes, a str, or "
        "a value JSON can hold (dict, list, numbers, a pydantic model, a dataclass); "
        "nothing was sent."
    )


def _unreachable(bound: BoundPublisher, action: str, exc: BaseException) -> BrokerConnectionError:
    cause = redact_url(f"{type(exc).__name__}: {exc}")
    return BrokerConnectionError(
        f"Could not {action}: the connection to the broker at {bound.server} failed "
        f"({cause}). Check that the broker is running there and that the URL's host, "
        "port and password are right; msgcore reconnects by itself, so try again once "
        "it answers. The message may or may not have reached the broker (a job "
        "submitted with a job_id is not queued twice).",
        server=bound.server,
    )


@dataclass(frozen=True)
class _Inclusion:
    router: Router
    prefix: str
    dependencies: tuple[Dependant, ...]
    middlewares: tuple[Any, ...]


class Router:
    """Broker-neutral declarations, in FastStream's vocabulary.

    ::

        router = Router(prefix="billing.")
        invoices = router.publisher("invoices")

        @router.subscriber("orders", group="billing", max_workers=4, max_attempts=5)
        @invoices
        async def bill(order: Order) -> Invoice: ...
    """

    def __init__(
        self,
        prefix: str = "",
        *,
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[Any] = (),
        routers: Sequence[Router] = (),
    ) -> None:
        if not isinstance(prefix, str):
            raise ConfigurationError(f"Router(prefix=...) takes a str, got {prefix!r}")
        self.prefix = prefix
        self.dependencies = tuple(dependencies)
        self.middlewares = tuple(middlewares)
        self.subscribers: list[SubscriberDeclaration] = []
        self.publishers: list[PublisherHandle] = []
        self.inclusions: list[_Inclusion] = []
        for r in routers:
            self.include_router(r)

    def subscriber(
        self,
        channel: str,
        *,
        group: str | None = None,
        max_workers: int = 1,
        prefetch: int | None = None,
        max_attempts: int | None = None,
        retry: RetryPolicy | None = None,
        lease_seconds: float = 30.0,
        no_reply: bool = False,
        dependencies: Sequence[Dependant] = (),
        title: str | None = None,
        description: str | None = None,
        include_in_schema: bool = True,
        cache: bool | CachePolicy = False,
        lock: str | Callable[[Any], Any] | LockPolicy | None = None,
    ) -> Callable[[F], F]:
        """Consume ``channel``; the same declaration runs on every transport.

        Args:
            group: Consumer group. Every group gets every message; workers of one group
                (in any process) compete. Default: the group ``"default"``.
            max_workers: Handlers running at once for this subscriber in one process.
            prefetch: Messages one worker takes ahead, beyond its free handler slots: it
                holds at most ``max_workers + prefetch`` at a time. ``0`` takes a
                message only when a handler can start it, so long jobs spread over all
                workers and a queued job stays cancellable until a handler starts it.
                Default (None): the transport's read-ahead, for throughput (SQLite and
                Redis ``max(16, 2 * max_workers)``, RabbitMQ ``MSGCORE_RABBIT__PREFETCH``
                deliveries).
            max_attempts: Deliveries before a failing message is dead-lettered (5).
            retry: Backoff between attempts (``RetryPolicy``); carries max_attempts too.
            lease_seconds: How long a worker may go silent before its message is given
                to another worker (transports with leases).
            no_reply: Do not send the return value to a requester.
            cache: Reuse results for repeated payloads (``True``, or a ``CachePolicy``
                with ttl, version, key, max_entries): see docs/cache.md.
            lock: Run at most one message per key at a time, across all workers: a
                payload field name (``"customer_id"``), a ``key(payload)`` function, or a
                ``LockPolicy`` with scope, wait and lease: see docs/locks.md.
        """
        _check_channel(channel, "A subscriber", "@router.subscriber('orders')")
        # a group's name does not depend on where the router is included: checked here,
        # whole (channels get their prefixes when the router is bound)
        check_group_name(group)
        if retry is not None and not isinstance(retry, RetryPolicy):
            raise ConfigurationError(
                f"retry takes a msgcore.RetryPolicy, got {type(retry).__name__}: "
                "retry=RetryPolicy(max_attempts=3, backoff=2)"
            )
        # one rule on every transport (each adapter checked its own way, or not at all)
        seconds(lease_seconds, "lease_seconds")
        if isinstance(max_workers, bool) or not isinstance(max_workers, int) or max_workers < 1:
            raise ConfigurationError(
                f"max_workers must be an int of at least 1, got {max_workers!r}"
            )
        if prefetch is not None and (
            isinstance(prefetch, bool) or not isinstance(prefetch, int) or prefetch < 0
        ):
            raise ConfigurationError(
                f"prefetch must be a whole number of messages, 0 or more, got {prefetch!r}"
            )
        if retry is not None and max_attempts is not None and retry.max_attempts != max_attempts:
            raise ConfigurationError(
                f"max_attempts={max_attempts} contradicts retry.max_attempts="
                f"{retry.max_attempts}: pass one of them."
            )
        # max_attempts=0 is refused by RetryPolicy, not taken for "the default"
        policy = retry or (
            RetryPolicy(max_attempts=max_attempts) if max_attempts is not None else RetryPolicy()
        )

        if cache is True:
            cache_policy: CachePolicy | None = CachePolicy()
        elif cache is False or cache is None:
            cache_policy = None
        elif isinstance(cache, CachePolicy):
            cache_policy = cache
        else:
            raise ConfigurationError(
                f"cache= takes True, False or a msgcore.CachePolicy, got {cache!r}"
            )

        lock_policy = lock if isinstance(lock, LockPolicy) or lock is None else LockPolicy(lock)

        def decorator(func: F) -> F:
            _check_handler(func, channel)
            decl = SubscriberDeclaration(
                channel=channel,
                call=func,
                group=group,
                max_workers=max_workers,
                prefetch=prefetch,
                retry=policy,
                lease_seconds=lease_seconds,
                no_reply=no_reply,
                dependencies=tuple(dependencies),
                title=title,
                description=description,
                include_in_schema=include_in_schema,
                publishers=list(getattr(func, _PENDING_PUBLISHERS, [])),
                cache=cache_policy,
                lock=lock_policy,
            )
            self.subscribers.append(decl)
            setattr(func, _SUBSCRIPTIONS, [*getattr(func, _SUBSCRIPTIONS, []), decl])
            return func

        return decorator

    def publisher(
        self,
        channel: str,
        *,
        headers: dict[str, Any] | None = None,
        title: str | None = None,
        description: str | None = None,
        schema: Any | None = None,
        include_in_schema: bool = True,
    ) -> PublisherHandle:
        """A publisher to ``channel``: decorate a handler with it, or ``await .publish()``."""
        handle = PublisherHandle(
            self,
            channel,
            headers=headers,
            title=title,
            description=description,
            schema=schema,
            include_in_schema=include_in_schema,
        )
        self.publishers.append(handle)
        return handle

    def include_router(
        self,
        router: Router,
        *,
        prefix: str = "",
        dependencies: Sequence[Dependant] = (),
        middlewares: Sequence[Any] = (),
    ) -> None:
        if not isinstance(router, Router):
            raise ConfigurationError(
                f"include_router() takes a msgcore.Router, got {type(router).__name__}. "
                "Transport routers (RedisRouter, ...) belong to one broker only."
            )
        if router is self:
            raise ConfigurationError("A router cannot include itself.")
        if any(inc.router is router for inc in self.inclusions):
            # its handlers would be bound twice
            raise ConfigurationError("This router is included already: include it once.")
        if not isinstance(prefix, str):
            raise ConfigurationError(f"include_router(prefix=...) takes a str, got {prefix!r}")
        self.inclusions.append(_Inclusion(router, prefix, tuple(dependencies), tuple(middlewares)))

    def walk(self, prefix: str = "") -> Iterator[tuple[Router, str]]:
        """This router and every included one, with the channel prefix each ends up with."""
        full = f"{prefix}{self.prefix}"
        yield self, full
        for inc in self.inclusions:
            yield from inc.router.walk(f"{full}{inc.prefix}")
