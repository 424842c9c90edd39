"""A TCP proxy that a fault test puts between a process and its broker, and then breaks.

The process under test is given the proxy's address instead of the server's
(``FaultProxy.url``). The test can then, at a moment of its choosing:

- ``cut()``: abort every open connection, both ways, as a server restart or a network
  failure would (the peers see a reset, not a polite close);
- ``refuse(True)``: abort new connections as soon as they arrive, so that the server
  looks down until ``refuse(False)``;
- ``stall()``: stop passing bytes on every open connection, without closing it, as a
  network partition or a dead peer would (nothing tells either side); new connections
  work.

Only the connections of the process under test go through it: the test's own clients
talk to the server directly, and other tests are untouched (no server restart, no
``CLIENT KILL`` or ``rabbitmqctl``). It runs its own event loop in a thread, so it
serves child processes and the test's loop alike.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["FaultProxy"]


class FaultProxy:
    def __init__(self, upstream_url: str) -> None:
        parts = urlsplit(upstream_url)
        if parts.hostname is None or parts.port is None:
            raise ValueError(f"a proxy needs a host and port in the URL: {parts.scheme}://…")
        self._upstream_url = upstream_url
        self._upstream = (parts.hostname, parts.port)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._open: set[tuple[asyncio.StreamWriter, asyncio.StreamWriter]] = set()
        self._stalled: set[asyncio.StreamWriter] = set()
        self._refusing = False
        self.accepted = 0
        """Connections made through the proxy so far (refused ones not counted)."""
        self.port = 0

    # -- control, from the test's thread -------------------------------------------------

    def start(self) -> FaultProxy:
        self._thread.start()
        self._run(self._listen())
        return self

    def url(self) -> str:
        """The upstream URL with the proxy's address in place of the server's."""
        parts = urlsplit(self._upstream_url)
        netloc = parts.netloc.rsplit("@", 1)
        address = f"127.0.0.1:{self.port}"
        netloc = f"{netloc[0]}@{address}" if len(netloc) == 2 else address
        return urlunsplit(parts._replace(netloc=netloc))

    def cut(self) -> int:
        """Abort every open connection; how many there were."""
        count: int = self._run(self._cut())
        return count

    def stall(self) -> int:
        """Freeze every open connection (until ``cut()``); how many there were."""
        count: int = self._run(self._stall())
        return count

    def refuse(self, refusing: bool) -> None:
        """While True, new connections are aborted on arrival (open ones stay: ``cut()``
        them too for a server that went down)."""
        self._refusing = refusing

    @property
    def open_connections(self) -> int:
        return len(self._open)

    def stop(self) -> None:
        if not self._thread.is_alive():
            return
        self._run(self._close())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=5)
        self._loop.close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, coro: Coroutine[Any, Any, Any]) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    # -- on the proxy's loop -------------------------------------------------------------

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self._refusing:
            writer.transport.abort()
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._upstream)
        except OSError:
            writer.transport.abort()
            return
        self.accepted += 1
        pair = (writer, up_writer)
        self._open.add(pair)
        try:
            stalled = self._stalled
            await asyncio.gather(
                _pump(reader, up_writer, stalled), _pump(up_reader, writer, stalled)
            )
        finally:
            self._open.discard(pair)
            for w in pair:
                w.transport.abort()

    async def _cut(self) -> int:
        pairs = list(self._open)
        for client, upstream in pairs:
            client.transport.abort()
            upstream.transport.abort()
        return len(pairs)

    async def _stall(self) -> int:
        pairs = list(self._open)
        for client, upstream in pairs:
            self._stalled.update((client, upstream))
        return len(pairs)

    async def _close(self) -> None:
        if self._server is not None:
            self._server.close()
        await self._cut()


async def _pump(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, stalled: set[asyncio.StreamWriter]
) -> None:
    with contextlib.suppress(OSError, asyncio.IncompleteReadError):
        while data := await reader.read(65536):
            if writer in stalled:
                continue  # a partition: what is sent never arrives
            writer.write(data)
            await writer.drain()
    # one side ended: end the other, so the pair is torn down together
    writer.transport.abort()
