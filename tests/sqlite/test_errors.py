"""Bad input and a failing database give typed msgcore errors, and lose nothing committed.

Every case checks three things: the exception class (so callers can catch it), the
message (it says what to do, and never carries a password), and the data that was
committed before the failure (still there, still consumable).
"""

from __future__ import annotations

import asyncio
import ctypes
import json
import logging
import os
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import msgcore
from msgcore import (
    ConfigurationError,
    DatabaseLockedError,
    DatabaseOpenError,
    InvalidURLError,
    MsgcoreError,
    StorageError,
    StorageFullError,
    redact_url,
)
from msgcore.constants import MESSAGES_TABLE
from msgcore.retry import RetryPolicy
from msgcore.sqlite import SqliteBroker, SqliteMessage

BUSY = 0.2
"""busy_timeout of the brokers that meet a locked database, in seconds."""


# -- helpers ---------------------------------------------------------------------------


async def wait_until(predicate: Callable[[], bool | Awaitable[bool]], within: float = 5.0) -> None:
    """Poll ``predicate`` until it is true; fail the test after ``within`` seconds."""
    deadline = time.monotonic() + within
    while True:
        result = predicate()
        if not isinstance(result, bool):
            result = await result
        if result:
            return
        if time.monotonic() > deadline:
            pytest.fail(f"condition not met within {within}s")
        await asyncio.sleep(0.01)


async def consume_all(url: str, queue: str, expected: int, within: float = 5.0) -> list[Any]:
    """Consume ``queue`` with a fresh broker (a new connection) until ``expected`` arrive.

    Waits a little longer afterwards so an unexpected extra message is caught too.
    """
    broker = SqliteBroker(url, logger=None)
    got: list[Any] = []

    @broker.subscriber(queue)
    async def collect(body: Any) -> None:
        got.append(body)

    async with broker:
        await broker.start()
        await wait_until(lambda: len(got) >= expected, within)
        await asyncio.sleep(0.1)
        assert await broker.queue_depth(queue) == 0
    return got


def stored_bodies(db_path: Path, queue: str) -> list[bytes]:
    """Bodies stored for ``queue``, read straight from the file with the stdlib driver."""
    with sqlite3.connect(db_path) as conn:
        rows = conn.execute(
            f"SELECT body FROM {MESSAGES_TABLE} WHERE queue = ? ORDER BY id", (queue,)
        ).fetchall()
    return [bytes(r[0]) for r in rows]


@contextmanager
def write_lock(db_path: Path) -> Iterator[sqlite3.Connection]:
    """Hold SQLite's write lock on ``db_path`` from another connection until exit."""
    other = sqlite3.connect(db_path, isolation_level=None, timeout=5.0)
    try:
        other.execute("BEGIN IMMEDIATE")
        yield other
    finally:
        if other.in_transaction:
            other.execute("ROLLBACK")
        other.close()


@pytest.fixture
def holders() -> Iterator[list[sqlite3.Connection]]:
    """Connections a test opens to take the write lock mid-flight; closed at teardown."""
    conns: list[sqlite3.Connection] = []
    yield conns
    for conn in conns:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        conn.close()


def take_write_lock(db_path: Path, holders: list[sqlite3.Connection]) -> None:
    """Take the write lock from a new connection, as another process would."""
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    holders.append(other)


def release_write_lock(holders: list[sqlite3.Connection]) -> None:
    for conn in holders:
        if conn.in_transaction:
            conn.execute("ROLLBACK")


class Records(logging.Handler):
    """Collects log records, so a test can wait for an event it cannot otherwise see."""

    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def locked_errors(self) -> list[logging.LogRecord]:
        """Records of ERROR or worse reporting a DatabaseLockedError (as exc_info or text)."""
        return [
            r
            for r in self.records
            if r.levelno >= logging.ERROR
            and (
                (r.exc_info is not None and isinstance(r.exc_info[1], DatabaseLockedError))
                or "locked" in r.getMessage()
            )
        ]


@contextmanager
def recording(logger: logging.Logger) -> Iterator[Records]:
    handler = Records()
    old_level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.DEBUG)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)
        logger.setLevel(old_level)


