"""What every ``msgcore`` command shares: settings from the environment or options,
one-line errors with a meaningful exit code, JSON output for scripts."""

from __future__ import annotations

import asyncio
import json
import logging
import math
import sys
from collections.abc import AsyncIterator, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.markup import escape

from msgcore.constants import MAX_LIMIT
from msgcore.exceptions import ConfigurationError, MsgcoreError, StorageError
from msgcore.settings import Settings, transport_of
from msgcore.urls import parse_sqlite_url, redact_url

if TYPE_CHECKING:
    from msgcore.jobs.client import Client

__all__ = [
    "CONNECT_TIMEOUT",
    "EXIT_ERROR",
    "EXIT_FAILED",
    "EXIT_TIMEOUT",
    "EXIT_UNAVAILABLE",
    "absent_store",
    "check_limit",
    "connected_client",
    "console",
    "fail",
    "missing_store",
    "no_store_text",
    "note",
    "print_json",
    "quiet_libraries",
    "read_payload",
    "run",
    "settings",
]

T = TypeVar("T")

EXIT_ERROR = 1
"""Bad input or a failed operation."""
EXIT_FAILED = 2
"""A job failed (dead-lettered) or was cancelled."""
EXIT_UNAVAILABLE = 3
"""The transport or the store did not answer."""
EXIT_TIMEOUT = 4
"""Not finished (or no reply) within the timeout; the job itself goes on."""


CONNECT_TIMEOUT = 10.0
"""Seconds a command waits for the transport and the store to answer at connect: a host
that drops packets would otherwise hang it for the OS's TCP timeout."""

SHUTDOWN_GRACE = 3.0
"""Seconds a command gives the tasks it leaves behind to end once it has its outcome."""

_TRANSPORT_NAMES = {"sqlite": "SQLite", "redis": "Redis", "rabbit": "RabbitMQ"}

console = Console()
errors = Console(stderr=True)


def settings(url: str | None, store_url: str | None) -> Settings:
    """``Settings()`` from ``MSGCORE_*``, with ``--url``/``--store-url`` on top."""
    values: dict[str, Any] = {}
    if url is not None:
        values["url"] = url
    if store_url is not None:
        values["store_url"] = store_url
    try:
        config = Settings(**values)
        # a SQLite URL's form is checked only when it is opened: here, before a command
        # reads the path from it
        from msgcore.store import store_url_for

        for checked in (config.url, store_url_for(config)):
            if transport_of(checked) == "sqlite":
                parse_sqlite_url(checked)
    except MsgcoreError as exc:
        fail(str(exc))
    except ValueError as exc:
        fail(f"invalid MSGCORE_* setting: {redact_url(str(exc)).splitlines()[0]}")
    return config


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    """One ``error:`` line on stderr, then exit ``code``. ``message`` is plain text: it
    often holds user or worker text (ids, channels, errors), where a ``[`` is no markup."""
    text = escape(redact_url(message))
    errors.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def check_limit(limit: int) -> None:
    """Exit 1 unless ``--limit`` is from 1 to ``MAX_LIMIT``."""
    if not 1 <= limit <= MAX_LIMIT:
        fail(f"--limit must be from 1 to {MAX_LIMIT:,}, got {limit}")


def note(message: str) -> None:
    """A ``note:`` line on stderr (stdout stays the command's output, JSON with --json)."""
    errors.print(f"[yellow]note:[/yellow] {escape(message)}", highlight=False, soft_wrap=True)


def missing_store(config: Settings) -> Path | None:
    """The absolute path of a SQLite job store whose file does not exist (None: it exists,
    or the store is Redis). Such a store holds nothing: reading commands say so instead of
    opening it, which would create the file (with RabbitMQ, by default
    ./msgcore-store.db in whatever directory the command runs)."""
    from msgcore.store import store_url_for

    url = store_url_for(config)
    if transport_of(url) != "sqlite":
        return None
    path = Path(parse_sqlite_url(url).path)
    return None if path.exists() else path.absolute()


def absent_store(config: Settings, nothing: str) -> bool:
    """Whether the SQLite job store's file does not exist (``missing_store``); if so, a
    note says what the reading command shows for it (``nothing``: "No jobs") and names
    the file."""
    missing = missing_store(config)
    if missing is None:
        return False
    note(f"{nothing}: {no_store_text(config, missing)}")
    return True


def no_store_text(config: Settings, missing: Path) -> str:
    """Why a store that does not exist holds nothing: most often a mistyped URL or a
    command run from another directory."""
    from msgcore.store import store_url_for

    return (
        f"there is no store file at {missing} ({redact_url(store_url_for(config))}). "
        "Check MSGCORE_URL / --url (or MSGCORE_STORE_URL / --store-url): a relative path "
        "is taken from the working directory."
    )


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; msgcore's errors become one line and an exit code."""
    try:
        if sys.platform != "win32":
            try:
                import uvloop
            except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
                return asyncio.run(_settled(coro))
            return uvloop.run(_settled(coro))
        return asyncio.run(_settled(coro))
    except StorageError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except (MsgcoreError, ConfigurationError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}", EXIT_UNAVAILABLE)


