"""``msgcore.locks``: per-key locks on the store, for handlers and applications.

Handlers: ``@router.subscriber("orders", lock=LockPolicy("customer_id"))`` runs at most
one message per customer at a time across every worker. Applications:
``async with client.lock("report:2026-12") as held: ...``. See docs/locks.md.
"""

from msgcore.locks.lock import HeldLock, acquire
from msgcore.locks.policy import ChannelLock, LockPolicy

__all__ = ["ChannelLock", "HeldLock", "LockPolicy", "acquire"]