# -- URLs ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "hint"),
    [
        ("redis://x", "sqlite:///"),
        ("sqlite://host/x.db", "sqlite:///"),
        ("sqlite:///:memory:", "sqlite:///"),
        ("sqlite://:memory:", "sqlite:///"),
        ("", "sqlite:///path/to/file.db"),
        ("sqlite:///", "sqlite:///path/to/file.db"),
    ],
)
def test_bad_url_is_rejected_at_construction_with_the_expected_form(url: str, hint: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        SqliteBroker(url)
    message = str(info.value)
    assert hint in message, message
    # The tree: callers may catch it as a configuration error or a plain ValueError.
    assert isinstance(info.value, ConfigurationError)
    assert isinstance(info.value, MsgcoreError)
    assert isinstance(info.value, ValueError)


def test_memory_url_says_why_and_points_to_the_test_broker() -> None:
    with pytest.raises(InvalidURLError, match="in-memory") as info:
        SqliteBroker("sqlite:///:memory:")
    assert "TestSqliteBroker" in str(info.value)


def test_host_part_error_explains_three_and_four_slashes() -> None:
    with pytest.raises(InvalidURLError) as info:
        SqliteBroker("sqlite://host/x.db")
    message = str(info.value)
    assert "'host'" in message
    assert "sqlite:///data/msgcore.db" in message  # relative form
    assert "sqlite:////var/lib/msgcore.db" in message  # absolute form


@pytest.mark.parametrize(
    "url",
    [
        "postgres://user:s3cret@h/db",
        "redis://:s3cret@h:6379/0",
        "amqp://guest:s3cret@rabbit:5672/vhost",
    ],
)
def test_password_never_appears_in_a_url_error(url: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        SqliteBroker(url)
    text = f"{info.value} {info.value!r} {info.value.args}"
    assert "s3cret" not in text
    assert "***" in text  # the URL is still shown, redacted, so the user can find it


@pytest.mark.parametrize("url", ["sqlite:x.db", "sqlite:/x.db", "sqlite3:data/x.db"])
def test_a_sqlite_url_without_its_slashes_is_refused_not_guessed(url: str) -> None:
    # sqlite:x.db used to open ".db" (a character of the name dropped as the slash)
    with pytest.raises(InvalidURLError, match="is not a SQLite URL of either form") as info:
        SqliteBroker(url)
    assert "sqlite:///data/msgcore.db" in str(info.value)
    assert "sqlite:////var/lib/msgcore.db" in str(info.value)


def test_password_in_a_sqlite_url_with_a_host_part_is_not_shown() -> None:
    with pytest.raises(InvalidURLError) as info:
        SqliteBroker("sqlite://user:s3cret@host/x.db")
    assert "s3cret" not in str(info.value)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("sqlite:///x.db?busy_timeout=abc", "busy_timeout='abc' is not a number of seconds"),
        ("sqlite:///x.db?min_poll_interval=soon", "min_poll_interval='soon'"),
        ("sqlite:///x.db?busy_timeout=-1", "busy_timeout must be >= 0"),
        ("sqlite:///x.db?min_poll_interval=0.5&max_poll_interval=0.1", "min_poll_interval"),
        ("sqlite:///x.db?busy_timeout=nan", "busy_timeout='nan' is not a number of seconds"),
        # a mistyped option used to be ignored without a word
        ("sqlite:///x.db?busy_timout=2", "unknown URL option(s) busy_timout"),
    ],
)
def test_bad_url_options_are_rejected_at_construction(url: str, message: str) -> None:
    with pytest.raises(InvalidURLError) as info:
        SqliteBroker(url)
    assert message in str(info.value)


def test_bad_url_creates_no_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for url in ("sqlite://host/x.db", "sqlite:///x.db?busy_timeout=abc"):
        with pytest.raises(InvalidURLError):
            SqliteBroker(url)
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    ("url", "redacted"),
    [
        ("postgres://user:s3cret@h/db", "postgres://user:***@h/db"),
        ("redis://:s3cret@h:6379/0", "redis://:***@h:6379/0"),
        ("amqp://guest:guest@rabbit:5672/", "amqp://guest:***@rabbit:5672/"),
        ("redis://u:p%40ss@h", "redis://u:***@h"),  # percent-encoded '@' in the password
        ("redis://u:pa:ss@h", "redis://u:***@h"),  # ':' in the password
        ("rediss://u:s3cret@h/0?ssl_cert_reqs=none", "rediss://u:***@h/0?ssl_cert_reqs=none"),
        ("sqlite+aiosqlite://u:s3cret@h/x", "sqlite+aiosqlite://u:***@h/x"),
        # raw '@' or '/' in a password (not percent-encoded): hidden whole, not in part
        ("redis://:sec@ret@h:1/0", "redis://:***@h:1/0"),
        ("amqp://u:pa/ss@h/", "amqp://u:***@h/"),
        ("error at 'redis://:s3cret@h/0': refused", "error at 'redis://:***@h/0': refused"),
        # redis-py takes the password as a query parameter too
        ("redis://h:1/0?password=s3cret", "redis://h:1/0?password=***"),
        ("redis://h/0?db=1&Password=s3cret&x=y", "redis://h/0?db=1&Password=***&x=y"),
    ],
)
def test_redact_url_replaces_the_password(url: str, redacted: str) -> None:
    assert redact_url(url) == redacted
    assert msgcore.redact_url is redact_url


