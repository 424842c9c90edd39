"""Checks of what a caller passes beside a payload: headers, delay, priority, timeout.

One check for every transport, before anything is stored or sent. Each transport took
these its own way: a text ``priority`` stored on SQLite headed every claim of its
channel and blocked it; a NaN ``delay`` was a storage error on SQLite, "now" on Redis
and a bare ``ValueError`` on RabbitMQ; a caller's ``x-msgcore-job-id`` header made a
request answer with another job's result.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from msgcore.exceptions import ConfigurationError, PayloadError
from msgcore.timespans import LONGEST

__all__ = [
    "RESERVED_HEADERS",
    "check_delay",
    "check_headers",
    "check_not_before",
    "check_priority",
    "check_publish",
    "check_request",
    "check_timeout",
]

RESERVED_HEADERS = frozenset({"correlation_id", "reply_to", "content-type"})
"""Header names a transport's envelope uses (Redis keeps them beside the caller's
headers); with every name starting ``x-msgcore-`` they are msgcore's own."""
_RESERVED_PREFIX = "x-msgcore-"
_INT64 = 2**63


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def check_headers(headers: Any, channel: str) -> None:
    """``PayloadError`` unless ``headers`` maps non-empty str names, none of them
    msgcore's own, to values every transport carries alike (str, int, finite float,
    bool, None)."""
    if headers is None:
        return
    if not isinstance(headers, Mapping):
        raise PayloadError(
            f"headers for channel {channel!r} must be a dict of name to value, got "
            f"{type(headers).__name__}; nothing was sent."
        )
    for name, value in headers.items():
        if not isinstance(name, str) or not name:
            raise PayloadError(
                f"Header names for channel {channel!r} must be non-empty str, got {name!r}; "
                "nothing was sent."
            )
        if name in RESERVED_HEADERS or name.lower().startswith(_RESERVED_PREFIX):
            raise PayloadError(
                f"Header {name!r} is msgcore's own (it carries job ids, attempts, delays and "
                "replies); nothing was sent. Rename the header, or pass correlation_id= as "
                "an argument."
            )
        if value is None or isinstance(value, bool | int):
            continue
        what = type(value).__name__
        if isinstance(value, str):
            try:
                value.encode()
            except UnicodeEncodeError:
                what = "a str with an unpaired surrogate"
            else:
                continue
        elif isinstance(value, float):
            if math.isfinite(value):
                continue
            what = repr(value)
        raise PayloadError(
            f"Header {name!r} for channel {channel!r} must be a str, int, finite float, "
            f"bool or None (what every transport carries alike), got {what}; nothing was "
            "sent. Encode it first, e.g. json.dumps() for structures."
        )


def check_delay(delay: Any) -> None:
    """A delay is seconds (negative: now), finite and at most ``LONGEST``."""
    if delay is None:
        return
    if not _number(delay) or math.isnan(delay) or delay > LONGEST or delay == -math.inf:
        raise ConfigurationError(
            f"delay={delay!r}: a delay is a number of seconds, at most 100 years (0 or less: "
            "now); nothing was sent."
        )


def check_not_before(not_before: Any) -> None:
    if not_before is not None and not isinstance(not_before, datetime):
        raise ConfigurationError(
            f"not_before={not_before!r}: pass a datetime (or delay= in seconds); nothing was sent."
        )


def check_priority(priority: Any) -> None:
    """A priority is an int that a 64-bit column holds (the transports that have none
    refuse any other than 0 themselves)."""
    if priority is None:
        return
    if (
        not isinstance(priority, int)
        or isinstance(priority, bool)
        or not (-_INT64 <= priority < _INT64)
    ):
        raise ConfigurationError(
            f"priority={priority!r}: a priority is an int (higher first; 0 is the default); "
            "nothing was sent."
        )


def check_timeout(timeout: Any) -> None:
    """A request's timeout: seconds above 0, at most ``LONGEST``; None: the default."""
    if timeout is None:
        return
    if not _number(timeout) or math.isnan(timeout) or not 0 < timeout <= LONGEST:
        raise ConfigurationError(
            f"timeout={timeout!r}: a timeout is a number of seconds above 0 (None: "
            "MSGCORE_REQUEST_TIMEOUT); nothing was sent."
        )


def check_publish(
    channel: str,
    headers: Any = None,
    delay: Any = None,
    priority: Any = None,
    not_before: Any = None,
) -> None:
    """Everything a publish or submit takes beside its payload (the common case, none
    of it given, costs one comparison)."""
    if headers is not None or delay is not None or priority is not None:
        check_headers(headers, channel)
        check_delay(delay)
        check_priority(priority)
    check_not_before(not_before)


def check_request(channel: str, headers: Any = None, timeout: Any = None) -> None:
    check_headers(headers, channel)
    check_timeout(timeout)
