from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream._internal.endpoint.subscriber import SubscriberSpecification
from faststream.specification.asyncapi.utils import resolve_payloads
from faststream.specification.schema import Message, Operation, SubscriberSpec

from msgcore.sqlite.broker.config import SqliteBrokerConfig
from msgcore.sqlite.subscriber.config import SqliteSubscriberSpecificationConfig

if TYPE_CHECKING:
    from faststream._internal.endpoint.subscriber.call_item import CallsCollection


class SqliteSubscriberSpecification(
    SubscriberSpecification[SqliteBrokerConfig, SqliteSubscriberSpecificationConfig],
):
    __slots__ = ()

    def __init__(
        self,
        _outer_config: SqliteBrokerConfig,
        specification_config: SqliteSubscriberSpecificationConfig,
        calls: CallsCollection[Any],
    ) -> None:
        super().__init__(_outer_config, specification_config, calls)

    @property
    def queue(self) -> str:
        return f"{self._outer_config.prefix}{self.config.queue}"

    @property
    def channel_labels(self) -> list[str]:
        return [f"{self.queue}/{self.config.group}"]

    def get_schema(self) -> dict[str, SubscriberSpec]:
        payloads = self.get_payloads()
        return {
            self.name: SubscriberSpec(
                address=self.queue,
                description=self.description,
                operation=Operation(
                    message=Message(
                        title=f"{self.name}:Message",
                        payload=resolve_payloads(payloads),
                    ),
                    bindings=None,
                ),
                bindings=None,
            ),
        }
