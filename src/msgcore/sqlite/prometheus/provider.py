from __future__ import annotations

from typing import TYPE_CHECKING

from faststream.prometheus import ConsumeAttrs, MetricsSettingsProvider
from typing_extensions import override

from msgcore.sqlite.client.base import StoredMessage
from msgcore.sqlite.response import SqlitePublishCommand

if TYPE_CHECKING:
    from faststream.message.message import StreamMessage


class SqliteMetricsSettingsProvider(MetricsSettingsProvider[StoredMessage, SqlitePublishCommand]):
    __slots__ = ("messaging_system",)

    def __init__(self) -> None:
        self.messaging_system = "sqlite"

    @override
    def get_consume_attrs_from_message(self, msg: StreamMessage[StoredMessage]) -> ConsumeAttrs:
        return {
            "destination_name": msg.raw_message.queue,
            "message_size": len(msg.body),
            "messages_count": 1,
        }

    @override
    def get_publish_destination_name_from_cmd(self, cmd: SqlitePublishCommand) -> str:
        return cmd.destination
