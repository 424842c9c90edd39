"""Testing helpers: ``TestClient`` for in-memory tests on any transport's broker."""

from __future__ import annotations

from types import TracebackType
from typing import Any

from faststream import FastStream
from faststream._internal.testing.broker import TestBroker, find_test_broker

from msgcore.exceptions import ConfigurationError

__all__ = ["TestClient"]


def TestClient(broker_or_app: Any, **kwargs: Any) -> TestBroker[Any, Any]:
    """The FastStream in-memory test broker for ``broker_or_app``'s transport::

        async with TestClient(create_broker(router)) as broker:
            await broker.publish(...)

    Picks ``TestSqliteBroker``, ``TestRedisBroker`` or ``TestRabbitBroker``.
    """
    broker = broker_or_app.broker if isinstance(broker_or_app, FastStream) else broker_or_app
    if broker is None:
        raise ConfigurationError("The app has no broker to test.")
    if getattr(broker, "running", False):
        # the test broker patches it: after the test its real subscribers stayed stopped
        # (and on Redis its publisher stayed a mock)
        raise ConfigurationError(
            "TestClient takes a broker that is not started: build one for the test with "
            "create_broker(...), and use a fresh one for each TestClient."
        )
    # Importing a transport's testing module registers its test broker.
    import faststream.rabbit.testing
    import faststream.redis.testing  # noqa: F401

    import msgcore.sqlite.testing  # noqa: F401

    test_cls = find_test_broker(broker)
    if test_cls is None:
        raise ConfigurationError(f"No in-memory test broker is known for {type(broker).__name__}.")
    return _with_store(test_cls)(broker, **kwargs)


_WITH_STORE: dict[type[Any], type[TestBroker[Any, Any]]] = {}


def _with_store(test_cls: type[TestBroker[Any, Any]]) -> type[TestBroker[Any, Any]]:
    """``test_cls`` that opens msgcore's job store on entry, as ``broker.start`` does for
    real: the cached channels' policies are registered before the first submit."""

    class WithStore(test_cls):  # type: ignore[valid-type,misc]
        async def __aenter__(self) -> Any:
            entered = await super().__aenter__()
            for broker in self.brokers:
                tracker = getattr(broker, "msgcore_jobs", None)
                # only for caches: in-memory job tests must not need a store server
                if tracker is not None and tracker.caches:
                    await tracker.open()
            return entered

        async def __aexit__(
            self,
            exc_type: type[BaseException] | None = None,
            exc_val: BaseException | None = None,
            exc_tb: TracebackType | None = None,
        ) -> None:
            try:
                await super().__aexit__(exc_type, exc_val, exc_tb)
            finally:
                for broker in self.brokers:
                    tracker = getattr(broker, "msgcore_jobs", None)
                    if tracker is not None:
                        await tracker.close()

    WithStore.__name__ = WithStore.__qualname__ = test_cls.__name__
    return _WITH_STORE.setdefault(test_cls, WithStore)
