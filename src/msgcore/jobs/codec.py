"""How a handler's return value is kept in a job record and given back to callers."""

from __future__ import annotations

from typing import Any, TypeVar

import pydantic_core
from faststream.response import Response
from pydantic import TypeAdapter

__all__ = ["decode_result", "encode_result"]

T = TypeVar("T")


def encode_result(value: Any) -> bytes:
    """The handler's return value as JSON, the way FastStream would publish it."""
    if isinstance(value, Response):
        value = value.body
    if isinstance(value, bytes | bytearray):
        # FastStream publishes bytes as they are; JSON keeps them as text
        value = bytes(value).decode("utf-8", errors="replace")
    return pydantic_core.to_json(value, fallback=str)


def decode_result(raw: bytes | None, as_type: type[T] | None = None) -> Any:
    """A stored result as plain JSON data, or validated into ``as_type``."""
    if raw is None:
        return None
    if as_type is None:
        return pydantic_core.from_json(raw)
    return TypeAdapter(as_type).validate_json(raw)