@pytest.mark.parametrize(
    "url",
    [
        "redis://localhost:6379/0",  # a port is not a password
        "redis://user@host/0",  # a user without a password
        "sqlite:////var/lib/app/msgcore.db",
        "sqlite:///./msgcore.db?busy_timeout=2",
        "amqp://rabbit/",
        "",
        "not a url at all",
    ],
)
def test_redact_url_leaves_urls_without_a_password_alone(url: str) -> None:
    assert redact_url(url) == url


def test_redact_url_works_on_text_containing_several_urls() -> None:
    line = "failover from redis://a:pw1@r1:6379/0 to amqp://b:pw2@r2/ failed; see redis://r3"
    out = redact_url(line)
    assert out == "failover from redis://a:***@r1:6379/0 to amqp://b:***@r2/ failed; see redis://r3"
    assert redact_url(out) == out  # idempotent


# -- files that cannot be used -----------------------------------------------------------


async def test_missing_directory_raises_database_open_error_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "no" / "such" / "dir"
    broker = SqliteBroker(f"sqlite:///{missing}/msgcore.db")
    with pytest.raises(DatabaseOpenError) as info:
        await broker.connect()
    message = str(info.value)
    assert str(missing) in message
    assert "does not exist" in message
    assert "Create it" in message
    assert isinstance(info.value, StorageError)
    assert not (tmp_path / "no").exists()  # nothing was created on a guess

    # Doing what the message says makes the same broker work.
    missing.mkdir(parents=True)
    await broker.connect()
    try:
        await broker.publish("after mkdir", "q")
        assert await broker.queue_depth("q") == 1
    finally:
        await broker.stop()


@pytest.mark.parametrize(
    "content",
    [
        pytest.param(os.urandom(16 * 1024), id="random-bytes"),
        pytest.param(b'{"orders": [1, 2, 3]}\n' * 200, id="json-text"),
        pytest.param(b"hello", id="tiny"),
    ],
)
async def test_file_that_is_not_sqlite_raises_database_open_error(
    db_path: Path, db_url: str, content: bytes
) -> None:
    db_path.write_bytes(content)  # noqa: ASYNC240 - a small local file
    broker = SqliteBroker(db_url)
    with pytest.raises(DatabaseOpenError) as info:
        await broker.connect()
    message = str(info.value)
    assert "not a SQLite database" in message
    assert str(db_path) in message
    assert "new file" in message  # what to do
    # The user's file is left exactly as it was: msgcore never writes over it.
    assert db_path.read_bytes() == content  # noqa: ASYNC240 - a small local file
    assert not broker._connection
    await broker.stop()


def _aiosqlite_threads() -> set[threading.Thread]:
    return {t for t in threading.enumerate() if "_connection_worker_thread" in t.name}


async def test_url_naming_a_directory_raises_database_open_error(tmp_path: Path) -> None:
    (tmp_path / "adir.db").mkdir()
    before = _aiosqlite_threads()
    broker = SqliteBroker(f"sqlite:///{tmp_path}/adir.db")
    with pytest.raises(DatabaseOpenError, match="is a directory, not a database file") as info:
        await broker.connect()
    assert f"sqlite:///{tmp_path}/adir.db/msgcore.db" in str(info.value)
    await broker.stop()
    # connect() waited for aiosqlite's worker thread (see the test below).
    assert not [t for t in _aiosqlite_threads() - before if t.is_alive()]


