"""``CachePolicy`` arguments and cache keys from key functions, checked before any
message is sent (the contract suite runs the cache itself on every transport)."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from msgcore import CacheKeyError, CachePolicy, Client, ConfigurationError, Settings
from msgcore.cache.keys import cache_key, payload_value


class _Opaque:
    pass


def no_json_form(page: Any) -> Any:
    return _Opaque()


@pytest.mark.parametrize(
    "kwargs",
    [
        {"ttl": 0},
        {"ttl": math.nan},
        {"ttl": math.inf},  # broke Redis' millisecond TTLs: jobs stayed running
        {"ttl": 1e20},
        {"ttl": "x"},
        {"lease": math.inf},
        {"lease": True},
        {"max_entries": 0},
        {"max_entries": "3"},
        {"max_entries": 1.5},
        {"version": None},  # was stored as the text "None"
        {"version": ""},
    ],
)
def test_bad_policies_are_refused(kwargs: dict[str, Any]) -> None:
    with pytest.raises(ConfigurationError):
        CachePolicy(**kwargs)


def test_a_key_function_without_a_json_form_is_a_cache_key_error() -> None:
    """Its str() held a memory address: the client and the worker computed different
    keys, and the same payload never hit."""
    with pytest.raises(CacheKeyError, match="no_json_form"):
        cache_key("pages", "1", payload_value({"doc": "d"}), no_json_form)


async def test_client_cache_and_lock_listings_check_their_arguments(tmp_path: Path) -> None:
    async with Client(settings=Settings(url=f"sqlite:///{tmp_path / 'c.db'}")) as client:
        for bad in (5, b"x", ""):
            with pytest.raises(ConfigurationError, match="channel name or None"):
                await client.cache_stats(bad)  # type: ignore[arg-type]
            with pytest.raises(ConfigurationError, match="channel name or None"):
                await client.cache_clear(bad)  # type: ignore[arg-type]
        for bad in (None, 5, b"x"):
            with pytest.raises(ConfigurationError, match="takes a str"):
                await client.locks(bad)  # type: ignore[arg-type]
        assert await client.cache_stats() == [] and await client.locks() == []


def test_a_key_function_returning_a_set_keys_alike_in_every_process() -> None:
    """A set's order follows the process's hash seed: the client and the worker keyed
    the same payload apart (no cache hit, no lock exclusion)."""
    code = (
        "from msgcore import LockPolicy, Settings\n"
        "from msgcore.cache.keys import body_value, cache_key, payload_value\n"
        "def tags(p): return {'tags': set(p['tags']), 'nested': [frozenset(p['tags'])]}\n"
        "p = {'tags': ['delta', 'alpha', 'charlie', 'bravo', 'echo']}\n"
        "print(cache_key('c', '1', payload_value(p), tags))\n"
        "lock = LockPolicy(tags).resolve('c', Settings(url='sqlite:///x.db'))\n"
        'print(lock.lock_key(body_value(b\'{"tags": ["z", "y", "x", "w"]}\', None)))\n'
    )
    outputs = {
        subprocess.run(
            [sys.executable, "-c", code],
            env={**os.environ, "PYTHONHASHSEED": str(seed)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        for seed in range(1, 6)
    }
    assert len(outputs) == 1, outputs
