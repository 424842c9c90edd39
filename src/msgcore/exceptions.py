"""msgcore's exception tree.

Every error msgcore raises on purpose is a :class:`MsgcoreError`; catch that to
handle them all. Messages say what happened and what to do next, and never carry a
password (URLs are redacted before they are formatted in).

::

    MsgcoreError
    ├── ConfigurationError
    │   └── InvalidURLError
    ├── StorageError
    │   ├── DatabaseOpenError
    │   ├── DatabaseLockedError
    │   ├── StorageFullError
    │   └── SchemaVersionError
    └── DeliveryError
        ├── LeaseLostError
        ├── RequestTimeoutError          (also a TimeoutError)
        └── PublishOutcomeUnknownError
"""

from __future__ import annotations

__all__ = [
    "ConfigurationError",
    "DatabaseLockedError",
    "DatabaseOpenError",
    "DeliveryError",
    "InvalidURLError",
    "LeaseLostError",
    "MsgcoreError",
    "PublishOutcomeUnknownError",
    "RequestTimeoutError",
    "SchemaVersionError",
    "StorageError",
    "StorageFullError",
]


class MsgcoreError(Exception):
    """Base class of every error msgcore raises on purpose."""


class ConfigurationError(MsgcoreError):
    """The configuration cannot work; nothing was sent or stored."""


class InvalidURLError(ConfigurationError, ValueError):
    """A transport or store URL could not be understood."""


class StorageError(MsgcoreError):
    """The SQLite database refused an operation. Nothing committed was lost."""


class DatabaseOpenError(StorageError):
    """The database file cannot be opened or created (path, permissions, not a database)."""


class DatabaseLockedError(StorageError):
    """Another connection held the write lock for longer than ``busy_timeout``."""


class StorageFullError(StorageError):
    """The disk (or the database size limit) is full; the transaction was rolled back."""


class SchemaVersionError(StorageError):
    """The database was written by a newer msgcore whose schema this version cannot read."""


class DeliveryError(MsgcoreError):
    """A message could not be delivered or settled as asked."""


class LeaseLostError(DeliveryError):
    """This worker's lease on a message expired and another attempt owns it now.

    The late ack/nack was refused so it cannot overwrite the newer attempt.
    """


class RequestTimeoutError(DeliveryError, TimeoutError):
    """No reply arrived for a ``request()`` within its timeout."""


class PublishOutcomeUnknownError(DeliveryError):
    """A publish was cancelled or timed out while its commit was running.

    The message may or may not have been stored; publish again with the same
    ``message_id`` if duplicates are harmless to your consumer.
    """
