"""msgcore: declare FastStream subscribers once, run them on SQLite, Redis or RabbitMQ."""

import logging

from msgcore import telemetry
from msgcore.app import create_app, create_broker
from msgcore.cache import CachePolicy, CacheStats
from msgcore.exceptions import (
    BrokerConnectionError,
    CacheError,
    CacheKeyError,
    ConfigurationError,
    DatabaseLockedError,
    DatabaseOpenError,
    DeliveryError,
    InvalidURLError,
    JobCancelledError,
    JobError,
    JobFailed,
    JobNotFoundError,
    JobTimeoutError,
    LeaseLostError,
    LockError,
    LockKeyError,
    LockTimeoutError,
    MsgcoreError,
    PayloadError,
    PublishOutcomeUnknownError,
    RequestTimeoutError,
    ResultTypeError,
    SchemaVersionError,
    SettingsError,
    StorageError,
    StorageFullError,
    StoreUnavailableError,
)
from msgcore.heap import freeze_startup_heap
from msgcore.jobs import ALL, FIRST, Client, Job, ReturnWhen, SyncClient, SyncJob, WaitResult
from msgcore.locks import HeldLock, LockPolicy
from msgcore.message import Message, MessageView
from msgcore.retry import RetryPolicy
from msgcore.router import PublisherHandle, Router
from msgcore.settings import (
    CacheSettings,
    JobSettings,
    LockSettings,
    RabbitSettings,
    RedisSettings,
    Settings,
    SqliteSettings,
    TelemetrySettings,
)
from msgcore.store import JobRecord, JobStatus, Store, open_store, store_for
from msgcore.store.locks import LockHolder
from msgcore.urls import redact_url

__version__ = "0.1.0"

# A library logs through its logger and lets the application decide where it goes.
logging.getLogger("msgcore").addHandler(logging.NullHandler())

__all__ = [
    "ALL",
    "FIRST",
    "BrokerConnectionError",
    "CacheError",
    "CacheKeyError",
    "CachePolicy",
    "CacheSettings",
    "CacheStats",
    "Client",
    "ConfigurationError",
    "DatabaseLockedError",
    "DatabaseOpenError",
    "DeliveryError",
    "HeldLock",
    "InvalidURLError",
    "Job",
    "JobCancelledError",
    "JobError",
    "JobFailed",
    "JobNotFoundError",
    "JobRecord",
    "JobSettings",
    "JobStatus",
    "JobTimeoutError",
    "LeaseLostError",
    "LockError",
    "LockHolder",
    "LockKeyError",
    "LockPolicy",
    "LockSettings",
    "LockTimeoutError",
    "Message",
    "MessageView",
    "MsgcoreError",
    "PayloadError",
    "PublishOutcomeUnknownError",
    "PublisherHandle",
    "RabbitSettings",
    "RedisSettings",
    "RequestTimeoutError",
    "ResultTypeError",
    "RetryPolicy",
    "ReturnWhen",
    "Router",
    "SchemaVersionError",
    "Settings",
    "SettingsError",
    "SqliteSettings",
    "StorageError",
    "StorageFullError",
    "Store",
    "StoreUnavailableError",
    "SyncClient",
    "SyncJob",
    "TelemetrySettings",
    "WaitResult",
    "__version__",
    "create_app",
    "create_broker",
    "freeze_startup_heap",
    "open_store",
    "redact_url",
    "store_for",
    "telemetry",
]
