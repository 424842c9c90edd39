"""Turning sqlite3 errors into msgcore's exception tree, with advice."""

from __future__ import annotations

import os
import sqlite3

from msgcore.exceptions import (
    DatabaseLockedError,
    DatabaseOpenError,
    StorageError,
    StorageFullError,
)

_LOCKED = {"SQLITE_BUSY", "SQLITE_LOCKED", "SQLITE_BUSY_SNAPSHOT", "SQLITE_BUSY_RECOVERY"}
_OPEN = {"SQLITE_CANTOPEN", "SQLITE_NOTADB", "SQLITE_READONLY", "SQLITE_PERM", "SQLITE_AUTH"}


def storage_error(exc: sqlite3.Error, *, path: str, busy_timeout: float) -> StorageError:
    """Map ``exc`` to the msgcore error a user can act on."""
    name = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc)
    if name.startswith(("SQLITE_BUSY", "SQLITE_LOCKED")) or name in _LOCKED or "locked" in text:
        return DatabaseLockedError(
            f"The SQLite database {path} stayed locked for more than busy_timeout="
            f"{busy_timeout:g}s, so this operation was not committed. Another connection "
            "holds a long write transaction: end it, or raise busy_timeout "
            "(SqliteBroker(busy_timeout=...) or ?busy_timeout= in the URL)."
        )
    if name == "SQLITE_FULL" or "disk is full" in text or "database or disk is full" in text:
        return StorageFullError(
            f"The disk holding {path} is full (SQLite: {text}). The transaction was rolled "
            "back and everything committed before it is intact: free space, then retry."
        )
    if name.startswith(tuple(_OPEN)) or "unable to open" in text or "not a database" in text:
        return DatabaseOpenError(_open_advice(path, text))
    if name.startswith("SQLITE_IOERR"):
        return StorageError(
            f"I/O error on {path} (SQLite: {text}). Check the disk and the file system; "
            "nothing from this operation was committed."
        )
    return StorageError(f"SQLite error on {path}: {text}")


def _open_advice(path: str, text: str) -> str:
    if os.path.isdir(path):
        return (
            f"{path} is a directory, not a database file (SQLite: {text}). Point the URL at "
            f"a file in it, e.g. sqlite:///{os.path.join(path, 'msgcore.db')}."
        )
    if "not a database" in text:
        return (
            f"{path} exists but is not a SQLite database (SQLite: {text}). Point the URL at "
            "a new file or at a msgcore database."
        )
    if "readonly" in text or "read-only" in text:
        return (
            f"{path} is read-only for this process (SQLite: {text}). msgcore writes to its "
            "database and to the -wal/-shm files beside it: make the file and its directory "
            "writable by this user."
        )
    return (
        f"Cannot open the SQLite database {path} (SQLite: {text}). Check that its directory "
        "exists and that this user may read and write both the directory and the file."
    )
