"""``freeze_startup_heap`` and the app hook that runs it (``Settings.gc_freeze``)."""

from __future__ import annotations

import asyncio
import gc
import signal
import weakref
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from faststream import TestApp

from msgcore import Router, Settings, create_app, freeze_startup_heap
from msgcore import heap as heap_module


@pytest.fixture
def unfrozen(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """A process that has not frozen its heap yet; whatever the test froze is thawed."""
    gc.unfreeze()  # an earlier freeze in this process would count as ours
    monkeypatch.setattr(heap_module, "_FROZEN", [False])
    try:
        yield
    finally:
        gc.unfreeze()


def _app(tmp_path: Path, **values: Any) -> Any:
    router = Router()

    @router.subscriber("heap.work")
    async def work(n: int) -> int:
        return n

    return create_app(router, settings=Settings(url=f"sqlite:///{tmp_path / 'h.db'}", **values))


@pytest.mark.usefixtures("unfrozen")
def test_freezes_what_is_alive_once_per_process() -> None:
    kept = [object() for _ in range(10)]
    frozen = freeze_startup_heap()
    assert frozen > 1000  # the imports' objects, at least
    assert gc.get_freeze_count() == frozen
    assert freeze_startup_heap() == 0  # the second call leaves the heap alone
    assert gc.get_freeze_count() == frozen
    assert kept


@pytest.mark.usefixtures("unfrozen")
def test_collects_garbage_before_freezing() -> None:
    class Cycle:
        other: object

    first, second = Cycle(), Cycle()
    first.other, second.other = second, first
    watch = weakref.ref(first)
    del first, second
    assert watch() is not None  # a cycle: only a collection frees it
    freeze_startup_heap()
    assert watch() is None  # collected, not frozen for ever


async def _run_until_started(app: Any) -> None:
    """``app.run()`` (what ``faststream run`` calls) until its after-startup hooks ran, then
    its exit; the signal handlers it installs are taken back."""
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    running = asyncio.create_task(app.run())
    try:
        for _ in range(500):
            if getattr(app, "running", False) or running.done():
                break
            await asyncio.sleep(0.01)
        assert getattr(app, "running", False), "the app did not start"
    finally:
        app.exit()
        await asyncio.wait_for(running, 30)
        loop = asyncio.get_running_loop()
        for sig, handler in before.items():
            loop.remove_signal_handler(sig)
            signal.signal(sig, handler)


@pytest.mark.usefixtures("unfrozen")
async def test_a_running_app_freezes_after_startup(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert gc.get_freeze_count() == 0
    await _run_until_started(app)
    assert gc.get_freeze_count() > 1000
    assert heap_module._FROZEN == [True]


@pytest.mark.usefixtures("unfrozen")
async def test_an_app_under_testapp_does_not_freeze(tmp_path: Path) -> None:
    """A test process's heap is not the app's: ``TestApp`` only starts the app."""
    async with TestApp(_app(tmp_path)):  # type: ignore[arg-type]
        assert gc.get_freeze_count() == 0
    assert heap_module._FROZEN == [False]


@pytest.mark.usefixtures("unfrozen")
async def test_gc_freeze_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGCORE_GC_FREEZE", "false")
    assert Settings().gc_freeze is False
    await _run_until_started(_app(tmp_path, gc_freeze=False))
    assert gc.get_freeze_count() == 0
    assert heap_module._FROZEN == [False]
