"""msgcore's SQLite transport: a FastStream broker on a SQLite file.

::

    from msgcore.sqlite import SqliteBroker

    broker = SqliteBroker("sqlite:///./app.db")

    @broker.subscriber("orders", group="billing", max_workers=4)
    async def handle(order: dict) -> None: ...
"""

from msgcore.sqlite.annotations import SqliteMessage
from msgcore.sqlite.broker.broker import SqliteBroker
from msgcore.sqlite.broker.router import SqlitePublisher, SqliteRoute, SqliteRouter
from msgcore.sqlite.client.base import DeadLetter
from msgcore.sqlite.response import SqliteResponse
from msgcore.sqlite.testing import TestSqliteBroker

__all__ = (
    "DeadLetter",
    "SqliteBroker",
    "SqliteMessage",
    "SqlitePublisher",
    "SqliteResponse",
    "SqliteRoute",
    "SqliteRouter",
    "TestSqliteBroker",
)
