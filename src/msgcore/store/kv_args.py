"""Checks of the application state API's arguments, shared by both backends.

Done before anything is queued: on SQLite a write shares its transaction with others
(jobs, acks), and a value SQLite cannot bind would otherwise surface as a storage error
there, or be stored as its ``str()`` (``None`` as ``'None'``); Redis would turn it into a
different string or refuse it later. One check gives both backends the same answer.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from msgcore.exceptions import ConfigurationError, PayloadError, StorageError
from msgcore.timespans import LONGEST

__all__ = ["MAX_TTL", "key_arg", "mapping_arg", "ttl_arg", "value_arg", "wrong_kind"]

MAX_TTL = LONGEST
"""The longest expiry accepted, in seconds (``ttl=None`` keeps a key for ever)."""


def _encodable(text: str) -> bool:
    try:
        text.encode()
    except UnicodeEncodeError:  # a lone surrogate, e.g. from a bad decode upstream
        return False
    return True


def key_arg(key: Any) -> str:
    if not isinstance(key, str) or not _encodable(key):
        what = "a str with an unpaired surrogate" if isinstance(key, str) else type(key).__name__
        raise PayloadError(
            f"A state key must be a str that UTF-8 can encode, got {what}; nothing was "
            "stored. Build keys with str() or an f-string."
        )
    return key


def value_arg(key: str, value: Any, *, field: str | None = None) -> str:
    """A value as both backends store it: a str; ints and floats as their ``str()``."""
    if isinstance(value, str):
        if _encodable(value):
            return value
        what = "a str with an unpaired surrogate"
    elif isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    else:
        what = type(value).__name__
    where = f"field {field!r} of {key!r}" if field is not None else repr(key)
    raise PayloadError(
        f"The value for {where} must be a str (or an int or float, stored as text), got "
        f"{what}; nothing was stored. Encode it first, e.g. json.dumps() for structures "
        "or .decode() for bytes."
    )


def mapping_arg(key: str, mapping: Any) -> dict[str, str]:
    if not isinstance(mapping, Mapping):
        raise PayloadError(
            f"hset({key!r}, ...) takes a mapping of field to value (a dict), got "
            f"{type(mapping).__name__}; nothing was stored."
        )
    checked: dict[str, str] = {}
    for field, value in mapping.items():
        if not isinstance(field, str) or not _encodable(field):
            raise PayloadError(
                f"The fields of hash {key!r} must be str that UTF-8 can encode, got "
                f"{type(field).__name__}; nothing was stored."
            )
        checked[field] = value_arg(key, value, field=field)
    return checked


def ttl_arg(ttl: Any, *, optional: bool = True) -> float | None:
    """``ttl`` in seconds: a finite number above 0 and at most ``MAX_TTL``, or None
    (no expiry) where ``optional``."""
    if ttl is None and optional:
        return None
    ok = isinstance(ttl, int | float) and not isinstance(ttl, bool)
    if ok and math.isfinite(ttl) and 0 < ttl <= MAX_TTL:
        return float(ttl)
    none = " or None (no expiry)" if optional else ""
    shown = repr(ttl) if ok or ttl is None else type(ttl).__name__
    raise ConfigurationError(
        f"ttl={shown}: an expiry is a number of seconds above 0 and at most 100 years"
        f"{none}; nothing was stored. To remove a key now, delete() it."
    )


def wrong_kind(key: str, *, wants: str) -> StorageError:
    """The error of reading or writing a key as the other kind (a value, or a hash)."""
    if wants == "hash":
        return StorageError(
            f"The key {key!r} holds a value, not a hash: read it with get(), or delete() "
            "it before using it as a hash."
        )
    return StorageError(
        f"The key {key!r} holds a hash, not a value: read it with hgetall(), or set() replaces it."
    )
