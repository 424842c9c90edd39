"""``msgcore doctor``: is this environment ready to run msgcore, and if not, what to fix.

Checks, each one line ``OK``, ``WARN`` or ``FAIL`` with the fix:

- the URLs parse, and which transport they pick;
- the transport answers (latency), and its server: the Redis version (``INFO``),
  persistence (``appendonly``) and eviction policy (``maxmemory-policy``); the RabbitMQ
  version (the connection's server properties) and whether a quorum queue can be
  declared; the SQLite file and its directory (writable, or creatable), ``journal_mode``;
- the job store answers (latency), with the same file or server checks if it lives
  elsewhere than the transport;
- the versions of msgcore, FastStream, Python and the SQLite library.

Nothing is created: a SQLite file that does not exist yet is reported as created at
first start (if its directory allows), the probe quorum queue is deleted right away.

Exit codes: 0 no FAIL (WARNs allowed), 1 at least one FAIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import os
import platform
import sqlite3
import time
import uuid
from dataclasses import asdict, dataclass
from importlib import metadata
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import quote

import typer
from rich.markup import escape

from msgcore.cli.common import console, print_json, quiet_libraries, run
from msgcore.cli.options import StoreUrl, Url
from msgcore.constants import META_TABLE, SCHEMA_VERSION
from msgcore.exceptions import MsgcoreError
from msgcore.settings import Settings, transport_of
from msgcore.store import open_store, store_url_for
from msgcore.urls import parse_sqlite_url, redact_url

__all__ = ["Check", "Status", "diagnose", "register", "sqlite_file_checks"]

CHECK_TIMEOUT = 5.0
"""Seconds one server may take to answer before its check fails."""
MIN_REDIS = (7, 0)
"""docs/redis.md: msgcore's scripts need Redis 7.0 or newer."""
MIN_RABBIT = (3, 10)
"""docs/rabbit.md: quorum queues with message TTL and at-least-once dead-lettering."""
MIN_SQLITE = (3, 35, 0)
"""The store's statements use ``RETURNING`` (SQLite 3.35)."""
PROBE_JOB = "msgcore-doctor-probe"
"""A job id no one submits: reading it measures a store round trip."""


class Status(enum.StrEnum):
    OK = "OK"
    WARN = "WARN"
    FAIL = "FAIL"


@dataclass(frozen=True)
class Check:
    """One line of the report."""

    check: str
    status: Status
    detail: str
    fix: str | None = None


def _ok(check: str, detail: str) -> Check:
    return Check(check, Status.OK, detail)


def _ms(started: float) -> str:
    return f"{(time.perf_counter() - started) * 1000:.1f} ms"


def _version(text: str) -> tuple[int, ...]:
    parts = []
    for piece in text.split("."):
        digits = "".join(c for c in piece if c.isdigit())
        if not digits:
            break
        parts.append(int(digits))
    return tuple(parts)


