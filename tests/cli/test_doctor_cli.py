"""``msgcore doctor`` end to end against SQLite files, Redis and RabbitMQ (subprocesses),
plus the checks a healthy local server cannot show (old versions, eviction policies, an
unwritable file as root) called in-process with the values they read."""

from __future__ import annotations

import json
import os
import platform
import shutil
import sqlite3
import subprocess
from importlib import metadata
from pathlib import Path
from typing import Any

import aiormq
import pytest

from msgcore.cli import doctor
from msgcore.cli.doctor import Check, Status, redis_server_checks, sqlite_file_checks
from msgcore.constants import META_TABLE
from msgcore.store.sqlite import SqliteStore
from tests.cli.test_jobs_cli import msgcore, parallel

Result = subprocess.CompletedProcess[str]


def report(done: Result) -> dict[str, dict[str, Any]]:
    """``--json`` by check name (a name that repeats keeps its first line)."""
    found: dict[str, dict[str, Any]] = {}
    for row in json.loads(done.stdout):
        assert set(row) == {"check", "status", "detail", "fix"}
        assert row["status"] in ("OK", "WARN", "FAIL")
        found.setdefault(row["check"], row)
    return found


def clean(done: Result) -> None:
    assert "Traceback" not in done.stderr + done.stdout
    assert "hunter2" not in done.stderr + done.stdout


# -- SQLite ------------------------------------------------------------------------------------


async def test_sqlite_files(tmp_path: Path) -> None:
    existing = tmp_path / "msgcore.db"
    async with SqliteStore(f"sqlite:///{existing}"):  # what a worker leaves: WAL, schema
        pass
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database, " * 100)
    fresh = tmp_path / "fresh.db"

    ok, human, created_later, no_directory, not_a_database = parallel(
        lambda: msgcore("doctor", "--json", "--url", f"sqlite:///{existing}"),
        lambda: msgcore("doctor", "--url", f"sqlite:///{existing}"),
        lambda: msgcore("doctor", "--json", "--url", f"sqlite:///{fresh}"),
        lambda: msgcore("doctor", "--json", "--url", f"sqlite:///{tmp_path}/no/such/dir/x.db"),
        lambda: msgcore("doctor", "--json", "--url", f"sqlite:///{garbage}"),
    )

    assert ok.returncode == 0, ok.stdout + ok.stderr
    checks = report(ok)
    assert checks["url"]["detail"].startswith("sqlite transport at sqlite:///")
    assert checks["transport"]["status"] == "OK" and " ms" in checks["transport"]["detail"]
    assert checks["transport file"]["status"] == "OK"
    assert checks["transport journal"] == {
        "check": "transport journal",
        "status": "OK",
        "detail": "journal_mode=wal",
        "fix": None,
    }
    assert checks["store"]["status"] == "OK"
    versions = checks["versions"]["detail"]
    assert f"Python {platform.python_version()}" in versions
    assert f"SQLite library {sqlite3.sqlite_version}" in versions
    assert f"faststream {metadata.version('faststream')}" in versions

    # for people: one line per check, its status first
    assert human.returncode == 0
    lines = human.stdout.strip().splitlines()
    assert len(lines) == len(json.loads(ok.stdout))
    assert all(line.split()[0] in ("OK", "WARN", "FAIL") for line in lines)

    # a file that does not exist yet is fine, and doctor does not create it
    assert created_later.returncode == 0, created_later.stdout
    assert "does not exist yet" in report(created_later)["transport file"]["detail"]
    assert not fresh.exists()

    assert no_directory.returncode == 1
    missing = report(no_directory)["transport file"]
    assert missing["status"] == "FAIL"
    assert missing["fix"].startswith(f"mkdir -p {tmp_path}/no/such/dir")

    assert not_a_database.returncode == 1
    unreadable = report(not_a_database)["transport"]
    assert unreadable["status"] == "FAIL" and "cannot be read" in unreadable["detail"]
    for done in (ok, human, created_later, no_directory, not_a_database):
        clean(done)


