"""Testing helpers: ``TestClient`` for in-memory tests on any transport's broker."""

from __future__ import annotations

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
    # Importing a transport's testing module registers its test broker.
    import faststream.rabbit.testing
    import faststream.redis.testing  # noqa: F401

    import msgcore.sqlite.testing  # noqa: F401

    test_cls = find_test_broker(broker)
    if test_cls is None:
        raise ConfigurationError(f"No in-memory test broker is known for {type(broker).__name__}.")
    return test_cls(broker, **kwargs)
