"""``CachePolicy``: how a handler's results are cached, and how clients learn it.

Workers register the policy of every cached channel in the store when they start
(``ChannelCache.to_json``); clients read it back to key their submits the way the
workers will. A ``key`` function therefore has to be importable by name from both.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from msgcore.exceptions import ConfigurationError
from msgcore.timespans import seconds

if TYPE_CHECKING:
    from msgcore.settings import Settings

__all__ = ["CachePolicy", "ChannelCache"]


def _key_path(key: Callable[[Any], Any]) -> str:
    module = getattr(key, "__module__", None)
    qualname = getattr(key, "__qualname__", "")
    if not module or not qualname or "<" in qualname:
        raise ConfigurationError(
            f"CachePolicy(key={key!r}) must be a function defined at module level (not a "
            "lambda or a nested function): clients import it by name to key their "
            "submits the way the workers do."
        )
    return f"{module}:{qualname}"


@dataclass(frozen=True)
class CachePolicy:
    """``@router.subscriber("render", cache=CachePolicy(ttl=3600, version="2"))``.

    Args:
        ttl: Seconds (or a ``timedelta``) an entry is kept. Default: ``MSGCORE_CACHE__TTL``
            (7 days).
        version: The handler's version: change it when the handler's output changes, and
            every earlier entry misses.
        key: ``key(payload) -> value``: what identifies the work, given the payload as
            JSON data (e.g. ``lambda p: p["url"]`` written as a module-level function).
            Default: the whole payload.
        max_entries: Entries kept for the channel; the oldest are evicted beyond it.
            Default: ``MSGCORE_CACHE__MAX_ENTRIES`` (100,000).
        lease: Seconds a pending or running job holds its key for single-flight before
            another submit may run it again; a worker refreshes it while the handler
            runs, so only a dead worker's claim runs out. Default:
            ``MSGCORE_CACHE__LEASE`` (300).
    """

    ttl: float | timedelta | None = None
    version: str = "1"
    key: Callable[[Any], Any] | None = None
    max_entries: int | None = None
    lease: float | timedelta | None = None

    def __post_init__(self) -> None:
        seconds(self.ttl, "CachePolicy(ttl=...)")
        seconds(self.lease, "CachePolicy(lease=...)")
        if self.key is not None:
            _key_path(self.key)
        entries = self.max_entries
        if entries is not None and (
            not isinstance(entries, int) or isinstance(entries, bool) or entries < 1
        ):
            raise ConfigurationError(
                f"CachePolicy(max_entries=...) must be an int of at least 1, got {entries!r}"
            )
        if not isinstance(self.version, str | int) or isinstance(self.version, bool):
            raise ConfigurationError(
                f"CachePolicy(version=...) takes a str (or an int), got {self.version!r}"
            )
        if not str(self.version):
            raise ConfigurationError("CachePolicy(version=...) must not be empty")

    def resolve(self, channel: str, settings: Settings) -> ChannelCache:
        """The policy of ``channel`` with the settings' defaults filled in."""
        ttl = seconds(self.ttl, "CachePolicy(ttl=...)")
        lease = seconds(self.lease, "CachePolicy(lease=...)")
        return ChannelCache(
            channel=channel,
            version=str(self.version),
            ttl=settings.cache.ttl if ttl is None else ttl,
            max_entries=(
                settings.cache.max_entries if self.max_entries is None else self.max_entries
            ),
            lease=settings.cache.lease if lease is None else lease,
            key=self.key,
            key_path=None if self.key is None else _key_path(self.key),
        )


@dataclass(frozen=True)
class ChannelCache:
    """A channel's cache policy, complete: what workers run and clients read back."""

    channel: str
    version: str
    ttl: float | None
    max_entries: int | None
    lease: float
    key: Callable[[Any], Any] | None = None
    key_path: str | None = None
    key_missing: bool = False
    """A client could not import ``key_path``: it cannot key submits itself."""

    def to_json(self) -> str:
        return json.dumps(
            {
                "version": self.version,
                "ttl": self.ttl,
                "max_entries": self.max_entries,
                "lease": self.lease,
                "key": self.key_path,
            },
            separators=(",", ":"),
        )

    @classmethod
    def from_json(cls, channel: str, text: str) -> ChannelCache:
        data = json.loads(text)
        path = data.get("key")
        key, missing = None, False
        if path:
            key = _import(path)
            missing = key is None
        return cls(
            channel=channel,
            version=str(data["version"]),
            ttl=data.get("ttl"),
            max_entries=data.get("max_entries"),
            lease=float(data.get("lease") or 300.0),
            key=key,
            key_path=path,
            key_missing=missing,
        )


def _import(path: str) -> Callable[[Any], Any] | None:
    module_name, _, qualname = path.partition(":")
    try:
        target: Any = importlib.import_module(module_name)
        for part in qualname.split("."):
            target = getattr(target, part)
    except (ImportError, AttributeError):
        return None
    return target if callable(target) else None