def test_a_sqlite_url_of_a_bad_form_is_a_failed_check() -> None:
    """It was an ``error:`` line, and with --json nothing on stdout."""
    as_json, human = parallel(
        lambda: msgcore("doctor", "--json", "--url", "sqlite://x.db"),
        lambda: msgcore("doctor", "--store-url", "sqlite://user@/x.db"),
    )
    assert as_json.returncode == 1
    url = report(as_json)["url"]
    assert url["status"] == "FAIL" and "has a host part" in url["detail"]
    assert "versions" in report(as_json)
    assert human.returncode == 1 and human.stdout.startswith("FAIL url ")
    for done in (as_json, human):
        clean(done)
        assert done.stderr == ""


def test_unwritable_file_and_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # In-process with os.access answering as for a user who may read but not write:
    # the machines run the suite as root, which no chmod refuses.
    db = tmp_path / "x.db"
    sqlite3.connect(db).close()
    # what os.access answers a user who may read but not write (root is never refused)
    monkeypatch.setattr(doctor.os, "access", lambda path, mode: not mode & os.W_OK)
    failed = [c for c in sqlite_file_checks("transport", db) if c.status is Status.FAIL]
    assert [c.fix for c in failed] == [
        f"chmod u+rw {db}  (or run as the file's owner)",
        f"chmod u+w {tmp_path}  (or run as its owner)",
    ]
    fresh = sqlite_file_checks("store", tmp_path / "new.db")
    assert [(c.status, c.fix) for c in fresh] == [
        (Status.FAIL, f"chmod u+w {tmp_path}  (or run as its owner, or pick another path)")
    ]


def test_journal_mode_before_and_after_msgcore_opened_the_file(tmp_path: Path) -> None:
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db)
    conn.execute("PRAGMA journal_mode=DELETE")
    conn.execute("CREATE TABLE t (x)")
    conn.commit()
    (journal,) = [c for c in sqlite_file_checks("transport", db) if c.check.endswith("journal")]
    assert journal.status is Status.OK and "switches it to WAL" in journal.detail

    # msgcore's own file, not in WAL: the filesystem refused it
    conn.execute(f"CREATE TABLE {META_TABLE} (key TEXT PRIMARY KEY, value TEXT)")
    conn.commit()
    conn.close()
    (journal,) = [c for c in sqlite_file_checks("transport", db) if c.check.endswith("journal")]
    assert journal.status is Status.WARN and journal.fix == "keep the database on a local disk"


# -- Redis -------------------------------------------------------------------------------------


async def test_redis(redis_url: str, unique: str) -> None:
    from redis.asyncio import Redis

    env = {"MSGCORE_REDIS__STREAM_PREFIX": f"{unique}:"}
    client = Redis.from_url(redis_url)
    try:
        info = await client.info()
        done, unreachable = parallel(
            lambda: msgcore("doctor", "--json", "--url", redis_url, env=env),
            lambda: msgcore("doctor", "--url", "redis://:hunter2@127.0.0.1:1/0"),
        )
        assert not [k async for k in client.scan_iter(match=f"{unique}:*")]  # wrote nothing
    finally:
        await client.aclose()

    assert done.returncode == 0, done.stdout + done.stderr
    checks = report(done)
    assert checks["transport"]["status"] == "OK"
    assert checks["redis server"]["detail"].startswith(f"Redis {info['redis_version']}")
    # this server's own settings decide: WARN exactly when they are risky
    expect_aof = "OK" if int(info["aof_enabled"]) else "WARN"
    assert checks["redis persistence"]["status"] == expect_aof
    expect_policy = "OK" if info["maxmemory_policy"] == "noeviction" else "WARN"
    assert checks["redis eviction"]["status"] == expect_policy
    assert checks["store"]["status"] == "OK"
    assert f"keys {unique}:*" in checks["store"]["detail"]

    assert unreachable.returncode == 1
    clean(unreachable)
    assert "FAIL transport" in unreachable.stdout
    assert "redis://:***@127.0.0.1:1/0" in unreachable.stdout


