"""A small app for the AsyncAPI CLI contract test (``tests/sqlite/test_contract.py``).

``python -m faststream docs gen tests.sqlite.apps.asyncapi_app:app`` must build its
schema without touching the database: the broker is never connected.
"""

from __future__ import annotations

from faststream import FastStream
from pydantic import BaseModel

from msgcore.sqlite import SqliteBroker, SqliteRouter

broker = SqliteBroker("sqlite:///./asyncapi-contract-never-created.db", logger=None)
router = SqliteRouter(prefix="billing.")


class Order(BaseModel):
    id: int
    item: str


class Shipment(BaseModel):
    order_id: int


@broker.subscriber("asyncapi-orders", group="shipping")
@broker.publisher("asyncapi-shipments")
async def ship(order: Order) -> Shipment:
    return Shipment(order_id=order.id)


@router.subscriber("asyncapi-invoices")
async def invoice(order: Order) -> None:
    return None


broker.include_router(router)

app = FastStream(broker)
