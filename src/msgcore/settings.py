"""``msgcore.Settings``: one URL picks the transport; everything else has a default.

Read from the environment with the prefix ``MSGCORE_`` (nested fields with ``__``)::

    MSGCORE_URL=redis://cache:6379/0
    MSGCORE_STORE_URL=sqlite:///./state.db
    MSGCORE_RABBIT__EXCHANGE=orders
    MSGCORE_SQLITE__BUSY_TIMEOUT=10
"""

from __future__ import annotations

from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic_settings import BaseSettings, SettingsConfigDict

from msgcore.constants import (
    DEFAULT_CACHE_LEASE_SECONDS,
    DEFAULT_CACHE_MAX_ENTRIES,
    DEFAULT_LOCK_LEASE_SECONDS,
    DEFAULT_LOCK_WAIT_SECONDS,
    DEFAULT_RESULT_TTL_SECONDS,
)
from msgcore.exceptions import ConfigurationError, InvalidURLError, SettingsError
from msgcore.timespans import LONGEST
from msgcore.urls import redact_url

__all__ = [
    "CacheSettings",
    "JobSettings",
    "LockSettings",
    "RabbitSettings",
    "RedisSettings",
    "Settings",
    "SqliteSettings",
    "TelemetrySettings",
    "Transport",
]

Transport = Literal["sqlite", "redis", "rabbit"]

_SCHEMES: dict[str, Transport] = {
    "sqlite": "sqlite",
    "sqlite3": "sqlite",
    "redis": "redis",
    "rediss": "redis",
    "amqp": "rabbit",
    "amqps": "rabbit",
}
_SERVER_SCHEMES = frozenset({"redis", "rediss", "amqp", "amqps"})


def transport_of(url: str) -> Transport:
    """Which transport a URL selects; ``InvalidURLError`` if none."""
    try:
        parts = urlsplit(url) if isinstance(url, str) else None
        if parts is not None and parts.scheme.lower() in _SERVER_SCHEMES:
            parts.port  # noqa: B018 (raises for a port that is not a number in range)
    except ValueError as exc:  # a port that is not a number, a broken [IPv6] host
        raise InvalidURLError(
            f"{redact_url(str(url))!r} is not a valid URL ({exc}): check the host and the port."
        ) from None
    scheme = parts.scheme.lower() if parts is not None else ""
    try:
        transport = _SCHEMES[scheme]
    except KeyError:
        # without "://" the redaction cannot tell a password from the rest: not shown
        what = (
            repr(redact_url(str(url)))
            if "://" in str(url)
            else "a URL without scheme:// (not shown: it may hold a password)"
        )
        raise InvalidURLError(
            f"Cannot pick a transport for {what}: use sqlite:///path.db, "
            "redis://host:6379/0 or amqp://user:password@host:5672/ (MSGCORE_URL)."
        ) from None
    database = parts.path.strip("/") if parts is not None else ""
    if transport == "redis" and database and not database.isdigit():
        # redis-py would fall back to database 0 without a word
        raise InvalidURLError(
            f"{redact_url(url)!r}: the path of a Redis URL is the database number "
            "(redis://host:6379/0); nothing else may follow the host."
        )
    return transport


class _Section(BaseModel):
    # inf and NaN are no durations: Redis cannot take them as milliseconds, and a NaN
    # deadline never comes
    model_config = ConfigDict(allow_inf_nan=False)


class SqliteSettings(_Section):
    busy_timeout: float = Field(5.0, ge=0, description="Seconds a write waits for the lock.")
    min_poll_interval: float = Field(0.001, gt=0)
    max_poll_interval: float = Field(0.1, gt=0)
    transactional_publish: bool = True


class RedisSettings(_Section):
    stream_prefix: str = Field("msgcore:", description="Prefix of every stream and key.")
    polling_interval_ms: int = Field(100, gt=0, description="XREADGROUP block time.")
    maxlen: int | None = Field(None, description="Approximate stream cap (None: unbounded).")


class RabbitSettings(_Section):
    exchange: str = Field("msgcore", description="The durable topic exchange channels use.")
    prefetch: int = Field(32, gt=0, description="Unacked messages per consumer channel.")
    connect_timeout: float = Field(
        10.0,
        gt=0,
        le=3600,
        description="Seconds a connect waits for RabbitMQ to answer (a server that takes "
        "the TCP connection but never speaks AMQP would hang it for good).",
    )


class JobSettings(_Section):
    track: bool = Field(
        True, description="Record the life of jobs submitted with a job id (workers)."
    )
    result_ttl: float | None = Field(
        DEFAULT_RESULT_TTL_SECONDS,
        gt=0,
        le=LONGEST,
        description="Seconds a finished job's record and result are kept (None: forever).",
    )


class CacheSettings(_Section):
    enabled: bool = Field(
        True,
        description="Use the result cache of handlers declared with cache= (False: "
        "clients submit everything and workers neither read nor fill the cache).",
    )
    ttl: float | None = Field(
        DEFAULT_RESULT_TTL_SECONDS,
        gt=0,
        le=LONGEST,
        description="Seconds an entry is kept unless its CachePolicy says (None: forever).",
    )
    max_entries: int | None = Field(
        DEFAULT_CACHE_MAX_ENTRIES,
        ge=1,
        description="Entries kept per channel unless its CachePolicy says; oldest evicted.",
    )
    lease: float = Field(
        DEFAULT_CACHE_LEASE_SECONDS,
        gt=0,
        le=LONGEST,
        description="Seconds a queued job holds its key for single-flight (refreshed "
        "while it runs).",
    )


