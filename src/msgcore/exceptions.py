"""msgcore's exception tree.

Every error msgcore raises on purpose is a :class:`MsgcoreError`; catch that to
handle them all. Messages say what happened and what to do next, and never carry a
password (URLs are redacted before they are formatted in).

::

    MsgcoreError
    ├── ConfigurationError
    │   ├── InvalidURLError              (also a ValueError)
    │   └── SettingsError                (a bad setting; also a ValueError)
    ├── PayloadError                     (also a ValueError)
    ├── StorageError
    │   ├── DatabaseOpenError
    │   ├── DatabaseLockedError
    │   ├── StorageFullError
    │   ├── SchemaVersionError
    │   └── StoreUnavailableError
    ├── DeliveryError
    │   ├── LeaseLostError
    │   ├── RequestTimeoutError          (also a TimeoutError)
    │   ├── PublishOutcomeUnknownError
    │   └── BrokerConnectionError        (also a ConnectionError)
    ├── JobError
    │   ├── JobFailed                    (the handler's error, from any process)
    │   ├── JobCancelledError
    │   ├── JobNotFoundError             (also a KeyError)
    │   ├── JobTimeoutError              (also a TimeoutError)
    │   └── ResultTypeError              (the result does not fit ``as_type``; a ValueError)
    ├── CacheError
    │   └── CacheKeyError                (a policy's key function failed)
    └── LockError
        ├── LockKeyError                 (no lock key in the payload; also a ValueError)
        └── LockTimeoutError             (the key stayed held; also a TimeoutError)
"""

from __future__ import annotations

__all__ = [
    "BrokerConnectionError",
    "CacheError",
    "CacheKeyError",
    "ConfigurationError",
    "DatabaseLockedError",
    "DatabaseOpenError",
    "DeliveryError",
    "InvalidURLError",
    "JobCancelledError",
    "JobError",
    "JobFailed",
    "JobNotFoundError",
    "JobTimeoutError",
    "LeaseLostError",
    "LockError",
    "LockKeyError",
    "LockTimeoutError",
    "MsgcoreError",
    "PayloadError",
    "PublishOutcomeUnknownError",
    "RequestTimeoutError",
    "ResultTypeError",
    "SchemaVersionError",
    "SettingsError",
    "StorageError",
    "StorageFullError",
    "StoreUnavailableError",
]


class MsgcoreError(Exception):
    """Base class of every error msgcore raises on purpose."""


class ConfigurationError(MsgcoreError):
    """The configuration cannot work; nothing was sent or stored."""


class InvalidURLError(ConfigurationError, ValueError):
    """A transport or store URL could not be understood."""


class SettingsError(ConfigurationError, ValueError):
    """A setting has a value msgcore cannot use (``Settings(...)`` or a ``MSGCORE_*``
    variable). The message names the field and its variable, never the value: a URL may
    carry a password. pydantic's full report is the ``__cause__``."""


class PayloadError(MsgcoreError, ValueError):
    """A payload (or a header) cannot be encoded for the transport: it is not bytes, a
    str, or a value JSON can hold after pydantic's conversions. Nothing was sent or
    stored."""


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


class StoreUnavailableError(StorageError):
    """The job store's server could not be reached (down, restarting, unreachable):
    nothing was read or written.

    A worker whose store is unavailable keeps the message it is on and waits for the
    store instead of failing the attempt (so an outage dead-letters nothing).
    """


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


class BrokerConnectionError(DeliveryError, ConnectionError):
    """A publish or request could not reach the broker, or its connection dropped
    during the call (the broker is down, restarting or unreachable).

    The message may or may not have reached the broker: a connection can drop after
    the broker took it. msgcore reconnects by itself, so the call can be made again
    once the broker is back; a job submitted with a ``job_id`` is not queued twice.
    ``server`` is the broker's URL without its password.
    """

    def __init__(self, message: str, *, server: str = "") -> None:
        super().__init__(message)
        self.server = server


class JobError(MsgcoreError):
    """A job did not end the way the caller asked for."""

    def __init__(self, message: str, *, job_id: str) -> None:
        super().__init__(message)
        self.job_id = job_id


class JobFailed(JobError):
    """The job went to the dead letters: its handler raised on every attempt, or its
    payload was invalid. ``error_type`` and ``error_message`` are the handler's error as
    the worker recorded it, in whatever process it ran."""

    def __init__(
        self,
        job_id: str,
        *,
        error_type: str | None,
        error_message: str | None,
        attempts: int,
    ) -> None:
        self.error_type = error_type
        self.error_message = error_message
        self.attempts = attempts
        what = f"{error_type}: {error_message}" if error_type else (error_message or "unknown")
        super().__init__(
            f"Job {job_id!r} failed after {attempts} attempt(s): {what}. "
            "It is in the dead letters; fix the cause and replay it or submit again.",
            job_id=job_id,
        )


class JobCancelledError(JobError):
    """The job was cancelled before a worker started it; it has no result."""


class JobNotFoundError(JobError, KeyError):
    """No record of this job id: never submitted, or expired after its retention."""

    def __str__(self) -> str:  # KeyError would quote the message
        return str(self.args[0])


class JobTimeoutError(JobError, TimeoutError):
    """The job did not finish within the timeout; it is still queued or running."""


class ResultTypeError(JobError, ValueError):
    """The job completed, but its stored result does not validate as the type asked for
    (``result(as_type=...)``). The record is unchanged: read the result without
    ``as_type``, or fix the type. pydantic's report is the ``__cause__``."""


class CacheError(MsgcoreError):
    """The result cache could not do what was asked."""


class CacheKeyError(CacheError, ValueError):
    """A cache policy's ``key`` function raised on a payload. Nothing was submitted."""


class LockError(MsgcoreError):
    """A per-key lock could not be taken or kept."""


class LockKeyError(LockError, ValueError):
    """A message has no lock key (the policy's field is missing, or its key function
    raised). No retry can fix the payload: the message goes to the dead letters."""


class LockTimeoutError(LockError, TimeoutError):
    """The key stayed held by someone else for longer than the wait allowed.

    A handler's attempt fails with it and is retried by the subscriber's retry policy."""

    def __init__(self, message: str, *, key: str, holder: str | None, waited: float) -> None:
        super().__init__(message)
        self.key = key
        self.holder = holder
        self.waited = waited

    def __str__(self) -> str:
        return str(self.args[0])
