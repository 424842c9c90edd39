"""``LockPolicy``: which key a handler's messages lock, and how long to wait for it.

A locked handler runs for at most one message per key at a time, across every worker
process and transport that shares the store: ``LockPolicy("customer_id")`` serialises
one customer's orders while different customers' run side by side.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from msgcore.cache.keys import canonical_json, key_data
from msgcore.exceptions import ConfigurationError, LockKeyError
from msgcore.timespans import seconds

if TYPE_CHECKING:
    from msgcore.settings import Settings

__all__ = ["ChannelLock", "LockPolicy"]


@dataclass(frozen=True)
class LockPolicy:
    """``@router.subscriber("orders", lock=LockPolicy("customer_id", wait=60))``.

    Args:
        key: What to lock on. A field name of the JSON payload (dotted for nested
            objects: ``"customer.id"``), or ``key(payload) -> value`` given the payload as
            JSON data. A message without the field is dead-lettered (``LockKeyError``).
        scope: The lock's namespace. Default: the channel, so equal values on two
            channels do not block each other; give two channels the same ``scope`` to
            serialise them against each other.
        wait: Seconds (or a ``timedelta``) a message waits for a held key before its
            attempt fails with ``LockTimeoutError`` and is retried by the subscriber's
            retry policy; 0: do not wait. Default ``MSGCORE_LOCKS__WAIT`` (30).
        lease: Seconds a holder may go silent before its lock runs out; refreshed while
            the handler runs, so only a dead or stalled worker lets it expire. Default
            ``MSGCORE_LOCKS__LEASE`` (60).
    """

    key: str | Callable[[Any], Any]
    scope: str | None = None
    wait: float | timedelta | None = None
    lease: float | timedelta | None = None

    def __post_init__(self) -> None:
        if isinstance(self.key, str):
            if not self.key or any(not part for part in self.key.split(".")):
                raise ConfigurationError(
                    f"LockPolicy(key={self.key!r}) must name a payload field, e.g. "
                    "'customer_id' or 'order.customer.id'."
                )
        elif not callable(self.key):
            raise ConfigurationError(
                f"LockPolicy(key=...) takes a field name or a function, got {self.key!r}"
            )
        if self.scope is not None and (not isinstance(self.scope, str) or not self.scope):
            raise ConfigurationError(
                f"LockPolicy(scope=...) takes a non-empty str, got {self.scope!r}"
            )
        seconds(self.wait, "LockPolicy(wait=...)", allow_zero=True, allow_forever=True)
        seconds(self.lease, "LockPolicy(lease=...)")

    def resolve(self, channel: str, settings: Settings) -> ChannelLock:
        """The policy of ``channel`` with the settings' defaults filled in."""
        wait = seconds(self.wait, "LockPolicy(wait=...)", allow_zero=True, allow_forever=True)
        lease = seconds(self.lease, "LockPolicy(lease=...)")
        return ChannelLock(
            channel=channel,
            scope=self.scope or channel,
            key=self.key,
            wait=settings.locks.wait if wait is None else wait,
            lease=settings.locks.lease if lease is None else lease,
        )


@dataclass(frozen=True)
class ChannelLock:
    """A channel's lock policy, complete."""

    channel: str
    scope: str
    key: str | Callable[[Any], Any]
    wait: float
    lease: float

    def lock_key(self, value: tuple[str, Any]) -> str:
        """``scope:value`` for a payload (``value`` from ``msgcore.cache.keys.body_value``).

        Raises ``LockKeyError`` when the payload has no key: the message cannot run under
        its lock, and no retry changes that.
        """
        kind, data = value
        try:
            found = self._find(kind, data)
        except LockKeyError:
            raise
        except Exception as exc:
            name = getattr(self.key, "__qualname__", repr(self.key))
            raise LockKeyError(
                f"The lock key function {name} of channel {self.channel!r} failed on this "
                f"payload ({type(exc).__name__}: {exc}); the message is dead-lettered. "
                "Fix the function or the payload."
            ) from exc
        if found is None:
            raise LockKeyError(
                f"The lock key of a message on {self.channel!r} is null; the message is "
                "dead-lettered. Every message of a locked handler needs a key."
            )
        text = found if isinstance(found, str) else canonical_json(found)
        return f"{self.scope}:{text}"

    def _find(self, kind: str, data: Any) -> Any:
        if callable(self.key):
            # the cache's rule: JSON data the same in every process (no str() fallback,
            # which gave every message a key of its own; sets sorted)
            return key_data(self.key(data))
        node = data
        for part in self.key.split("."):
            if kind != "json" or not isinstance(node, dict) or part not in node:
                raise LockKeyError(
                    f"A message on {self.channel!r} has no {self.key!r} field to lock on "
                    f"(LockPolicy(key={self.key!r})); the message is dead-lettered. Send "
                    "JSON objects that carry the field."
                )
            node = node[part]
        return node