def _failure(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and not str(exc):
        return f"no answer within {CHECK_TIMEOUT:g}s"
    return redact_url(f"{type(exc).__name__}: {exc}")


# -- settings and versions -------------------------------------------------------------------


def _settings(url: str | None, store_url: str | None) -> Settings | Check:
    values: dict[str, Any] = {}
    if url is not None:
        values["url"] = url
    if store_url is not None:
        values["store_url"] = store_url
    fix = (
        "set MSGCORE_URL (or --url) to sqlite:///path.db, redis://host:6379/0 or "
        "amqp://user:password@host:5672/"
    )
    try:
        config = Settings(**values)
        # a SQLite URL's form is checked only when it is opened: a bad one is a FAIL here,
        # not an error that ends the report
        for checked in (config.url, store_url_for(config)):
            if transport_of(checked) == "sqlite":
                parse_sqlite_url(checked)
        return config
    except MsgcoreError as exc:
        return Check("url", Status.FAIL, redact_url(str(exc)), fix)
    except ValueError as exc:  # pydantic: values are hidden from the message
        first = redact_url(str(exc)).splitlines()[0]
        return Check("url", Status.FAIL, f"invalid MSGCORE_* setting: {first}", fix)


def _where(config: Settings) -> Check:
    store = store_url_for(config)
    if config.store_url:
        beside = f"job store {redact_url(store)}"
    elif config.transport == "rabbit":
        beside = f"job store {store} (the default for RabbitMQ)"
    else:
        beside = "job store beside the transport"
    return _ok("url", f"{config.transport} transport at {config.safe_url}; {beside}")


def _distribution(name: str) -> str:
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:  # run from a source tree, not installed
        return "?"


def _versions() -> Check:
    import msgcore

    detail = (
        f"msgcore {msgcore.__version__}, faststream {_distribution('faststream')}, "
        f"Python {platform.python_version()}, SQLite library {sqlite3.sqlite_version}"
    )
    if sqlite3.sqlite_version_info < MIN_SQLITE:
        need = ".".join(map(str, MIN_SQLITE))
        return Check(
            "versions",
            Status.FAIL,
            f"{detail}: the job store needs SQLite {need} or newer",
            "use a Python built with a newer SQLite (python.org builds, pyenv, or distro "
            "packages of the last years)",
        )
    return _ok("versions", detail)


# -- SQLite ------------------------------------------------------------------------------------


def _writable(path: Path) -> bool:
    return os.access(path, os.W_OK)


def sqlite_file_checks(role: str, path: Path) -> list[Check]:
    """``role`` (transport or store) in a SQLite file: the file, its directory, the
    journal mode, and a read's latency. Opens it read-only: creates nothing."""
    directory = path.resolve().parent
    if not directory.is_dir():
        return [
            Check(
                f"{role} file",
                Status.FAIL,
                f"{path}: its directory {directory} does not exist",
                f"mkdir -p {directory}  (or fix the path in the URL)",
            )
        ]
    if not path.exists():
        if not _writable(directory):
            return [
                Check(
                    f"{role} file",
                    Status.FAIL,
                    f"{path} does not exist and its directory {directory} is not writable: "
                    "it cannot be created",
                    f"chmod u+w {directory}  (or run as its owner, or pick another path)",
                )
            ]
        return [_ok(f"{role} file", f"{path} does not exist yet: created at first start")]
    if not path.is_file():
        return [
            Check(
                f"{role} file",
                Status.FAIL,
                f"{path} is not a file",
                "point the URL at a database file: sqlite:///path/to/msgcore.db",
            )
        ]
    checks: list[Check] = []
    problems: list[Check] = []
    if not os.access(path, os.R_OK | os.W_OK):
        problems.append(
            Check(
                f"{role} file",
                Status.FAIL,
                f"{path} is not writable by this user (uid {os.getuid()})"
                if hasattr(os, "getuid")
                else f"{path} is not writable by this user",
                f"chmod u+rw {path}  (or run as the file's owner)",
            )
        )
    if not _writable(directory):
        # WAL mode keeps NAME-wal and NAME-shm beside the file, created on open
        problems.append(
            Check(
                f"{role} file",
                Status.FAIL,
                f"its directory {directory} is not writable: SQLite creates "
                f"{path.name}-wal and {path.name}-shm there",
                f"chmod u+w {directory}  (or run as its owner)",
            )
        )
    checks.extend(problems)
    if not problems:
        checks.append(_ok(f"{role} file", f"{path} and its directory are writable"))
    started = time.perf_counter()
    try:
        conn = sqlite3.connect(f"file:{quote(str(path))}?mode=ro", uri=True, timeout=CHECK_TIMEOUT)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
            latency = _ms(started)
            mode = str(conn.execute("PRAGMA journal_mode").fetchone()[0]).lower()
            has_meta = conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (META_TABLE,)
            ).fetchone()
            schema = None
            if has_meta:
                row = conn.execute(
                    f"SELECT value FROM {META_TABLE} WHERE key = 'schema_version'"
                ).fetchone()
                schema = int(row[0]) if row else None
        finally:
            conn.close()
    except (sqlite3.Error, ValueError) as exc:
        checks.append(
            Check(
                role,
                Status.FAIL,
                f"{path} cannot be read as a SQLite database ({type(exc).__name__}: {exc})",
                "point the URL at msgcore's database file (or move this file away)",
            )
        )
        return checks
    checks.append(_ok(role, f"{path} answered in {latency}"))
    if schema is not None and schema > SCHEMA_VERSION:
        checks.append(
            Check(
                f"{role} schema",
                Status.FAIL,
                f"written by a newer msgcore (schema {schema}; this one reads {SCHEMA_VERSION})",
                "upgrade msgcore on this host",
            )
        )
    if mode == "wal":
        checks.append(_ok(f"{role} journal", "journal_mode=wal"))
    elif has_meta:
        # msgcore opened it before and asked for WAL: the filesystem said no
        checks.append(
            Check(
                f"{role} journal",
                Status.WARN,
                f"journal_mode={mode} although msgcore asked for WAL: the filesystem does not "
                "support it (network filesystem?); writers block readers",
                "keep the database on a local disk",
            )
        )
    else:
        checks.append(
            _ok(f"{role} journal", f"journal_mode={mode}: msgcore switches it to WAL on open")
        )
    return checks