class LockSettings(_Section):
    wait: float = Field(
        DEFAULT_LOCK_WAIT_SECONDS,
        ge=0,
        le=LONGEST,
        description="Seconds a handler waits for its key's lock unless its LockPolicy says; "
        "then the attempt fails with LockTimeoutError and is retried.",
    )
    lease: float = Field(
        DEFAULT_LOCK_LEASE_SECONDS,
        gt=0,
        le=LONGEST,
        description="Seconds a held lock outlives a silent holder (refreshed while it is "
        "held, so only a dead or stalled process lets it run out).",
    )


class TelemetrySettings(_Section):
    enabled: bool = Field(
        True,
        description="Trace brokers and clients once OpenTelemetry is set up (False: never).",
    )
    exporter: str | None = Field(
        None,
        description="Set up tracing by itself: otlp, console or memory (default: only when "
        "msgcore.telemetry.setup() was called, OTEL_EXPORTER_OTLP_ENDPOINT is set or the "
        "application configured OpenTelemetry).",
    )
    service_name: str | None = Field(
        None, description="service.name of the spans (default OTEL_SERVICE_NAME, msgcore)."
    )
    metrics: bool = Field(
        True,
        description="Also record metrics when msgcore sets up telemetry by itself (False: "
        "traces only; a histogram recording per message costs about as much as a span).",
    )
    queue_depth_interval: float = Field(
        15.0,
        ge=0,
        description="Seconds between a worker's readings of its channels' queue depth for "
        "the msgcore.queue.depth gauge (0: not read; each reading is one stats query per "
        "channel on the transport).",
    )


class Settings(BaseSettings):
    """Where msgcore runs. ``Settings()`` reads ``MSGCORE_*`` environment variables."""

    model_config = SettingsConfigDict(
        env_prefix="MSGCORE_",
        env_nested_delimiter="__",
        extra="ignore",
        allow_inf_nan=False,
        # validation errors must not echo values: URLs carry passwords
        hide_input_in_errors=True,
    )

    url: str = "sqlite:///./msgcore.db"
    """The transport: ``sqlite://``, ``redis://`` or ``amqp://``."""
    store_url: str | None = None
    """Where job state and the result cache live (default: beside the transport)."""
    request_timeout: float = Field(30.0, gt=0)
    """Default timeout of request/reply on every transport."""
    log_messages: bool = True
    """FastStream's per-message log lines (they cost throughput; see docs/benchmarks.md)."""
    gc_freeze: bool = True
    """Once an app from ``create_app`` runs as a service (``faststream run``) and has
    started, keep the objects its imports and start-up made out of full garbage collections
    (``msgcore.freeze_startup_heap``): shorter pauses of every handler in the process
    (docs/declare-once.md)."""

    sqlite: SqliteSettings = Field(default_factory=SqliteSettings)
    redis: RedisSettings = Field(default_factory=RedisSettings)
    rabbit: RabbitSettings = Field(default_factory=RabbitSettings)
    jobs: JobSettings = Field(default_factory=JobSettings)
    cache: CacheSettings = Field(default_factory=CacheSettings)
    locks: LockSettings = Field(default_factory=LockSettings)
    telemetry: TelemetrySettings = Field(default_factory=TelemetrySettings)

    def __init__(self, **values: Any) -> None:
        try:
            super().__init__(**values)
        except ValidationError as exc:
            raise SettingsError(describe_invalid(exc)) from exc
        # Checked here rather than in a pydantic validator: a ValidationError would
        # print the rejected URL, password included.
        for url in (self.url, self.store_url):
            if url is not None:
                transport_of(url)

    @property
    def transport(self) -> Transport:
        return transport_of(self.url)

    @property
    def safe_url(self) -> str:
        """The URL with its password replaced, for logs and output."""
        return redact_url(self.url)

    def __repr_args__(self):  # type: ignore[no-untyped-def]
        for key, value in super().__repr_args__():
            if key in {"url", "store_url"} and isinstance(value, str):
                yield key, redact_url(value)
            else:
                yield key, value


def first_problem(exc: ValidationError) -> tuple[list[str], str]:
    """Where pydantic's first error is (the field path) and what it says, with how many
    more there are; the rejected value is left out (it may hold a password)."""
    problems = exc.errors(include_url=False, include_input=False)
    first = problems[0]
    more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
    return [str(part) for part in first["loc"]], f"{first['msg']}{more}"


def check_settings(value: Any, where: str) -> None:
    """``ConfigurationError`` unless ``value`` is a ``Settings`` (a str or dict failed
    later as a bare AttributeError)."""
    if not isinstance(value, Settings):
        raise ConfigurationError(
            f"{where} takes a msgcore.Settings, e.g. Settings() (MSGCORE_* from the "
            f"environment) or Settings(url=...), got {type(value).__name__}"
        )


def describe_invalid(exc: ValidationError) -> str:
    """The first bad setting, by its field and environment variable, with pydantic's
    reason and what to do; the value itself is left out (it may hold a password)."""
    path, problem = first_problem(exc)
    if not path:  # a rule across settings
        return f"invalid MSGCORE_* settings: {problem}"
    variable = "MSGCORE_" + "__".join(part.upper() for part in path)
    return (
        f"invalid setting {'.'.join(path)} ({variable}): {problem}; "
        "fix the argument or the environment variable (docs/declare-once.md, 'Settings')"
    )
