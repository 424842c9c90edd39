"""Turning stored rows into ``SqliteMessage``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from faststream.message import decode_message

from msgcore.sqlite.message import SqliteMessage

if TYPE_CHECKING:
    from faststream._internal.basic_types import DecodedMessage
    from faststream.message import StreamMessage

    from msgcore.sqlite.client.base import StoredMessage


class SqliteParser:
    __slots__ = ()

    async def parse_message(self, msg: StoredMessage) -> SqliteMessage:
        return SqliteMessage(
            raw_message=msg,
            body=msg.body,
            headers=msg.headers,
            reply_to=msg.reply_to,
            content_type=msg.content_type,
            correlation_id=msg.correlation_id,
            message_id=msg.message_id,
        )

    async def decode_message(self, msg: StreamMessage[Any]) -> DecodedMessage:
        return decode_message(msg)