def _sqlite_path(url: str) -> Path:
    # shown absolute: a relative URL resolves against whatever directory a process runs in
    return Path(parse_sqlite_url(url).path).absolute()


def _same_file(a: Path, b: Path) -> bool:
    return a.resolve() == b.resolve()


# -- Redis -------------------------------------------------------------------------------------


async def redis_checks(role: str, url: str) -> list[Check]:
    """The Redis server at ``url``: latency, version, persistence, eviction policy."""
    from redis.asyncio import Redis

    safe = redact_url(url)
    try:
        client = Redis.from_url(
            url, socket_connect_timeout=CHECK_TIMEOUT, socket_timeout=CHECK_TIMEOUT
        )
    except ValueError as exc:
        return [
            Check(
                role,
                Status.FAIL,
                f"{safe} is not a usable Redis URL: {_failure(exc)}",
                "use redis://[:password@]host:6379/0",
            )
        ]
    try:
        try:
            async with asyncio.timeout(CHECK_TIMEOUT * 2):
                started = time.perf_counter()
                await client.ping()
                latency = _ms(started)
        except Exception as exc:  # redis-py's errors and OSErrors: all "not reachable"
            return [
                Check(
                    role,
                    Status.FAIL,
                    f"cannot reach Redis at {safe} ({_failure(exc)})",
                    "start Redis there, or fix the URL's host, port and password",
                )
            ]
        answered = _ok(role, f"Redis at {safe} answered in {latency}")
        try:
            async with asyncio.timeout(CHECK_TIMEOUT * 2):
                info: dict[str, Any] = await client.info()
        except Exception as exc:  # an ACL without INFO, a managed Redis that hides it
            return [
                answered,
                Check(
                    "redis server",
                    Status.WARN,
                    f"INFO refused ({_failure(exc)}): version, persistence and eviction "
                    "policy not checked",
                    "allow INFO for this user, or check them on the server",
                ),
            ]
        return [answered, *redis_server_checks(info)]
    finally:
        await client.aclose()


