"""The SQLite headers column: the C fast path writes and reads exactly what ``json`` does."""

from __future__ import annotations

import json
from typing import Any

import pytest

from msgcore.sqlite.client import headers as column
from msgcore.sqlite.client.headers import decode_headers, encode_headers

REFERENCE = json.JSONEncoder(separators=(",", ":"), default=str)

CASES: list[dict[str, Any]] = [
    {"traceparent": "00-0000000000000000000000000000abcd-00000000000000ef-01"},
    {"msgcore-job-id": "order-42", "attempt": 3, "ratio": 0.5, "none": None, "flag": True},
    {"unicode": "é ✓ \u2028", "quote": 'a"b\\c', "nested": {"list": [1, [2, {"x": []}]]}},
    {"bytes": b"raw", "inf": float("inf")},
]


@pytest.mark.parametrize("headers", CASES)
def test_same_text_and_values_as_json(headers: dict[str, Any]) -> None:
    text = encode_headers(headers)
    assert text == REFERENCE.encode(headers)
    assert decode_headers(text) == json.loads(text)


def test_empty_and_unusual_text() -> None:
    assert encode_headers(None) is None and encode_headers({}) is None
    assert decode_headers(None) == {} and decode_headers("") == {}
    # text the encoder never writes still reads as json would (whitespace around it)
    assert decode_headers(' {"a": 1} ') == {"a": 1}
    with pytest.raises(json.JSONDecodeError):
        decode_headers('{"a": ')


def test_the_fast_path_is_taken_on_cpython() -> None:
    """The point of the module: on CPython both C accelerators are there."""
    assert column._c_encode is not None and column._c_scan is not None


def test_without_the_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(column, "_c_encode", None)
    monkeypatch.setattr(column, "_c_scan", None)
    for headers in CASES:
        text = encode_headers(headers)
        assert text == REFERENCE.encode(headers)
        assert decode_headers(text) == json.loads(text)  # type: ignore[arg-type]
