"""Cache keys: a stable hash of the channel, the handler's version and the payload.

The client keys the Python object it is about to send; the worker keys the message
body it received. Both reduce the payload to the same canonical JSON first, so field
order, whitespace, ``\\u`` escapes, ``1`` vs ``1.0`` and pydantic models vs dicts do
not change the key:

- JSON (a dict, list, number, model, dataclass, or bytes that parse as JSON) is keyed
  by its canonical text (sorted keys, no whitespace, integral floats as integers);
- ``str`` payloads (sent as ``text/plain``) by their text;
- other bytes by their bytes.

A policy's ``key`` function receives the payload as JSON data (what ``json.loads`` of
the body gives) and returns what identifies the work; that is keyed the same way.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable
from typing import Any

import pydantic_core

from msgcore.exceptions import CacheKeyError

__all__ = ["body_value", "cache_key", "canonical_json", "key_data", "payload_value"]

_MAX_EXACT_INT = 2**53


def _normal(value: Any) -> Any:
    """JSON data with integral floats as ints (JSON has one number type)."""
    if isinstance(value, float):
        if math.isfinite(value) and value.is_integer() and abs(value) < _MAX_EXACT_INT:
            return int(value)
        return value
    if isinstance(value, dict):
        return {str(k): _normal(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_normal(v) for v in value]
    return value


def key_data(value: Any) -> Any:
    """What a key function returned, as JSON data the same in every process.

    No ``str()`` fallback: an object without a JSON form gives its address, a key that
    differs per process and per call (it raises instead). Sets are sorted: their order
    follows the process's hash seed, so a set of strings keyed differently in the client
    and the worker."""
    return pydantic_core.to_jsonable_python(_sets_sorted(value))


def _sets_sorted(value: Any) -> Any:
    if isinstance(value, set | frozenset):
        items = [_sets_sorted(v) for v in value]
        return sorted(items, key=lambda v: canonical_json(pydantic_core.to_jsonable_python(v)))
    if isinstance(value, dict):
        return {k: _sets_sorted(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_sets_sorted(v) for v in value]
    return value


def canonical_json(value: Any) -> str:
    return json.dumps(_normal(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _bytes_value(raw: bytes) -> tuple[str, Any]:
    try:
        return "json", json.loads(raw)
    except ValueError:
        return "bytes", raw.hex()


def payload_value(payload: Any) -> tuple[str, Any]:
    """``(kind, data)`` of a payload as ``Client.submit`` receives it."""
    if isinstance(payload, bytes | bytearray | memoryview):
        return _bytes_value(bytes(payload))
    if isinstance(payload, str):
        return "text", payload
    return "json", pydantic_core.to_jsonable_python(payload, fallback=str)


def body_value(body: bytes, content_type: str | None) -> tuple[str, Any]:
    """``(kind, data)`` of a message body as a worker receives it."""
    if content_type and content_type.startswith("text/"):
        return "text", body.decode("utf-8", errors="replace")
    return _bytes_value(body)


def cache_key(
    channel: str,
    version: str,
    value: tuple[str, Any],
    key: Callable[[Any], Any] | None = None,
) -> str:
    """The hex SHA-256 key of ``value`` (from ``payload_value``/``body_value``)."""
    kind, data = value
    if key is not None:
        try:
            kind, data = "key", key_data(key(data))
        except Exception as exc:
            name = getattr(key, "__qualname__", repr(key))
            raise CacheKeyError(
                f"The cache key function {name} of channel {channel!r} failed on this "
                f"payload ({type(exc).__name__}: {exc}); fix the function or the payload, "
                "or submit with cache=False."
            ) from exc
    text = canonical_json([channel, version, kind, data])
    return hashlib.sha256(text.encode()).hexdigest()
