"""The Redis transport: channels are streams, groups are consumer groups.

``create_broker`` returns a ``MsgcoreRedisBroker`` (a ``faststream.redis.RedisBroker``)
with msgcore's guarantees on top of FastStream's stream subscribers: per-group retries
with backoff, dead letters, leases with heartbeats, delayed publishes. See
``docs/redis.md``.
"""

from msgcore.adapters.redis.adapter import RedisAdapter, RedisBoundPublisher
from msgcore.adapters.redis.broker import MsgcoreRedisBroker
from msgcore.adapters.redis.message import MsgcoreStreamMessage
from msgcore.adapters.redis.subscriber import MsgcoreStreamSubscriber

__all__ = [
    "MsgcoreRedisBroker",
    "MsgcoreStreamMessage",
    "MsgcoreStreamSubscriber",
    "RedisAdapter",
    "RedisBoundPublisher",
]
