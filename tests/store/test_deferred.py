"""DueLater: keys fire once their wait is over, in order, unless discarded first."""

from __future__ import annotations

import asyncio

from msgcore.store.deferred import DueLater


async def test_keys_fire_after_their_wait_in_order_unless_discarded() -> None:
    loop = asyncio.get_running_loop()
    fired: list[tuple[str, float]] = []
    due = DueLater(0.1, lambda key: fired.append((key, loop.time())))
    began = loop.time()
    due.add("a")
    due.add("b")
    due.add("c")
    assert "b" in due
    assert due.discard("b") is True and due.discard("b") is False
    await asyncio.sleep(0.05)
    due.add("d")  # due 0.05 s after a and c
    due.add("a")  # waits again, from now: after d
    assert fired == []
    await asyncio.sleep(0.3)
    assert [key for key, _ in fired] == ["c", "d", "a"]
    c_at, d_at, a_at = (at - began for _, at in fired)
    assert 0.1 <= c_at < d_at and 0.15 <= d_at <= a_at
    assert "a" not in due


async def test_clear_forgets_every_key() -> None:
    fired: list[str] = []
    due = DueLater(0.05, fired.append)
    due.add("a")
    due.clear()
    await asyncio.sleep(0.15)
    assert fired == [] and "a" not in due
    due.add("b")  # usable again
    await asyncio.sleep(0.15)
    assert fired == ["b"]


async def test_a_key_whose_call_fails_does_not_hold_up_the_next() -> None:
    fired: list[str] = []

    def fire(key: str) -> None:
        if key == "bad":
            raise RuntimeError("boom")
        fired.append(key)

    due = DueLater(0.05, fire)
    due.add("bad")
    due.add("good")
    await asyncio.sleep(0.2)
    assert fired == ["good"]
