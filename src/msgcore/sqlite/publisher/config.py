from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from faststream._internal.configs import (
    PublisherSpecificationConfig,
    PublisherUsecaseConfig,
)

from msgcore.sqlite.broker.config import SqliteBrokerConfig


@dataclass(kw_only=True)
class SqlitePublisherSpecificationConfig(PublisherSpecificationConfig):
    queue: str


@dataclass(kw_only=True)
class SqlitePublisherConfig(PublisherUsecaseConfig):
    _outer_config: SqliteBrokerConfig = field(default_factory=SqliteBrokerConfig)

    queue: str
    headers: dict[str, Any] | None = None
    priority: int = 0