async def _settled(coro: Coroutine[Any, Any, T]) -> T:
    """``coro``, then the tasks it left running cancelled until they end.

    ``asyncio.run`` cancels those once and waits for them however long they take. An
    aio-pika robust connection whose server accepted TCP but never answered has its
    connect attempt in such a task: it takes that cancellation for a failed attempt and
    tries again 5 s later, for ever, so the command printed its error and never exited.
    Cancelled again while it waits for that retry, it ends."""
    try:
        return await coro
    finally:
        await _cancel_leftovers()


async def _cancel_leftovers() -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + SHUTDOWN_GRACE
    grace = 1.0  # as asyncio.run would, once: time for their cleanup
    this = asyncio.current_task()
    while left := [t for t in asyncio.all_tasks() if t is not this and not t.done()]:
        if loop.time() >= deadline:
            return  # asyncio.run cancels them once more and waits: nothing more to do here
        for task in left:
            task.cancel()
        await asyncio.wait(left, timeout=min(grace, max(deadline - loop.time(), 0.0)))
        grace = 0.1


def print_json(data: Any) -> None:
    """``data`` as one JSON document on stdout. NaN and ±Infinity, which JSON has not
    (Python's json writes them as bare ``NaN``, which other parsers reject), print as
    ``null``; other values JSON has no type for print as their ``str``."""
    sys.stdout.write(json.dumps(_finite(data), indent=2, default=str, allow_nan=False) + "\n")


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {key: _finite(value) for key, value in data.items()}
    if isinstance(data, list | tuple):
        return [_finite(value) for value in data]
    return data


def quiet_libraries() -> None:
    """Keep the client libraries' own log lines off stderr.

    aio-pika/aiormq log a failed connect at ERROR before raising; with no logging set
    up Python prints that through its last-resort handler, so an unreachable server
    would print a line besides the command's one-line ``error:``.
    """
    for name in ("aiormq", "aio_pika", "faststream", "redis"):
        logging.getLogger(name).setLevel(logging.CRITICAL)


def read_payload(value: str | None, *, text: bool) -> Any:
    """A PAYLOAD argument as the handler receives it: JSON, or with ``text`` the string
    itself; ``-`` reads it from stdin (one trailing newline dropped, as ``echo`` adds
    it). Not JSON, NaN or Infinity in it, or not UTF-8 text: exit 1."""
    if value is None:
        return None
    if value == "-":
        try:
            value = sys.stdin.buffer.read().decode("utf-8")
        except UnicodeDecodeError as exc:
            fail(f"PAYLOAD is not UTF-8 text (byte {exc.object[exc.start]:#04x} at {exc.start})")
        if text:
            value = value.removesuffix("\n")
    if text:
        payload: Any = value
    else:
        try:
            payload = json.loads(value, parse_constant=_not_a_number, parse_float=_finite_float)
        except json.JSONDecodeError as exc:
            fail(
                f"PAYLOAD is not JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
                "quote strings as JSON ('\"hello\"') or pass --text to send it as a string."
            )
        except ValueError as exc:
            fail(f"PAYLOAD is not JSON: {exc}")
    try:
        # a lone surrogate: an argument's byte that is not UTF-8 (Python keeps it as one),
        # or a JSON escape such as "\ud800"; no transport can encode it
        json.dumps(payload, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        fail("PAYLOAD is not UTF-8 text: it has a byte that is not UTF-8 or a lone surrogate")
    return payload


def _not_a_number(constant: str) -> NoReturn:
    raise ValueError(f"{constant} is not a JSON number (JSON has no NaN or Infinity)")


def _finite_float(number: str) -> float:
    value = float(number)
    if not math.isfinite(value):
        raise ValueError(f"{number} is too large for a float (JSON has no NaN or Infinity)")
    return value


@asynccontextmanager
async def connected_client(
    config: Settings, *, timeout: float = CONNECT_TIMEOUT
) -> AsyncIterator[Client]:
    """A connected ``Client`` for ``config``. A transport or store that does not answer
    ends the command with one line naming the (redacted) URL and exit code 3."""
    from msgcore.jobs.client import Client

    client = Client(settings=config)
    name = _TRANSPORT_NAMES[config.transport]
    try:
        async with asyncio.timeout(timeout):
            await client.connect()
    except TimeoutError:
        fail(
            f"Cannot reach the {name} transport at {config.safe_url}: no answer within "
            f"{timeout:g}s. Check that the server runs there and is not firewalled "
            "(MSGCORE_URL / --url).",
            EXIT_UNAVAILABLE,
        )
    except OSError as exc:  # aio-pika and redis-py connect errors are ConnectionErrors
        fail(
            f"Cannot reach the {name} transport at {config.safe_url} "
            f"({type(exc).__name__}: {exc}). Check that the server runs there "
            "and that the URL's host, port, user and password are right (MSGCORE_URL / "
            "--url).",
            EXIT_UNAVAILABLE,
        )
    try:
        yield client
    finally:
        await client.close()
