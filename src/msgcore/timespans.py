"""Durations as policies take them: seconds or a ``timedelta``."""

from __future__ import annotations

from datetime import timedelta

from msgcore.exceptions import ConfigurationError

__all__ = ["seconds"]


def seconds(
    value: float | timedelta | None, what: str, *, allow_zero: bool = False
) -> float | None:
    """``value`` in seconds (None stays None); ``ConfigurationError`` naming ``what``
    (``"CachePolicy(ttl=...)"``) when it is negative, or zero without ``allow_zero``."""
    if value is None:
        return None
    found = value.total_seconds() if isinstance(value, timedelta) else float(value)
    if found < 0 or (found == 0 and not allow_zero):
        raise ConfigurationError(
            f"{what} must be {'zero or more' if allow_zero else 'positive'}, got {value!r}"
        )
    return found
