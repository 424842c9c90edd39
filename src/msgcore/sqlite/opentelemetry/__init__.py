from msgcore.sqlite.opentelemetry.middleware import SqliteTelemetryMiddleware
from msgcore.sqlite.opentelemetry.provider import SqliteTelemetrySettingsProvider

__all__ = ("SqliteTelemetryMiddleware", "SqliteTelemetrySettingsProvider")
