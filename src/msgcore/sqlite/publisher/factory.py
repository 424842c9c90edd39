from __future__ import annotations

from typing import TYPE_CHECKING, Any

from msgcore.sqlite.publisher.config import (
    SqlitePublisherConfig,
    SqlitePublisherSpecificationConfig,
)
from msgcore.sqlite.publisher.specification import SqlitePublisherSpecification
from msgcore.sqlite.publisher.usecase import SqlitePublisher

if TYPE_CHECKING:
    from msgcore.sqlite.broker.config import SqliteBrokerConfig


def create_publisher(
    *,
    queue: str,
    headers: dict[str, Any] | None,
    priority: int,
    broker_config: SqliteBrokerConfig,
    schema_: Any | None,
    title_: str | None,
    description_: str | None,
    include_in_schema: bool,
) -> SqlitePublisher:
    config = SqlitePublisherConfig(
        queue=queue, headers=headers, priority=priority, _outer_config=broker_config
    )
    specification = SqlitePublisherSpecification(
        _outer_config=broker_config,
        specification_config=SqlitePublisherSpecificationConfig(
            queue=queue,
            schema_=schema_,
            title_=title_,
            description_=description_,
            include_in_schema=include_in_schema,
        ),
    )
    return SqlitePublisher(config, specification)
