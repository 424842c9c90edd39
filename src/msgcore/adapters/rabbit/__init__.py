"""The RabbitMQ transport of msgcore's declare-once API.

``create_broker(router, settings=Settings(url="amqp://..."))`` returns a
``MsgcoreRabbitBroker`` (a FastStream ``RabbitBroker``) with every declaration bound to
a durable topic exchange and one quorum queue per (channel, group); see ``topology.py``
for the layout and docs/rabbit.md for the guarantees.
"""

from msgcore.adapters.rabbit.adapter import RabbitAdapter
from msgcore.adapters.rabbit.broker import MsgcoreRabbitBroker
from msgcore.adapters.rabbit.message import MsgcoreRabbitMessage
from msgcore.adapters.rabbit.publisher import MsgcoreRabbitPublisher
from msgcore.adapters.rabbit.subscriber import MsgcoreRabbitSubscriber

__all__ = [
    "MsgcoreRabbitBroker",
    "MsgcoreRabbitMessage",
    "MsgcoreRabbitPublisher",
    "MsgcoreRabbitSubscriber",
    "RabbitAdapter",
]
