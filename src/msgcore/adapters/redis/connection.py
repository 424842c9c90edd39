"""Redis connections that pack commands with hiredis.

redis-py's asyncio connections pack every command in Python (an encode and a bytes join
per argument) even when hiredis is installed; only its sync connections use hiredis's
packer. msgcore's store scripts pass tens of arguments per job, so msgcore's pools
(the broker's and the job store's) use redis-py's own ``HiredisRespSerializer`` on
their asyncio connections too (measured in docs/benchmarks.md, "Job tracking").
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any
from urllib.parse import urlsplit

from redis.asyncio.connection import (
    AbstractConnection,
    Connection,
    SSLConnection,
    UnixDomainSocketConnection,
)
from redis.connection import HiredisRespSerializer
from redis.typing import EncodableT
from redis.utils import HIREDIS_AVAILABLE

__all__ = ["connection_class_for"]


class _HiredisPacking:
    # typed as Any: its annotations say list where it takes *args, and redis-py 8.2
    # left its __init__ unannotated (mypy --strict: an untyped call)
    _serializer: Any = HiredisRespSerializer
    _packer: Any = _serializer()

    def pack_command(self, *args: EncodableT) -> list[bytes]:
        packed: list[bytes] = self._packer.pack(*args)
        return packed

    def pack_commands(self, commands: Iterable[Iterable[EncodableT]]) -> list[bytes]:
        return [b"".join(part for command in commands for part in self._packer.pack(*command))]


class HiredisConnection(_HiredisPacking, Connection):
    """A TCP connection (``redis://``)."""


class HiredisSSLConnection(_HiredisPacking, SSLConnection):
    """A TLS connection (``rediss://``)."""


class HiredisUnixConnection(_HiredisPacking, UnixDomainSocketConnection):
    """A Unix socket connection (``unix://``)."""


_BY_SCHEME: dict[str, type[AbstractConnection]] = {
    "redis": HiredisConnection,
    "rediss": HiredisSSLConnection,
    "unix": HiredisUnixConnection,
}


def connection_class_for(url: str) -> type[AbstractConnection] | None:
    """The connection class for ``url``'s scheme, or None (redis-py's default) without
    hiredis or for a scheme redis-py would refuse anyway."""
    if not HIREDIS_AVAILABLE:
        return None
    return _BY_SCHEME.get(urlsplit(url).scheme.lower())
