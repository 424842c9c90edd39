"""``msgcore.ops``: what an operator asks of a running system, on every transport.

Called with a ``Settings`` (the workers' URL, stream prefix or exchange, and store URL)
from any process, no broker needed; the ``msgcore`` CLI's ``stats`` and ``dlq``
commands are built on it::

    from msgcore import Settings
    from msgcore.ops import channel_stats, list_dead_letters, replay_dead_letters

    settings = Settings()                      # MSGCORE_URL, MSGCORE_STORE_URL, ...
    for s in await channel_stats(settings):
        print(s.channel, s.group, s.waiting, s.dead)
    dead = await list_dead_letters(settings, channel="orders")
    await replay_dead_letters(settings, [d.id for d in dead])

On RabbitMQ, which cannot list its queues over AMQP, the groups come from the subscriber
registry workers write to the job store when they start (``Store.register_subscribers``).
"""

from msgcore.ops.dead_letters import (
    get_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)
from msgcore.ops.errors import TransportUnreachableError
from msgcore.ops.models import DeadLetter, GroupStats
from msgcore.ops.stats import channel_stats

__all__ = [
    "DeadLetter",
    "GroupStats",
    "TransportUnreachableError",
    "channel_stats",
    "get_dead_letter",
    "list_dead_letters",
    "purge_dead_letters",
    "replay_dead_letters",
]