def redis_server_checks(info: dict[str, Any]) -> list[Check]:
    """What ``INFO`` says about a Redis server: version, persistence, eviction."""
    checks: list[Check] = []
    version = str(info.get("redis_version", "?"))
    if _version(version) < MIN_REDIS:
        checks.append(
            Check(
                "redis server",
                Status.FAIL,
                f"Redis {version}: msgcore needs {'.'.join(map(str, MIN_REDIS))} or newer",
                "upgrade Redis",
            )
        )
    else:
        checks.append(_ok("redis server", f"Redis {version} ({info.get('redis_mode', '?')})"))
    if not int(info.get("aof_enabled", 0)):
        checks.append(
            Check(
                "redis persistence",
                Status.WARN,
                "appendonly no: messages and job records written since the last snapshot "
                "are lost when Redis restarts",
                "CONFIG SET appendonly yes, and appendonly yes in redis.conf",
            )
        )
    else:
        checks.append(_ok("redis persistence", "appendonly yes"))
    policy = str(info.get("maxmemory_policy", "noeviction"))
    if policy != "noeviction":
        checks.append(
            Check(
                "redis eviction",
                Status.WARN,
                f"maxmemory-policy {policy}: under memory pressure Redis may evict "
                "streams and job records",
                "CONFIG SET maxmemory-policy noeviction, and the same in redis.conf",
            )
        )
    else:
        checks.append(_ok("redis eviction", "maxmemory-policy noeviction"))
    return checks


# -- RabbitMQ ----------------------------------------------------------------------------------


async def _quorum_check(connection: Any) -> Check:
    """Declare a quorum queue of a name no one else uses, and delete it again."""
    import aiormq

    name = f"msgcore.doctor.{uuid.uuid4().hex}"
    fix = (
        f"upgrade to RabbitMQ {'.'.join(map(str, MIN_RABBIT))} or newer (quorum queues "
        "arrived in 3.8), and give the user configure permission"
    )
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-queue-type": "quorum"})
    except (aiormq.exceptions.AMQPError, TimeoutError) as exc:
        return Check(
            "rabbitmq quorum", Status.WARN, f"cannot declare a quorum queue: {_failure(exc)}", fix
        )
    finally:
        # A refused declare closed that channel: delete on a fresh one. RabbitMQ answers
        # delete-ok for a queue that was never created.
        with contextlib.suppress(Exception):
            cleanup = await connection.channel()
            try:
                await cleanup.queue_delete(name)
            finally:
                await cleanup.close()
    return _ok("rabbitmq quorum", "declared and deleted a quorum queue")


async def rabbit_checks(url: str) -> list[Check]:
    """The RabbitMQ server at ``url``: latency, version, quorum queues."""
    import aio_pika

    safe = redact_url(url)
    try:
        started = time.perf_counter()
        connection = await aio_pika.connect(url, timeout=CHECK_TIMEOUT)
        latency = _ms(started)
    except Exception as exc:  # aiormq's connect errors, timeouts, a bad URL
        return [
            Check(
                "transport",
                Status.FAIL,
                f"cannot reach RabbitMQ at {safe} ({_failure(exc)})",
                "start RabbitMQ there, or fix the URL's host, port, vhost, user and password",
            )
        ]
    try:
        checks = [_ok("transport", f"RabbitMQ at {safe} answered in {latency}")]
        underlay: Any = connection.transport
        properties: dict[str, Any] = dict(underlay.connection.server_properties or {})
        version = str(properties.get("version", "?"))
        product = str(properties.get("product", "RabbitMQ"))
        detail = f"{product} {version}"
        if properties.get("platform"):
            detail += f" ({properties['platform']})"
        if _version(version) < MIN_RABBIT:
            checks.append(
                Check(
                    "rabbitmq server",
                    Status.WARN,
                    f"{detail}: msgcore needs {'.'.join(map(str, MIN_RABBIT))} or newer "
                    "(quorum queues with message TTL and at-least-once dead-lettering)",
                    "upgrade RabbitMQ",
                )
            )
        else:
            checks.append(_ok("rabbitmq server", detail))
        async with asyncio.timeout(CHECK_TIMEOUT * 2):
            checks.append(await _quorum_check(connection))
        return checks
    finally:
        await connection.close()


# -- the store -------------------------------------------------------------------------------


