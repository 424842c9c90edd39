from __future__ import annotations

from dataclasses import dataclass, field

from faststream._internal.configs import (
    SubscriberSpecificationConfig,
    SubscriberUsecaseConfig,
)
from faststream._internal.constants import EMPTY
from faststream.middlewares import AckPolicy

from msgcore.retry import RetryPolicy
from msgcore.sqlite.broker.config import SqliteBrokerConfig


@dataclass(kw_only=True)
class SqliteSubscriberSpecificationConfig(SubscriberSpecificationConfig):
    queue: str
    group: str


@dataclass(kw_only=True)
class SqliteSubscriberConfig(SubscriberUsecaseConfig):
    _outer_config: SqliteBrokerConfig = field(default_factory=SqliteBrokerConfig)

    queue: str
    group: str
    max_workers: int = 1
    prefetch: int = 16
    lease_seconds: float = 30.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)

    @property
    def ack_policy(self) -> AckPolicy:
        if self._ack_policy is not EMPTY:
            return self._ack_policy
        if self._outer_config.ack_policy is not EMPTY:
            return self._outer_config.ack_policy
        # A raising handler must never lose its message: retry, then dead-letter.
        return AckPolicy.NACK_ON_ERROR
