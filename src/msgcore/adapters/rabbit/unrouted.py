"""Messages published to a channel before any group of it exists: kept for the first group.

RabbitMQ drops (or hands back) a publish no queue is bound for; SQLite and Redis keep it
for the first consumer group that starts. msgcore's exchange therefore has an alternate
exchange (``E.unrouted``). When a publish to channel ``C`` comes back unrouted, the
publisher declares ``E.unrouted.C`` (a quorum queue bound to the alternate exchange with
key ``C``) and publishes again: from then on, until a group exists, RabbitMQ routes what
nobody else takes there. The first group subscriber that starts binds its own queue (so
nothing new arrives there) and moves every held message into it, in order.
"""

from __future__ import annotations

import contextlib
from typing import TYPE_CHECKING, Any

import aiormq
from aio_pika import ExchangeType

from msgcore.adapters.rabbit.message import transport_headers
from msgcore.adapters.rabbit.settlement import Settler, ensure_routed
from msgcore.naming import rabbit_routing_key, rabbit_unrouted_exchange, rabbit_unrouted_queue

if TYPE_CHECKING:
    from aio_pika.abc import AbstractChannel, AbstractConnection

__all__ = ["adopt", "hold", "is_returned"]


def is_returned(result: object) -> bool:
    """Whether a mandatory publish came back because no queue was bound for it."""
    return isinstance(result, aiormq.abc.DeliveredMessage)


def _holding_arguments() -> dict[str, Any]:
    return {"x-queue-type": "quorum"}


async def hold(amqp: AbstractChannel, *, exchange: str, channel: str) -> None:
    """Keep what is published to ``channel`` while no group has a queue for it."""
    alternate = await amqp.declare_exchange(
        rabbit_unrouted_exchange(exchange), ExchangeType.TOPIC, durable=True
    )
    queue = await amqp.declare_queue(
        rabbit_unrouted_queue(channel, exchange), durable=True, arguments=_holding_arguments()
    )
    await queue.bind(alternate, routing_key=rabbit_routing_key(channel))


async def adopt(connection: AbstractConnection, *, exchange: str, channel: str, queue: str) -> int:
    """Move the messages held for ``channel`` into the group queue ``queue`` (bound
    already); how many. Each is acked only once its copy is confirmed."""
    amqp = await connection.channel()
    try:
        try:
            held = await amqp.declare_queue(rabbit_unrouted_queue(channel, exchange), passive=True)
        except aiormq.exceptions.ChannelNotFoundEntity:
            return 0
        moved = 0
        while (message := await held.get(no_ack=False, fail=False)) is not None:
            copy = Settler.copy_of(message, transport_headers(message.headers))
            result = await amqp.default_exchange.publish(copy, routing_key=queue, mandatory=True)
            ensure_routed(result, f"a held message for {queue!r}")
            await message.ack()
            moved += 1
        return moved
    finally:
        with contextlib.suppress(Exception):
            await amqp.close()
