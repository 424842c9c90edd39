from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.opentelemetry import TelemetrySettingsProvider
from faststream.opentelemetry.consts import MESSAGING_DESTINATION_PUBLISH_NAME
from opentelemetry.semconv.trace import SpanAttributes
from typing_extensions import override

from msgcore.sqlite.client.base import StoredMessage
from msgcore.sqlite.response import SqlitePublishCommand

if TYPE_CHECKING:
    from faststream.message import StreamMessage


class SqliteTelemetrySettingsProvider(
    TelemetrySettingsProvider[StoredMessage, SqlitePublishCommand],
):
    __slots__ = ("messaging_system",)

    def __init__(self) -> None:
        self.messaging_system = "sqlite"

    def get_consume_attrs_from_message(self, msg: StreamMessage[StoredMessage]) -> dict[str, Any]:
        return {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            SpanAttributes.MESSAGING_MESSAGE_ID: msg.message_id,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: msg.correlation_id,
            SpanAttributes.MESSAGING_MESSAGE_PAYLOAD_SIZE_BYTES: len(msg.body),
            MESSAGING_DESTINATION_PUBLISH_NAME: msg.raw_message.queue,
        }

    @override
    def get_consume_destination_name(self, msg: StreamMessage[StoredMessage]) -> str:
        return msg.raw_message.queue

    def get_publish_attrs_from_cmd(self, cmd: SqlitePublishCommand) -> dict[str, Any]:
        return {
            SpanAttributes.MESSAGING_SYSTEM: self.messaging_system,
            SpanAttributes.MESSAGING_DESTINATION_NAME: cmd.destination,
            SpanAttributes.MESSAGING_MESSAGE_CONVERSATION_ID: cmd.correlation_id,
        }

    @override
    def get_publish_destination_name(self, cmd: SqlitePublishCommand) -> str:
        return cmd.destination
