"""What every ``msgcore`` command shares: settings from the environment or options,
one-line errors with a meaningful exit code, JSON output for scripts."""

from __future__ import annotations

import asyncio
import json
import sys
from collections.abc import Coroutine
from typing import Any, NoReturn, TypeVar

import typer
from rich.console import Console

from msgcore.exceptions import ConfigurationError, MsgcoreError, StorageError
from msgcore.settings import Settings
from msgcore.urls import redact_url

__all__ = ["EXIT_ERROR", "EXIT_UNAVAILABLE", "console", "fail", "print_json", "run", "settings"]

T = TypeVar("T")

EXIT_ERROR = 1
"""Bad input or a failed operation."""
EXIT_UNAVAILABLE = 3
"""The transport or the store did not answer."""

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
        return Settings(**values)
    except MsgcoreError as exc:
        fail(str(exc))
    except ValueError as exc:  # pydantic: values are hidden from the message
        fail(f"invalid MSGCORE_* setting: {redact_url(str(exc)).splitlines()[0]}")


def fail(message: str, code: int = EXIT_ERROR) -> NoReturn:
    errors.print(f"[red]error:[/red] {redact_url(message)}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a command's coroutine; msgcore's errors become one line and an exit code."""
    try:
        if sys.platform != "win32":
            try:
                import uvloop
            except ImportError:  # pragma: no cover - uvloop is a dependency off Windows
                return asyncio.run(coro)
            return uvloop.run(coro)
        return asyncio.run(coro)
    except StorageError as exc:
        fail(str(exc), EXIT_UNAVAILABLE)
    except (MsgcoreError, ConfigurationError) as exc:
        fail(str(exc))
    except OSError as exc:
        fail(f"{type(exc).__name__}: {exc}", EXIT_UNAVAILABLE)


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")
