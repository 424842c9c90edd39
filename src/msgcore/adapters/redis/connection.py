"""Redis connections that keep cancellations and pack commands with hiredis.

- **Cancellations.** redis-py 8 gives every connection a 5 s ``socket_timeout`` and
  enforces it on writes with ``asyncio.wait_for``, which on Python 3.11 drops a
  cancellation that lands as the write completes. A task awaiting a Redis command then
  goes on as if never cancelled: in a loop of ``GET``s cancelled at random moments, two
  cancels in three were lost (a ``client.wait`` kept waiting, a worker's reader kept
  reading). msgcore's connections enforce the same timeout with ``asyncio.timeout``,
  which does not lose them.
- **Packing.** redis-py's asyncio connections pack every command in Python (an encode
  and a bytes join per argument) even when hiredis is installed; only its sync
  connections use hiredis's packer. msgcore's store scripts pass tens of arguments per
  job, so msgcore's pools use redis-py's own ``HiredisRespSerializer`` on their asyncio
  connections too (measured in docs/benchmarks.md, "Job tracking").

Every msgcore pool (the broker's, the job store's, ``msgcore.ops``') uses these classes.
"""

from __future__ import annotations

import asyncio
import sys
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
from redis.exceptions import TimeoutError as RedisTimeoutError
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


# Python 3.12's wait_for is built on asyncio.timeout and keeps cancellations.
_WAIT_FOR_LOSES_CANCELS = sys.version_info < (3, 12)


class _CancelSafeSend(AbstractConnection):
    """Writes bounded by ``asyncio.timeout`` instead of redis-py's ``asyncio.wait_for``."""

    async def send_packed_command(
        self, command: bytes | str | Iterable[bytes], check_health: bool = True
    ) -> None:
        limit = self.socket_timeout
        if not limit or not _WAIT_FOR_LOSES_CANCELS:
            await super().send_packed_command(command, check_health)
            return
        # Without a socket_timeout redis-py writes without wait_for; the limit applies
        # here instead. One command at a time uses a connection, so nothing else reads
        # the attribute meanwhile.
        self.socket_timeout = None
        try:
            async with asyncio.timeout(limit):
                await super().send_packed_command(command, check_health)
        except TimeoutError:
            # redis-py has dropped the connection (a write cut short cannot go on)
            raise RedisTimeoutError("Timeout writing to socket") from None
        finally:
            self.socket_timeout = limit


class CancelSafeConnection(_CancelSafeSend, Connection):
    """A TCP connection (``redis://``) without hiredis."""


class CancelSafeSSLConnection(_CancelSafeSend, SSLConnection):
    """A TLS connection (``rediss://``) without hiredis."""


class CancelSafeUnixConnection(_CancelSafeSend, UnixDomainSocketConnection):
    """A Unix socket connection (``unix://``) without hiredis."""


class HiredisConnection(_CancelSafeSend, _HiredisPacking, Connection):
    """A TCP connection (``redis://``)."""


class HiredisSSLConnection(_CancelSafeSend, _HiredisPacking, SSLConnection):
    """A TLS connection (``rediss://``)."""


class HiredisUnixConnection(_CancelSafeSend, _HiredisPacking, UnixDomainSocketConnection):
    """A Unix socket connection (``unix://``)."""


_PACKED: dict[str, type[AbstractConnection]] = {
    "redis": HiredisConnection,
    "rediss": HiredisSSLConnection,
    "unix": HiredisUnixConnection,
}
_PLAIN: dict[str, type[AbstractConnection]] = {
    "redis": CancelSafeConnection,
    "rediss": CancelSafeSSLConnection,
    "unix": CancelSafeUnixConnection,
}


def connection_class_for(url: str) -> type[AbstractConnection] | None:
    """The connection class for ``url``'s scheme (packing with hiredis where it is
    installed), or None (redis-py's default) for a scheme redis-py would refuse anyway."""
    by_scheme = _PACKED if HIREDIS_AVAILABLE else _PLAIN
    return by_scheme.get(urlsplit(url).scheme.lower())