def test_failed_open_leaves_no_thread_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "adir.db").mkdir()
    crashes: list[BaseException | None] = []
    monkeypatch.setattr(threading, "excepthook", lambda args: crashes.append(args.exc_value))

    async def fail_to_open() -> None:
        with pytest.raises(DatabaseOpenError):
            await SqliteBroker(f"sqlite:///{tmp_path}/adir.db").connect()

    before = _aiosqlite_threads()
    # The crash is a race with the loop's shutdown (about one run in two loses it):
    # twenty runs make a pass by luck vanishingly unlikely.
    for _ in range(20):
        asyncio.run(fail_to_open())
    for thread in _aiosqlite_threads() - before:
        thread.join(5)
    assert crashes == []


_READONLY_CHILD = r"""
import asyncio, json, sys
from msgcore.sqlite import SqliteBroker

def cap_effective():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("CapEff:"):
                return int(line.split()[1], 16)
    return 0

async def main(path):
    out = {"cap_dac_override": bool(cap_effective() & (1 << 1))}
    broker = SqliteBroker("sqlite:///" + path, busy_timeout=0.5)
    try:
        await broker.connect()
        await broker.publish("must not be stored", "q")
        out["error"] = None
    except Exception as exc:
        out["error"] = [c.__module__ + "." + c.__qualname__ for c in type(exc).__mro__]
        out["message"] = str(exc)
    finally:
        await broker.stop()
    print(json.dumps(out))

asyncio.run(main(sys.argv[1]))
"""


