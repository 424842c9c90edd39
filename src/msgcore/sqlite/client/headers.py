"""Message headers to and from their JSON column.

Every traced or job-tracked message has headers, so this runs twice per message:
``json.JSONEncoder.encode`` builds a C encoder on each call and ``json.loads`` goes
through the decoder's Python layers, together ~5 µs per message on the benchmark VM.
The C encoder and scanner made once do the same work in about half of that (the
``json`` module's own fast paths, used directly; the pure-Python ones where the C
accelerator is missing).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from json import encoder as _encoder
from json import scanner as _scanner
from typing import Any, Final

__all__ = ["decode_headers", "encode_headers"]

_FALLBACK_ENCODER: Final = json.JSONEncoder(separators=(",", ":"), default=str)

# the C accelerators are not in typeshed: looked up, None where CPython lacks them
_make_encoder: Any = getattr(_encoder, "c_make_encoder", None)
_quote: Any = getattr(_encoder, "c_encode_basestring_ascii", None)
_make_scanner: Any = getattr(_scanner, "c_make_scanner", None)

# markers None: no circular-reference check (a shared markers dict would keep stale
# ids after a failed encode); headers are flat, and a cycle still fails (RecursionError)
_c_encode: Callable[[Any, int], tuple[str, ...]] | None = (
    _make_encoder(None, str, _quote, None, ":", ",", False, False, True)
    if _make_encoder is not None and _quote is not None
    else None
)
_c_scan: Callable[[str, int], tuple[Any, int]] | None = (
    _make_scanner(json.JSONDecoder()) if _make_scanner is not None else None
)


def encode_headers(headers: dict[str, Any] | None) -> str | None:
    """``headers`` as compact ASCII JSON (as ``json.dumps(..., separators=(",", ":"),
    default=str)``), or None for none."""
    if not headers:
        return None
    if _c_encode is None or type(headers) is not dict:
        return _FALLBACK_ENCODER.encode(headers)
    return "".join(_c_encode(headers, 0))


def decode_headers(text: str | None) -> dict[str, Any]:
    """The headers of a stored message (an empty dict for none)."""
    if not text:
        return {}
    if _c_scan is not None:
        try:
            found, end = _c_scan(text, 0)
        except (StopIteration, ValueError):
            found, end = None, -1
        if end == len(text) and type(found) is dict:
            return found
    decoded: dict[str, Any] = json.loads(text)  # anything unusual: json's own handling
    return decoded
