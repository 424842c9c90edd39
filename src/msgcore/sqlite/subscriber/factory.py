from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream._internal.endpoint.subscriber.call_item import CallsCollection

from msgcore.sqlite.subscriber.config import (
    SqliteSubscriberConfig,
    SqliteSubscriberSpecificationConfig,
)
from msgcore.sqlite.subscriber.specification import SqliteSubscriberSpecification
from msgcore.sqlite.subscriber.usecase import SqliteSubscriber

if TYPE_CHECKING:
    from faststream.middlewares import AckPolicy

    from msgcore.retry import RetryPolicy
    from msgcore.sqlite.broker.config import SqliteBrokerConfig


def create_subscriber(
    *,
    queue: str,
    group: str,
    max_workers: int,
    prefetch: int | None,
    lease_seconds: float,
    retry: RetryPolicy,
    ack_policy: AckPolicy,
    no_reply: bool,
    config: SqliteBrokerConfig,
    title_: str | None,
    description_: str | None,
    include_in_schema: bool,
) -> SqliteSubscriber:
    if not queue:
        raise ValueError("A SQLite subscriber needs a queue name: @broker.subscriber('orders')")
    if max_workers < 1:
        raise ValueError(f"max_workers must be at least 1, got {max_workers}")
    if prefetch is not None and prefetch < 0:
        raise ValueError(f"prefetch must be 0 or more, got {prefetch}")
    if lease_seconds <= 0:
        raise ValueError(f"lease_seconds must be positive, got {lease_seconds}")
    subscriber_config = SqliteSubscriberConfig(
        queue=queue,
        group=group,
        max_workers=max_workers,
        prefetch=prefetch if prefetch is not None else max(16, 2 * max_workers),
        lease_seconds=lease_seconds,
        retry=retry,
        no_reply=no_reply,
        _outer_config=config,
        _ack_policy=ack_policy,
    )
    calls = CallsCollection[Any]()
    specification = SqliteSubscriberSpecification(
        config,
        SqliteSubscriberSpecificationConfig(
            queue=queue,
            group=group,
            title_=title_,
            description_=description_,
            include_in_schema=include_in_schema,
        ),
        calls,
    )
    return SqliteSubscriber(subscriber_config, specification, calls)
