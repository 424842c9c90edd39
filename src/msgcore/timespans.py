"""Durations as policies take them: seconds or a ``timedelta``."""

from __future__ import annotations

import math
from datetime import timedelta
from typing import Any

from msgcore.exceptions import ConfigurationError

__all__ = ["LONGEST", "seconds"]

LONGEST = 100 * 365.25 * 86400.0
"""The longest duration a lease, TTL or expiry may have (about 100 years). Redis
refuses numbers of milliseconds far beyond it, and SQLite would store them: one limit
keeps both transports alike. ``None`` means "no expiry" where one is optional."""


def seconds(
    value: Any, what: str, *, allow_zero: bool = False, allow_forever: bool = False
) -> float | None:
    """``value`` (a number of seconds or a ``timedelta``) in seconds; None stays None.

    ``ConfigurationError`` naming ``what`` (``"CachePolicy(ttl=...)"``) when it is not a
    number, NaN, negative, zero without ``allow_zero``, or beyond ``LONGEST``
    (``math.inf`` is allowed with ``allow_forever``: a wait with no end).
    """
    if value is None:
        return None
    if isinstance(value, timedelta):
        found = value.total_seconds()
    elif isinstance(value, int | float) and not isinstance(value, bool):
        found = float(value)
    else:
        raise ConfigurationError(
            f"{what} takes a number of seconds or a timedelta, got {type(value).__name__}"
        )
    if math.isnan(found) or found < 0 or (found == 0 and not allow_zero):
        raise ConfigurationError(
            f"{what} must be {'zero or more' if allow_zero else 'positive'}, got {value!r}"
        )
    if found > LONGEST and not (allow_forever and math.isinf(found)):
        forever = "; math.inf waits with no end" if allow_forever else ""
        raise ConfigurationError(
            f"{what} must be at most 100 years (in seconds), got {value!r}{forever}"
        )
    return found
