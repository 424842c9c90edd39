"""The seam between ``msgcore.ops`` and one transport: what each of them implements."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from types import TracebackType
from typing import Self

from msgcore.ops.models import DeadLetter, GroupStats, Selection

__all__ = ["OpsBackend", "Prepare"]

Prepare = Callable[[Sequence[DeadLetter]], Awaitable[None]]
"""Called with dead letters about to be replayed, before they are republished."""


class OpsBackend(ABC):
    """One transport, opened from a process that runs no broker."""

    @abstractmethod
    async def open(self) -> None:
        """Connect; ``TransportUnreachableError`` if the server (or file) is not there."""

    @abstractmethod
    async def close(self) -> None: ...

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    @abstractmethod
    async def stats(self, channel: str | None) -> list[GroupStats]:
        """Every group the transport knows of (of ``channel``), sorted by channel, group."""

    async def depth(self, channel: str) -> list[GroupStats]:
        """``stats(channel)`` as a periodic reader in every worker can afford it: a
        transport whose full counts are costly leaves those out (``None``)."""
        return await self.stats(channel)

    @abstractmethod
    async def dead_letters(self, selection: Selection, limit: int) -> list[DeadLetter]:
        """Up to ``limit`` selected dead letters, oldest first."""

    @abstractmethod
    async def dead_letter(self, dead_letter_id: str) -> DeadLetter | None: ...

    @abstractmethod
    async def replay(self, selection: Selection, prepare: Prepare) -> int:
        """Republish the selected dead letters to the group each died in, attempt count
        reset, and remove them; ``prepare`` sees each batch first. How many."""

    @abstractmethod
    async def purge(self, selection: Selection) -> int:
        """Delete the selected dead letters; how many."""
