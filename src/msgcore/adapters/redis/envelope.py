"""The envelope msgcore writes into a stream entry's ``__data__`` field.

FastStream's ``BinaryMessageFormatV1`` (0.7.8) prefixes a ``str`` header with its
length in *characters* but writes its UTF-8 *bytes*: one non-ASCII header value
("zürich") shifts every later offset and the whole message then parses as a raw body
without headers. ``Utf8BinaryMessageFormat`` writes the same v1 layout with byte
lengths, so FastStream's own parser (and any FastStream consumer) reads it unchanged.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from faststream.redis.parser import BinaryMessageFormatV1
from faststream.redis.parser.binary import FastStreamMessageVersion
from typing_extensions import override

from msgcore.exceptions import PayloadError

if TYPE_CHECKING:
    from fast_depends.library.serializer import SerializerProto
    from faststream._internal.basic_types import SendableMessage
    from faststream._internal.parser import CodecProto

__all__ = ["Utf8BinaryMessageFormat"]

_SHORT = struct.Struct(">H")
_INT = struct.Struct(">I")


def _utf8(value: Any) -> bytes:
    if isinstance(value, bytes):
        # read back as UTF-8 text: other bytes would make the whole entry unreadable (it
        # would parse as a raw body without headers, and be dead-lettered as invalid)
        try:
            value.decode()
        except UnicodeDecodeError:
            raise PayloadError(
                f"a header value is bytes that are not UTF-8 text ({value[:20]!r}): Redis "
                "stream entries carry headers as text; send a str (base64 for binary "
                "data). Nothing was sent."
            ) from None
        raw = value
    else:
        raw = str(value).encode()
    if len(raw) > 0xFFFF:
        raise PayloadError(
            f"a header key or value is {len(raw)} bytes; at most 65535 fit in a Redis "
            "stream entry's headers. Nothing was sent."
        )
    return _SHORT.pack(len(raw)) + raw


class Utf8BinaryMessageFormat(BinaryMessageFormatV1):
    """FastStream's binary envelope v1, with header lengths counted in bytes."""

    @override
    @classmethod
    async def encode(
        cls,
        *,
        message: Sequence[SendableMessage] | SendableMessage,
        reply_to: str | None,
        headers: dict[str, Any] | None,
        correlation_id: str,
        serializer: SerializerProto | None = None,
        codec: CodecProto | None = None,
    ) -> bytes:
        built = await cls.build(
            message=message,
            reply_to=reply_to,
            headers=headers,
            correlation_id=correlation_id,
            serializer=serializer,
            codec=codec,
        )
        encoded = b"".join(_utf8(k) + _utf8(v) for k, v in built.headers.items())
        # magic, version, two offsets, then the header count, the headers and the body
        headers_start = len(cls.IDENTITY_HEADER) + _SHORT.size + 2 * _INT.size
        data_start = headers_start + _SHORT.size + len(encoded)
        return b"".join(
            (
                cls.IDENTITY_HEADER,
                _SHORT.pack(FastStreamMessageVersion.v1.value),
                _INT.pack(headers_start),
                _INT.pack(data_start),
                _SHORT.pack(len(built.headers)),
                encoded,
                built.data,
            )
        )
