"""What one benchmark run measures: sizes, targets, scenarios, server addresses."""

from __future__ import annotations

import os
from dataclasses import dataclass, field

TARGET_KEYS: tuple[str, ...] = ("sqlite", "redis-list", "redis-stream", "rabbit")
"""Every broker setup the suite knows, in the order results are printed."""

SCENARIO_KEYS: tuple[str, ...] = ("A", "B", "C", "D", "E")
"""A end-to-end, B publish_batch, C request/reply, D idle CPU, E INFO-log effect."""

BASELINE = "redis-list"
"""Throughput ratios are against this target (same loop, same logging setting)."""

LOG_OFF = "off (logger=None)"
LOG_INFO = "INFO -> /dev/null"


def _env_url(*names: str, default: str) -> str:
    for name in names:
        if value := os.environ.get(name):
            return value
    return default


@dataclass(frozen=True)
class Servers:
    """Where the server brokers are; overridable with environment variables."""

    redis_url: str = field(
        default_factory=lambda: _env_url(
            "MSGCORE_BENCH_REDIS_URL", "MSGCORE_TEST_REDIS_URL", default="redis://127.0.0.1:6379"
        )
    )
    rabbit_url: str = field(
        default_factory=lambda: _env_url(
            "MSGCORE_BENCH_RABBIT_URL",
            "MSGCORE_TEST_RABBIT_URL",
            default="amqp://guest:guest@127.0.0.1:5672/",
        )
    )


@dataclass(frozen=True)
class BenchSettings:
    """Sizes of one run. ``quick()`` is the smaller variant behind ``--quick``."""

    n: int = 20_000
    """Messages per end-to-end and publish_batch measurement."""
    batch_size: int = 500
    requests: int = 2_000
    """Sequential requests per request/reply latency measurement."""
    idle_seconds: float = 10.0
    warmup: int = 500
    """Messages (or requests, capped at 100) sent before timing starts."""
    request_timeout: float = 5.0
    targets: tuple[str, ...] = TARGET_KEYS
    scenarios: tuple[str, ...] = SCENARIO_KEYS
    cross_process_servers: bool = True
    """Also measure Redis and RabbitMQ request/reply across processes."""
    repeat: int = 1
    """Runs per measurement (A, B, C, E); the median run is reported."""
    quiet_threshold_pct: float = 25.0
    """Background CPU (percent of one core) above which a measurement waits, then is flagged."""
    quiet_wait: float = 10.0
    """Longest wait, before each measurement, for the background to drop under the threshold."""

    @classmethod
    def quick(cls) -> BenchSettings:
        return cls(n=3_000, requests=300, idle_seconds=3.0, warmup=100, quiet_wait=3.0)

    @property
    def request_warmup(self) -> int:
        return min(self.warmup, 100)

    def wants(self, scenario: str, target: str | None = None) -> bool:
        return scenario in self.scenarios and (target is None or target in self.targets)