async def _redis_store_check(config: Settings, url: str) -> Check:
    store = open_store(url, settings=config)
    try:
        async with asyncio.timeout(CHECK_TIMEOUT * 2):
            await store.open()
            started = time.perf_counter()
            await store.get_job(PROBE_JOB)
            latency = _ms(started)
    except Exception as exc:
        return Check(
            "store",
            Status.FAIL,
            f"the Redis job store at {redact_url(url)} did not answer ({_failure(exc)})",
            "start Redis there, or point MSGCORE_STORE_URL (--store-url) at a reachable store",
        )
    finally:
        await store.close()
    prefix = config.redis.stream_prefix
    return _ok("store", f"Redis job store at {redact_url(url)} (keys {prefix}*) read in {latency}")


async def _store_checks(
    config: Settings, transport_path: Path | None, *, transport_ok: bool
) -> list[Check]:
    url = store_url_for(config)
    kind = transport_of(url)
    if kind == "sqlite":
        path = _sqlite_path(url)
        if transport_path is not None and _same_file(path, transport_path):
            return [_ok("store", f"in the transport's file {path} (checked above)")]
        checks = sqlite_file_checks("store", path)
        if config.transport == "rabbit" and not config.store_url:
            checks.append(
                Check(
                    "store",
                    Status.WARN,
                    f"job state in a local file ({path}): workers on other hosts would each "
                    "record their own jobs",
                    "MSGCORE_STORE_URL=redis://host:6379/0 when workers run on more than one host",
                )
            )
        return checks
    if kind == "redis":
        if url == config.url and not transport_ok:
            return [Check("store", Status.FAIL, "on the transport's server, which did not answer")]
        checks = [await _redis_store_check(config, url)]
        if url != config.url and checks[0].status is Status.OK:
            checks += [c for c in await redis_checks("store", url) if c.check != "store"]
        return checks
    return [
        Check(
            "store",
            Status.FAIL,
            f"{redact_url(url)} cannot hold job state",
            "MSGCORE_STORE_URL must be a sqlite:///path.db or redis://host:6379/0 URL",
        )
    ]


async def diagnose(url: str | None, store_url: str | None) -> list[Check]:
    """Every check for these options (and ``MSGCORE_*``), in report order."""
    config = _settings(url, store_url)
    if isinstance(config, Check):
        return [config, _versions()]
    checks = [_where(config)]
    transport_path: Path | None = None
    if config.transport == "sqlite":
        transport_path = _sqlite_path(config.url)
        checks += sqlite_file_checks("transport", transport_path)
    elif config.transport == "redis":
        checks += await redis_checks("transport", config.url)
    else:
        checks += await rabbit_checks(config.url)
    transport_ok = all(c.status is not Status.FAIL for c in checks if c.check == "transport")
    checks += await _store_checks(config, transport_path, transport_ok=transport_ok)
    checks.append(_versions())
    return checks


_COLOURS = {Status.OK: "green", Status.WARN: "yellow", Status.FAIL: "red"}


def doctor(
    *,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Annotated[
        bool, typer.Option("--json", help="Print a list of {check, status, detail, fix}.")
    ] = False,
) -> None:
    """Check the transport, the job store and their servers; print what to fix.

    One line per check: OK, WARN or FAIL, with the fix.
    --json prints a list of {check, status, detail, fix}.

    Exit codes:
    0  no FAIL (WARNs allowed)
    1  at least one FAIL
    """
    quiet_libraries()
    checks = run(diagnose(url, store_url))
    if json:
        print_json([asdict(c) for c in checks])
    else:
        width = max(len(c.check) for c in checks)
        for c in checks:
            line = f"[{_COLOURS[c.status]}]{c.status.value:<4}[/] {c.check:<{width}}  "
            line += escape(c.detail)
            if c.fix:
                line += f"  [dim]fix:[/dim] {escape(c.fix)}"
            console.print(line, highlight=False, soft_wrap=True)
    if any(c.status is Status.FAIL for c in checks):
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``doctor`` to ``app``."""
    app.command("doctor")(doctor)
