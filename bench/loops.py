"""Event loop choice: uvloop where importable, else asyncio."""

from __future__ import annotations

import asyncio
import importlib.util
from collections.abc import Awaitable, Callable
from typing import TypeVar

T = TypeVar("T")

LOOPS: tuple[str, ...] = ("uvloop", "asyncio")


def uvloop_available() -> bool:
    return importlib.util.find_spec("uvloop") is not None


def default_loop() -> str:
    return "uvloop" if uvloop_available() else "asyncio"


def run(main: Callable[[], Awaitable[T]], loop: str) -> T:
    """Run ``main()`` to completion on a fresh event loop of the named kind."""
    if loop == "uvloop":
        import uvloop

        factory: Callable[[], asyncio.AbstractEventLoop] | None = uvloop.new_event_loop
    elif loop == "asyncio":
        factory = None
    else:
        raise ValueError(f"unknown event loop {loop!r}: choose one of {', '.join(LOOPS)}")

    async def _main() -> T:
        return await main()

    with asyncio.Runner(loop_factory=factory) as runner:
        return runner.run(_main())


def current_loop_name() -> str:
    """What actually runs the current coroutine (a check that ``run`` chose right)."""
    module = type(asyncio.get_running_loop()).__module__
    return "uvloop" if module.startswith("uvloop") else "asyncio"
