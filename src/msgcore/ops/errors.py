"""Errors of ``msgcore.ops`` beyond msgcore's own tree."""

from __future__ import annotations

from msgcore.exceptions import StorageError

__all__ = ["TransportUnreachableError"]


class TransportUnreachableError(StorageError):
    """The transport's server (or file) did not answer: nothing was read or changed.

    A ``StorageError``, so that callers treating "the store is unavailable" alike (the
    CLI's exit code 3) treat this the same way.
    """