def test_redis_server_settings_that_need_a_fix() -> None:
    old_and_evicting = {"redis_version": "6.2.14", "aof_enabled": 1, "maxmemory_policy": "lru"}
    by_name = {c.check: c for c in redis_server_checks(old_and_evicting)}
    assert by_name["redis server"].status is Status.FAIL
    assert by_name["redis persistence"].status is Status.OK
    evicting = by_name["redis eviction"]
    assert evicting.status is Status.WARN and "noeviction" in (evicting.fix or "")

    volatile = {"redis_version": "7.2.4", "aof_enabled": 0, "maxmemory_policy": "noeviction"}
    by_name = {c.check: c for c in redis_server_checks(volatile)}
    assert by_name["redis server"].status is Status.OK
    persistence = by_name["redis persistence"]
    assert persistence.status is Status.WARN
    assert persistence.fix == "CONFIG SET appendonly yes, and appendonly yes in redis.conf"


# -- RabbitMQ ----------------------------------------------------------------------------------


def _doctor_queues() -> list[str] | None:
    """Queues the quorum probe may have left (None: rabbitmqctl is not here to ask)."""
    if shutil.which("rabbitmqctl") is None:
        return None
    listed = subprocess.run(
        ["rabbitmqctl", "list_queues", "name", "--quiet", "--no-table-headers"],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    if listed.returncode != 0:
        return None
    return [q for q in listed.stdout.split() if q.startswith("msgcore.doctor.")]


def test_rabbit(rabbit_url: str, tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path / 'store.db'}"
    bad_password = rabbit_url.replace("guest:guest@", "guest:hunter2@")
    done, default_store, refused, bad_url = parallel(
        lambda: msgcore("doctor", "--json", "--url", rabbit_url, "--store-url", store),
        # in a directory of its own: the default store is relative to it
        lambda: msgcore("doctor", "--json", "--url", rabbit_url, cwd=tmp_path),
        lambda: msgcore("doctor", "--url", bad_password, cwd=tmp_path),
        lambda: msgcore("doctor", "--json", "--url", "mysql://root:hunter2@db/x"),
    )

    assert done.returncode == 0, done.stdout + done.stderr
    checks = report(done)
    assert checks["transport"]["status"] == "OK"
    server = checks["rabbitmq server"]
    assert server["status"] == "OK" and server["detail"].startswith("RabbitMQ 3.")
    assert checks["rabbitmq quorum"] == {
        "check": "rabbitmq quorum",
        "status": "OK",
        "detail": "declared and deleted a quorum queue",
        "fix": None,
    }
    assert checks["store file"]["status"] == "OK"  # does not exist yet
    assert not (tmp_path / "store.db").exists()
    assert _doctor_queues() in (None, [])

    # the default store is a local file: fine on one host, a WARN with the fix
    assert default_store.returncode == 0, default_store.stdout + default_store.stderr
    warned = [r for r in json.loads(default_store.stdout) if r["status"] == "WARN"]
    assert [r["check"] for r in warned] == ["store"]
    assert "MSGCORE_STORE_URL=redis://" in warned[0]["fix"]
    assert not list(tmp_path.glob("msgcore-store.db*"))

    assert refused.returncode == 1
    clean(refused)
    assert "FAIL transport" in refused.stdout and "ACCESS_REFUSED" in refused.stdout

    assert bad_url.returncode == 1
    clean(bad_url)
    assert report(bad_url)["url"]["status"] == "FAIL"


class _RefusingChannel:
    def __init__(self, deleted: list[str]) -> None:
        self.deleted = deleted

    async def declare_queue(self, name: str, **kwargs: Any) -> None:
        raise aiormq.exceptions.ChannelPreconditionFailed("PRECONDITION_FAILED - invalid arg")

    async def queue_delete(self, name: str) -> None:
        self.deleted.append(name)

    async def close(self) -> None:
        pass


class _OldServer:
    def __init__(self) -> None:
        self.deleted: list[str] = []

    async def channel(self) -> _RefusingChannel:
        return _RefusingChannel(self.deleted)


async def test_a_server_without_quorum_queues_is_a_warning() -> None:
    server = _OldServer()
    check: Check = await doctor._quorum_check(server)
    assert check.status is Status.WARN
    assert "PRECONDITION_FAILED" in check.detail and "3.8" in (check.fix or "")
    assert len(server.deleted) == 1 and server.deleted[0].startswith("msgcore.doctor.")