def _drop_permission_override() -> None:
    """In the child before exec: remove the capabilities that let root ignore file modes.

    Root's capabilities after exec are its bounding set, so dropping CAP_DAC_OVERRIDE,
    CAP_DAC_READ_SEARCH and CAP_FOWNER from it makes the child obey chmod like any user.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    pr_capbset_drop = 24
    for cap in (1, 2, 3):  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER
        if libc.prctl(pr_capbset_drop, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP) failed")


async def test_read_only_database_raises_database_open_error_and_keeps_its_data(
    db_path: Path, db_url: str
) -> None:
    broker = SqliteBroker(db_url)
    async with broker:
        for i in range(3):
            await broker.publish({"n": i}, "q")
    directory = db_path.parent
    db_path.chmod(0o444)  # noqa: ASYNC240 - a small local file
    directory.chmod(0o555)
    try:
        # Root ignores file modes (CAP_DAC_OVERRIDE), so chmod alone proves nothing when
        # the tests run as root: run the broker in a child process whose bounding set
        # lacks the override capabilities. As any other user, the child is just a child.
        as_root = os.geteuid() == 0
        preexec = _drop_permission_override if as_root else None
        try:
            proc = subprocess.run(  # noqa: ASYNC221 - a short child, the loop has nothing else to do
                [sys.executable, "-c", _READONLY_CHILD, str(db_path)],
                preexec_fn=preexec,
                capture_output=True,
                text=True,
                timeout=60,
                check=False,
            )
        except subprocess.SubprocessError as exc:
            if as_root:
                pytest.skip(
                    f"root ignores file permissions and cannot drop CAP_DAC_OVERRIDE: {exc}"
                )
            raise
        assert proc.returncode == 0, proc.stderr
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        if as_root and out["cap_dac_override"]:
            pytest.skip("root ignores file permissions and CAP_DAC_OVERRIDE could not be dropped")
        assert out["error"] is not None, "publishing into a read-only database succeeded"
        assert "msgcore.exceptions.DatabaseOpenError" in out["error"], out
        assert "read-only" in out["message"]
        assert "writable" in out["message"]  # what to do
        assert str(db_path) in out["message"]
    finally:
        directory.chmod(0o755)
        db_path.chmod(0o644)  # noqa: ASYNC240 - a small local file
    assert await consume_all(db_url, "q", 3) == [{"n": 0}, {"n": 1}, {"n": 2}]


# -- a locked database -----------------------------------------------------------------


@pytest.mark.parametrize("how", ["keyword", "url-option"])
async def test_locked_database_raises_within_busy_timeout_and_keeps_committed_messages(
    db_path: Path, db_url: str, unique: str, how: str
) -> None:
    if how == "keyword":
        broker = SqliteBroker(db_url, busy_timeout=BUSY)
    else:
        broker = SqliteBroker(f"{db_url}?busy_timeout={BUSY}")
    async with broker:
        await broker.publish("before-1", unique)
        await broker.publish("before-2", unique)

        with write_lock(db_path):
            started = time.monotonic()
            with pytest.raises(DatabaseLockedError) as info:
                await broker.publish("during", unique)
            elapsed = time.monotonic() - started
            # It waited for the lock (busy_timeout), then gave up promptly.
            assert BUSY * 0.8 <= elapsed < BUSY + 1.5, elapsed
            message = str(info.value)
            assert "busy_timeout" in message
            assert f"busy_timeout={BUSY:g}s" in message
            assert "not committed" in message
            assert isinstance(info.value, StorageError)

            # A batch fails as a whole too.
            with pytest.raises(DatabaseLockedError):
                await broker.publish_batch("batch-1", "batch-2", queue=unique)

        # The lock is gone: the same broker publishes again without being reconnected.
        await broker.publish("after", unique)

    assert stored_bodies(db_path, unique) == [b"before-1", b"before-2", b"after"]
    assert await consume_all(db_url, unique, 3) == ["before-1", "before-2", "after"]


async def test_locked_database_at_connect_raises_database_locked_error(
    db_path: Path, db_url: str
) -> None:
    async with SqliteBroker(db_url) as broker:
        await broker.publish("kept", "q")
    broker = SqliteBroker(db_url, busy_timeout=BUSY)
    with write_lock(db_path):
        started = time.monotonic()
        with pytest.raises(DatabaseLockedError, match="busy_timeout"):
            await broker.connect()
        assert time.monotonic() - started < BUSY + 1.5
    await broker.connect()  # works once the lock is gone
    try:
        assert await broker.queue_depth("q") == 1
    finally:
        await broker.stop()


async def test_a_new_file_opens_while_another_process_holds_its_write_lock(
    db_path: Path, db_url: str
) -> None:
    """Two workers starting at once on a fresh file: switching it to WAL returns
    SQLITE_BUSY at once (SQLite skips its busy handler there) while the other holds the
    write lock; the connect waits for it like any locked write, within busy_timeout."""
    other = sqlite3.connect(db_path, isolation_level=None, check_same_thread=False)
    other.execute("BEGIN IMMEDIATE")  # a fresh file, still in rollback-journal mode
    releaser = threading.Timer(0.3, lambda: other.execute("COMMIT"))
    releaser.start()
    broker = SqliteBroker(db_url, busy_timeout=5.0)
    try:
        started = time.monotonic()
        await broker.connect()  # before the retry: DatabaseLockedError after ~0 s
        assert time.monotonic() - started >= 0.25
        await broker.publish("first", "q")
        assert await broker.queue_depth("q") == 1
    finally:
        releaser.join()
        other.close()
        await broker.stop()


async def test_a_new_file_held_past_busy_timeout_at_connect_is_a_locked_error(
    db_path: Path, db_url: str
) -> None:
    other = sqlite3.connect(db_path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        started = time.monotonic()
        with pytest.raises(DatabaseLockedError, match="busy_timeout"):
            await SqliteBroker(db_url, busy_timeout=BUSY).connect()
        # the message says it waited busy_timeout: now it has
        assert BUSY - 0.1 <= time.monotonic() - started < BUSY + 1.5
    finally:
        other.execute("ROLLBACK")
        other.close()


# -- a full disk -----------------------------------------------------------------------


async def _set_max_pages(broker: SqliteBroker, pages: int) -> int:
    # PRAGMA max_page_count is per connection: set it on the broker's own connection.
    conn = broker._connection._conn
    assert conn is not None
    cursor = await conn.execute(f"PRAGMA max_page_count={pages}")
    row = await cursor.fetchone()
    return int(row[0])


async def _page_count(broker: SqliteBroker) -> int:
    conn = broker._connection._conn
    cursor = await conn.execute("PRAGMA page_count")
    row = await cursor.fetchone()
    return int(row[0])


async def test_disk_full_raises_storage_full_error_and_keeps_committed_messages(
    db_path: Path, db_url: str, unique: str
) -> None:
    payload = "x" * 6000  # bigger than a page: each message needs overflow pages
    broker = SqliteBroker(db_url)
    async with broker:
        for i in range(5):
            await broker.publish({"small": i}, unique)
        limit = await _set_max_pages(broker, await _page_count(broker) + 12)

        stored: list[dict[str, Any]] = [{"small": i} for i in range(5)]
        error: StorageFullError | None = None
        for i in range(200):
            try:
                await broker.publish({"big": i, "pad": payload}, unique)
            except StorageFullError as exc:
                error = exc
                break
            stored.append({"big": i, "pad": payload})
        assert error is not None, f"never hit the {limit}-page limit"
        assert len(stored) > 5, "the limit left no room at all: the test proves too little"

        message = str(error)
        assert "full" in message
        assert "rolled back" in message
        assert "free space" in message  # what to do
        assert isinstance(error, StorageError)

        # A batch that does not fit is stored entirely or not at all.
        with pytest.raises(StorageFullError):
            await broker.publish_batch(*[payload] * 20, queue=unique)
        assert await broker.queue_depth(unique) == len(stored)

        # Free space (raise the limit): the same connection works again.
        await _set_max_pages(broker, 1_073_741_823)
        await broker.publish({"after": True}, unique)
        stored.append({"after": True})

    assert await consume_all(db_url, unique, len(stored)) == stored


# -- settlement against a locked database ------------------------------------------------


async def test_handler_error_with_locked_nack_redelivers_the_message(
    db_path: Path, db_url: str, unique: str, holders: list[sqlite3.Connection]
) -> None:
    """The handler raises; its nack meets a locked database and fails.

    The row must not be lost: once the lock is released and the lease expires, the
    message is delivered again.
    """
    log = logging.getLogger(f"msgcore.test.{unique}")
    broker = SqliteBroker(db_url, busy_timeout=BUSY, logger=log)
    deliveries: list[tuple[str, int]] = []

    @broker.subscriber(unique, lease_seconds=1.0, retry=RetryPolicy(backoff=0.0))
    async def handle(body: str, message: SqliteMessage) -> None:
        deliveries.append((body, message.attempt))
        if message.attempt == 1:
            # Another process takes the write lock just as this handler fails.
            take_write_lock(db_path, holders)
            raise RuntimeError("handler failed")

    with recording(log) as records:
        async with broker:
            await broker.start()
            await broker.publish("payload", unique)

            # The failed nack is logged; that is the moment the row is orphaned.
            await wait_until(lambda: bool(records.locked_errors()))
            assert deliveries == [("payload", 1)]
            release_write_lock(holders)

            await wait_until(lambda: len(deliveries) >= 2, within=10)
            await wait_until(lambda: stored_bodies(db_path, unique) == [])
            await asyncio.sleep(0.2)

    assert deliveries == [("payload", 1), ("payload", 2)]
    assert stored_bodies(db_path, unique) == []


async def test_successful_handler_with_locked_ack_redelivers_and_publishes_onward_once(
    db_path: Path, db_url: str, unique: str, holders: list[sqlite3.Connection]
) -> None:
    """The handler succeeds and publishes onward, but its ack meets a locked database.

    The onward message commits with the ack, so neither is stored; the redelivery
    stores both: the onward queue gets exactly one message.
    """
    onward = f"{unique}-onward"
    log = logging.getLogger(f"msgcore.test.{unique}")
    broker = SqliteBroker(db_url, busy_timeout=BUSY, logger=log)
    deliveries: list[int] = []

    @broker.subscriber(unique, lease_seconds=1.0)
    async def handle(body: str, message: SqliteMessage) -> None:
        deliveries.append(message.attempt)
        await broker.publish(f"{body} handled", onward)
        if message.attempt == 1:
            take_write_lock(db_path, holders)

    with recording(log) as records:
        async with broker:
            await broker.start()
            await broker.publish("order-1", unique)

            # The failed ack is logged as an error that says the message comes back.
            await wait_until(lambda: bool(records.locked_errors()))
            failed = records.locked_errors()[0].getMessage()
            assert "ack" in failed
            assert "again" in failed or "redeliver" in failed, failed
            # Nothing from the first attempt was committed: no ack, no onward message.
            assert stored_bodies(db_path, onward) == []
            assert stored_bodies(db_path, unique) != []
            release_write_lock(holders)

            await wait_until(lambda: stored_bodies(db_path, unique) == [], within=10)

    assert deliveries == [1, 2]
    assert stored_bodies(db_path, onward) == [b"order-1 handled"]


async def test_locked_database_while_dead_lettering_a_crash_loop_keeps_the_subscriber_alive(
    db_path: Path,
    db_url: str,
    unique: str,
    holders: list[sqlite3.Connection],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A row delivered more often than max_attempts (its worker kept crashing) is
    dead-lettered before its handler runs. If that write meets a locked database the
    subscriber must carry on: the row comes back after its lease, other rows flow."""
    async with SqliteBroker(db_url) as seed:
        await seed.publish("poison", unique)
    with sqlite3.connect(db_path) as conn:  # as if five workers had died handling it
        conn.execute(f"UPDATE {MESSAGES_TABLE} SET attempts = 5 WHERE queue = ?", (unique,))

    broker = SqliteBroker(db_url, busy_timeout=BUSY)
    handled: list[str] = []

    @broker.subscriber(unique, max_attempts=3, lease_seconds=1.0)
    async def handle(body: str) -> None:
        handled.append(body)

    async with broker:
        client = broker._connection
        real_claim = client.claim

        async def claim_then_lock(*args: Any, **kwargs: Any) -> Any:
            # Another process takes the write lock right after this worker's claim.
            claim = await real_claim(*args, **kwargs)
            if claim.messages and not holders:
                take_write_lock(db_path, holders)
            return claim

        monkeypatch.setattr(client, "claim", claim_then_lock)
        await broker.start()
        await wait_until(lambda: bool(holders))
        await asyncio.sleep(BUSY * 2)  # the dead-letter write gives up meanwhile
        release_write_lock(holders)

        await broker.publish("fresh", unique)
        await wait_until(lambda: handled == ["fresh"], within=3)
        dead: list[Any] = []

        async def poison_dead_lettered() -> bool:
            dead[:] = await broker.dead_letters(unique)
            return bool(dead)

        await wait_until(poison_dead_lettered, within=3)
    assert [d.body for d in dead] == [b"poison"]
    assert handled == ["fresh"]  # the crash-looping row never reached the handler again


