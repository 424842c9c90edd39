"""msgcore: declare FastStream subscribers once, run them on SQLite, Redis or RabbitMQ."""

import logging

from msgcore.app import create_app, create_broker
from msgcore.exceptions import (
    ConfigurationError,
    DatabaseLockedError,
    DatabaseOpenError,
    DeliveryError,
    InvalidURLError,
    LeaseLostError,
    MsgcoreError,
    PublishOutcomeUnknownError,
    RequestTimeoutError,
    SchemaVersionError,
    StorageError,
    StorageFullError,
)
from msgcore.message import Message, MessageView
from msgcore.retry import RetryPolicy
from msgcore.router import PublisherHandle, Router
from msgcore.settings import RabbitSettings, RedisSettings, Settings, SqliteSettings
from msgcore.urls import redact_url

__version__ = "0.1.0"

# A library logs through its logger and lets the application decide where it goes.
logging.getLogger("msgcore").addHandler(logging.NullHandler())

__all__ = [
    "ConfigurationError",
    "DatabaseLockedError",
    "DatabaseOpenError",
    "DeliveryError",
    "InvalidURLError",
    "LeaseLostError",
    "Message",
    "MessageView",
    "MsgcoreError",
    "PublishOutcomeUnknownError",
    "PublisherHandle",
    "RabbitSettings",
    "RedisSettings",
    "RequestTimeoutError",
    "RetryPolicy",
    "Router",
    "SchemaVersionError",
    "Settings",
    "SqliteSettings",
    "StorageError",
    "StorageFullError",
    "__version__",
    "create_app",
    "create_broker",
    "redact_url",
]
