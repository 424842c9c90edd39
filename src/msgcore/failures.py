"""How every transport classifies and records a handler's failure."""

from __future__ import annotations

import json

from pydantic import ValidationError

from msgcore.exceptions import LockKeyError

__all__ = ["INVALID_PAYLOAD", "describe_error"]

INVALID_PAYLOAD = (ValidationError, json.JSONDecodeError, UnicodeDecodeError, LockKeyError)
"""Errors that no retry can fix: the message goes to the dead letters at once."""


def describe_error(exc: BaseException | None) -> str | None:
    """``module.Type: message``, the form dead letters and retry logs carry."""
    if exc is None:
        return None
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"
