"""``freeze_startup_heap`` and the app hook that runs it (``Settings.gc_freeze``)."""

from __future__ import annotations

import gc
import weakref
from collections.abc import Iterator
from pathlib import Path

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


def _app(tmp_path: Path, **values: object) -> object:
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


@pytest.mark.usefixtures("unfrozen")
async def test_an_app_freezes_after_startup(tmp_path: Path) -> None:
    app = _app(tmp_path)
    assert gc.get_freeze_count() == 0
    async with TestApp(app):  # type: ignore[arg-type]
        assert gc.get_freeze_count() > 1000
    assert heap_module._FROZEN == [True]


@pytest.mark.usefixtures("unfrozen")
async def test_gc_freeze_off(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MSGCORE_GC_FREEZE", "false")
    assert Settings().gc_freeze is False
    app = _app(tmp_path, gc_freeze=False)
    async with TestApp(app):  # type: ignore[arg-type]
        assert gc.get_freeze_count() == 0
    assert heap_module._FROZEN == [False]