async def test_database_from_a_newer_msgcore_raises_schema_version_error(
    db_path: Path, db_url: str
) -> None:
    async with SqliteBroker(db_url) as broker:
        await broker.publish("kept", "q")
    with sqlite3.connect(db_path) as conn:
        conn.execute("UPDATE msgcore_meta SET value = '99' WHERE key = 'schema_version'")

    broker = SqliteBroker(db_url)
    with pytest.raises(msgcore.SchemaVersionError) as info:
        await broker.connect()
    assert "Upgrade msgcore" in str(info.value)
    assert isinstance(info.value, StorageError)
    await broker.stop()
    with sqlite3.connect(db_path) as conn:
        assert conn.execute(
            "SELECT value FROM msgcore_meta WHERE key = 'schema_version'"
        ).fetchone() == ("99",)
    assert stored_bodies(db_path, "q") == [b"kept"]


async def test_a_database_already_set_up_opens_while_another_process_writes(
    tmp_path: Path,
) -> None:
    """A worker starting beside busy ones reads that the schema is in place and needs
    no write lock to connect (only a new or older file is set up in a write)."""
    from msgcore.sqlite.client.connection import SqliteClient

    path = str(tmp_path / "busy.db")
    first = SqliteClient(path, busy_timeout=0.5)
    await first.connect()
    await first.close()
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process in a long write transaction
    try:
        second = SqliteClient(path, busy_timeout=0.2)
        started = time.monotonic()
        await second.connect()
        assert time.monotonic() - started < 0.2
        await second.close()
        fresh = SqliteClient(str(tmp_path / "other.db"), busy_timeout=0.2)
        await fresh.connect()  # a new file is set up as before
        await fresh.close()
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_url_options_win_over_settings_and_are_checked_through_create_broker(
    tmp_path: Path,
) -> None:
    """create_broker passed MSGCORE_SQLITE__* over the URL's options, so a bad option in
    MSGCORE_URL was accepted by some commands and refused by others."""
    from msgcore import Router, Settings, create_broker

    base = f"sqlite:///{tmp_path / 'x.db'}"
    broker = create_broker(
        Router(), settings=Settings(url=f"{base}?busy_timeout=2", sqlite={"busy_timeout": 7})
    )
    assert broker._connection_kwargs["busy_timeout"] == 2.0
    broker = create_broker(Router(), settings=Settings(url=base, sqlite={"busy_timeout": 7}))
    assert broker._connection_kwargs["busy_timeout"] == 7.0
    for bad in ("busy_timeout=nan", "busy_timeout=-1", "min_poll_interval=5&max_poll_interval=1"):
        with pytest.raises(InvalidURLError):
            create_broker(Router(), settings=Settings(url=f"{base}?{bad}"))
