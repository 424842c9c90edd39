"""``create_broker`` and ``create_app``: bind routers to the transport the settings pick."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from faststream import FastStream

from msgcore.adapters import adapter_for
from msgcore.adapters.base import TransportAdapter
from msgcore.exceptions import ConfigurationError
from msgcore.heap import freeze_startup_heap
from msgcore.jobs.tracking import JobTracker
from msgcore.lifecycle import with_lifecycle
from msgcore.logs import show_in_service
from msgcore.naming import check_channel_name
from msgcore.router import PublisherHandle, Router
from msgcore.settings import Settings, check_settings
from msgcore.telemetry.instrument import channel_names, instrument, watch_queue_depth
from msgcore.telemetry.setup import active

__all__ = ["create_app", "create_broker"]


@dataclass(eq=False)
class _Node:
    router: Router
    prefix: str
    """Channel prefix of this router's own declarations (all enclosing prefixes)."""
    native: Any
    children: list[tuple[_Node, Any]] = field(default_factory=list)


def _plan(
    adapter: TransportAdapter, router: Router, outer: str, extra: Sequence[Any] = ()
) -> _Node:
    node = _Node(
        router,
        f"{outer}{router.prefix}",
        adapter.native_router(
            dependencies=router.dependencies, middlewares=[*extra, *router.middlewares]
        ),
    )
    for inc in router.inclusions:
        node.children.append((_plan(adapter, inc.router, f"{node.prefix}{inc.prefix}"), inc))
    return node


def _nodes(node: _Node) -> list[_Node]:
    found = [node]
    for child, _ in node.children:
        found.extend(_nodes(child))
    return found


def _include(node: _Node) -> None:
    # Children first: a transport router copies what it holds when it is included.
    for child, inc in node.children:
        _include(child)
        node.native.include_router(
            child.native, dependencies=inc.dependencies, middlewares=inc.middlewares
        )


def create_broker(*routers: Router, settings: Settings | None = None) -> Any:
    """The FastStream broker for ``settings.url`` (default: ``Settings()`` from the
    environment) with every declaration of ``routers`` bound to it.

    The return value is the transport's own broker (``SqliteBroker``, ``RedisBroker``,
    ``RabbitBroker``): use it as any FastStream broker.
    """
    if settings is not None:
        check_settings(settings, "create_broker(settings=...)")
    for router in routers:
        if not isinstance(router, Router):
            raise ConfigurationError(
                f"create_broker()/create_app() take msgcore.Router objects, got "
                f"{type(router).__name__}. Transport routers (RedisRouter, ...) belong to "
                "one broker only: declare on a msgcore.Router."
            )
    # one router passed twice is bound once (its handlers ran twice under TestClient)
    routers = tuple(dict.fromkeys(routers))
    settings = settings or Settings()
    adapter = adapter_for(settings)
    broker = adapter.broker()
    declared = [
        decl for root in routers for router, _ in root.walk() for decl in router.subscribers
    ]
    cached = settings.cache.enabled and any(decl.cache is not None for decl in declared)
    locked = any(decl.lock is not None for decl in declared)
    telemetry = active(settings)
    # job records, the result cache and per-key locks share the middleware (the tracing
    # middleware sets the spans' channel and attempt: an untracked, traced broker does
    # without it)
    tracked = settings.jobs.track or cached or locked
    tracker = JobTracker(settings, telemetry=telemetry) if tracked else None
    # outermost of msgcore's routers: it sees each attempt's outcome before the
    # transport settles it, and user middlewares run inside the job's "running" state
    extra = [tracker.middleware] if tracker is not None else []
    roots = [_plan(adapter, r, "", extra) for r in routers]
    nodes = [n for root in roots for n in _nodes(root)]

    natives: dict[PublisherHandle, Any] = {}
    for node in nodes:
        for handle in node.router.publishers:
            handle.full_channel = f"{node.prefix}{handle.channel}"
            check_channel_name(handle.full_channel)
            native = adapter.publisher(node.native, handle.full_channel, handle)
            natives[handle] = native
            handle._bind(adapter.bind(broker, native))

    subscribed: list[str] = []
    for node in nodes:
        for decl in node.router.subscribers:
            publishers = []
            for handle in decl.publishers:
                if handle not in natives:
                    # declared on a router that was not passed here: bind it beside
                    # the subscriber that publishes through it
                    check_channel_name(handle.full_channel)
                    natives[handle] = adapter.publisher(node.native, handle.full_channel, handle)
                    handle._bind(adapter.bind(broker, natives[handle]))
                publishers.append(natives[handle])
            channel = f"{node.prefix}{decl.channel}"
            check_channel_name(channel)
            subscribed.append(channel)
            subscriber = adapter.subscribe(node.native, decl, channel)
            if tracker is not None:
                tracker.track(subscriber, decl, channel)
            wrapper = subscriber(decl.call)
            for publisher in publishers:
                publisher(wrapper)

    for root in roots:
        _include(root)
        broker.include_router(root.native)
    if tracker is not None:
        _tie_to_broker(broker, tracker)
    if telemetry is not None:
        instrument(broker, telemetry, channel_names(settings, routers))
        watch_queue_depth(broker, telemetry, settings, subscribed)
    return broker


def _tie_to_broker(broker: Any, tracker: JobTracker) -> None:
    """Open the job store when the broker starts (fail fast), close it when it stops."""

    async def open_store() -> None:
        # opened before consuming, so that an unreachable store fails the start
        await tracker.open(broker)

    with_lifecycle(broker, started=open_store, stopped=tracker.close)
    broker.msgcore_jobs = tracker


class _ServiceApp(FastStream):
    """A ``FastStream`` app that knows whether it runs as a service: ``run()`` is what
    ``faststream run`` (and ``asyncio.run(app.run())``) calls; ``TestApp`` only starts
    it, inside a test process whose heap is not the app's to freeze."""

    as_service = False

    async def run(self, *args: Any, **kwargs: Any) -> None:
        self.as_service = True
        await super().run(*args, **kwargs)


def create_app(*routers: Router, settings: Settings | None = None, **app_kwargs: Any) -> FastStream:
    """A ``faststream.FastStream`` app for ``create_broker(*routers, settings=settings)``.

    ``faststream run module:app`` picks the transport from ``MSGCORE_URL``. Once the app
    runs, msgcore's own log lines go to stdout beside FastStream's, unless the
    application configured logging itself (``msgcore.logs``); importing a module that
    builds an app (a client does) changes no logging. Once it runs (``app.run()``, as
    ``faststream run`` does; not under ``TestApp``) and has started, the objects made so
    far leave full garbage collections (``Settings.gc_freeze``).
    """
    settings = settings or Settings()
    app = _ServiceApp(create_broker(*routers, settings=settings), **app_kwargs)
    log_messages = settings.log_messages

    def show_logs() -> None:
        show_in_service(log_messages=log_messages)

    app.on_startup(show_logs)
    if settings.gc_freeze:

        def freeze() -> None:
            if app.as_service:
                freeze_startup_heap()

        app.after_startup(freeze)
    return app
