from msgcore.sqlite.prometheus.middleware import SqlitePrometheusMiddleware
from msgcore.sqlite.prometheus.provider import SqliteMetricsSettingsProvider

__all__ = ("SqliteMetricsSettingsProvider", "SqlitePrometheusMiddleware")
