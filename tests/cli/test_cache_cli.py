"""``msgcore cache stats|clear`` end to end: a subprocess against a SQLite file and Redis."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from msgcore.store import Store
from msgcore.store.cache import CacheFill
from tests.cli.stores import cli_store


def msgcore(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    return subprocess.run(
        [sys.executable, "-m", "msgcore.cli", *args],
        check=False,
        env={**clean, "COLUMNS": "200", **(env or {})},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture(params=["sqlite", "redis"])
async def filled(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[tuple[dict[str, str], Store]]:
    """A store with two cached channels, and the environment that points at it."""
    async with cli_store(request, tmp_path, unique) as (store, env):
        policy = json.dumps({"version": "3", "ttl": None, "max_entries": None, "lease": 30})
        await store.cache_register("render", policy)
        for key, channel, result in (("a", "render", b'"x"'), ("b", "render", b'"yy"')):
            fill = CacheFill(key=key, channel=channel, ttl=None, max_entries=None)
            await store.cache_fill(fill, result, job_id=None, now=time.time())
        thumbs = CacheFill(key="c", channel="thumbs", ttl=None, max_entries=None)
        await store.cache_fill(thumbs, b"[1,2,3]", job_id=None, now=time.time())
        await store.cache_lookup("a", now=time.time())
        yield env, store


def by_channel(output: str) -> dict[str, dict[str, Any]]:
    return {row["channel"]: row for row in json.loads(output)}


async def test_stats_json_table_and_clear(filled: tuple[dict[str, str], Store]) -> None:
    env, store = filled
    done = msgcore("cache", "stats", "--json", env=env)
    assert done.returncode == 0, done.stderr
    rows = by_channel(done.stdout)
    assert set(rows) == {"render", "thumbs"}
    render = rows["render"]
    assert (render["hits"], render["misses"], render["entries"], render["bytes"]) == (1, 2, 2, 7)
    assert render["version"] == "3"
    assert render["hit_ratio"] == pytest.approx(1 / 3, abs=1e-3)

    one = msgcore("cache", "stats", "--channel", "thumbs", "--json", env=env)
    assert [r["channel"] for r in json.loads(one.stdout)] == ["thumbs"]

    table = msgcore("cache", "stats", env=env)
    assert table.returncode == 0, table.stderr
    assert "render" in table.stdout and "thumbs" in table.stdout
    assert "33%" in table.stdout  # the hit ratio column

    cleared = msgcore("cache", "clear", "--channel", "render", "--json", env=env)
    assert cleared.returncode == 0, cleared.stderr
    assert json.loads(cleared.stdout) == {"deleted": 2, "channel": "render"}
    assert await store.cache_lookup("a", now=time.time(), count=False) is None
    assert await store.cache_lookup("c", now=time.time(), count=False) is not None

    everything = msgcore("cache", "clear", env=env)
    assert everything.returncode == 0
    assert "Deleted 1 cached result(s)." in everything.stdout
    after = by_channel(msgcore("cache", "stats", "--json", env=env).stdout)
    assert {c: r["entries"] for c, r in after.items()} == {"render": 0, "thumbs": 0}


def test_unreachable_store_is_one_line_without_the_password() -> None:
    done = msgcore("cache", "stats", "--store-url", "redis://:hunter2@127.0.0.1:1/0")
    assert done.returncode == 3
    assert "hunter2" not in done.stderr + done.stdout
    assert "Traceback" not in done.stderr
    assert done.stderr.startswith("error: Cannot reach the Redis job store")
    assert len(done.stderr.strip().splitlines()) <= 3  # one message, wrapped at most


def test_bad_url_is_a_usage_error() -> None:
    done = msgcore("cache", "clear", "--url", "mysql://root:pw@db/x")
    assert done.returncode == 1
    assert "pw@" not in done.stderr
    assert "Cannot pick a transport" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_store_file_that_does_not_exist_is_named_and_not_created(tmp_path: Path) -> None:
    """A mistyped SQLite URL must not read as an empty store, nor leave a new file."""
    typo = tmp_path / "typo.db"
    env = {"MSGCORE_URL": f"sqlite:///{typo}"}
    for args in (
        ("cache", "stats"),
        ("cache", "stats", "--json"),
        ("cache", "clear", "--json"),
        ("locks",),
        ("locks", "--json"),
    ):
        done = msgcore(*args, env=env)
        assert done.returncode == 0, (args, done.stderr)  # nothing to show is not an error
        assert done.stderr.startswith("note: "), (args, done.stderr)
        assert f"there is no store file at {typo}" in done.stderr
        if "--json" in args:
            assert json.loads(done.stdout) in ([], {"deleted": 0, "channel": None})
        else:
            assert done.stdout == ""
    assert not typo.exists()
