"""Parsing and redacting transport URLs."""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import parse_qsl, urlsplit

from msgcore.exceptions import InvalidURLError

# The password runs to the last "@" of the URL's token: a password holding a raw "@" or
# "/" (which clients parse in different ways) is hidden whole, never in part.
_PASSWORD_IN_URL = re.compile(
    r"(?P<head>[a-zA-Z][a-zA-Z0-9+.-]*://[^:/?#@\s]*:)\S*(?=@[^@\s]*(?:\s|$))"
)


# redis-py and others also take the password as a query parameter (?password=...)
_PASSWORD_PARAMETER = re.compile(r"(?P<head>[?&](?:password|passwd|pwd)=)[^&#\s]*", re.IGNORECASE)


def redact_url(url: str) -> str:
    """Return ``url`` with any password replaced by ``***``.

    Works on text that merely contains URLs too (log lines, error messages).
    """
    return _PASSWORD_PARAMETER.sub(r"\g<head>***", _PASSWORD_IN_URL.sub(r"\g<head>***", url))


@dataclass(frozen=True, slots=True)
class SqliteURL:
    """A parsed ``sqlite://`` URL."""

    path: str
    """Filesystem path, or ``:memory:``."""
    options: dict[str, str]

    @property
    def is_memory(self) -> bool:
        return self.path == ":memory:"


def parse_sqlite_url(url: str) -> SqliteURL:
    """Parse ``sqlite:///relative.db``, ``sqlite:////abs/path.db`` or ``sqlite://:memory:``.

    Following SQLAlchemy's convention, three slashes start a relative path and four an
    absolute one. Query parameters are returned as options.
    """
    if not isinstance(url, str) or not url:
        raise InvalidURLError("The SQLite URL is empty: use sqlite:///path/to/file.db")
    parts = urlsplit(url)
    if parts.scheme not in {"sqlite", "sqlite3"}:
        raise InvalidURLError(
            f"{redact_url(url)!r} is not a SQLite URL: it must start with 'sqlite:///' "
            "(for example sqlite:///./msgcore.db or sqlite:////var/lib/app/msgcore.db)."
        )
    if parts.netloc == ":memory:" or parts.path in {":memory:", "/:memory:"}:
        raise InvalidURLError(
            "An in-memory SQLite database cannot be shared between connections or "
            "processes, so no worker could see the messages. Use a file, e.g. "
            "sqlite:////tmp/msgcore.db, or TestSqliteBroker for in-memory tests."
        )
    if not url.partition(":")[2].startswith("//"):
        # sqlite:x.db or sqlite:/x.db: no authority part, so the path rule below (one
        # slash dropped) would guess; sqlite:x.db became ".db"
        raise InvalidURLError(
            f"{redact_url(url)!r} is not a SQLite URL of either form: use three slashes for a "
            "relative path (sqlite:///data/msgcore.db) or four for an absolute one "
            "(sqlite:////var/lib/msgcore.db)."
        )
    if parts.netloc:
        raise InvalidURLError(
            f"{redact_url(url)!r} has a host part ({parts.hostname!r}); SQLite URLs have none. "
            "Use three slashes for a relative path (sqlite:///data/msgcore.db) or four for "
            "an absolute one (sqlite:////var/lib/msgcore.db)."
        )
    raw_path = parts.path
    if not raw_path or raw_path == "/":
        raise InvalidURLError(
            f"{redact_url(url)!r} names no database file: use sqlite:///path/to/file.db"
        )
    # sqlite:///x.db -> path "/x.db" -> relative "x.db"; sqlite:////abs -> "//abs" -> "/abs"
    path = raw_path[1:]
    options = dict(parse_qsl(parts.query, keep_blank_values=True))
    unknown = sorted(set(options) - set(SQLITE_URL_OPTIONS))
    if unknown:
        # a mistyped option would otherwise be ignored without a word
        raise InvalidURLError(
            f"{redact_url(url)!r}: unknown URL option(s) {', '.join(unknown)}; a SQLite URL "
            f"takes {', '.join(SQLITE_URL_OPTIONS)} (seconds)."
        )
    return SqliteURL(path=str(Path(path)), options=options)


SQLITE_URL_OPTIONS = ("busy_timeout", "min_poll_interval", "max_poll_interval")
"""The options a SQLite URL may carry (``?busy_timeout=2``), all in seconds."""


def sqlite_url_seconds(options: dict[str, str], name: str, default: float) -> float:
    """The URL option ``name`` as seconds (``default`` when absent)."""
    if name not in options:
        return default
    try:
        value = float(options[name])
    except ValueError:
        value = math.nan
    if not math.isfinite(value):
        raise InvalidURLError(f"URL option {name}={options[name]!r} is not a number of seconds.")
    return value
