"""Taking, keeping and releasing one per-key lock on a store.

``acquire`` tries the store; while someone else holds the key it waits, woken at once
by a release in this process and otherwise re-trying with a backoff (2 ms doubling to
50 ms, never past the holder's lease), so a free key is taken quickly without a hot
loop against the store. A held lock refreshes its lease every third of it until it is
released: only a dead or stalled holder lets it run out.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
import weakref
from collections.abc import Iterator
from types import TracebackType
from typing import TYPE_CHECKING

from msgcore.exceptions import LockTimeoutError
from msgcore.tasks import cancel_and_wait

if TYPE_CHECKING:
    from msgcore.store.base import Store

__all__ = ["HeldLock", "acquire"]

logger = logging.getLogger("msgcore.locks")

_BACKOFF_MIN = 0.002
_BACKOFF_MAX = 0.05

# Releases running after their holder went away (a cancelled acquire, a failed release
# retried by nobody): referenced until done so they are not garbage-collected.
_BACKGROUND: set[asyncio.Task[None]] = set()


class _Releases:
    """The keys this event loop's acquirers wait for, each with the event a release in
    this process sets. An entry lives while someone waits for its key, so keys contended
    once do not pile up. Waiters of another store object on the same data wake too and
    simply try again."""

    def __init__(self) -> None:
        self.waiting: dict[str, tuple[asyncio.Event, int]] = {}

    @contextlib.contextmanager
    def watch(self, key: str) -> Iterator[None]:
        event, count = self.waiting.get(key) or (asyncio.Event(), 0)
        self.waiting[key] = (event, count + 1)
        try:
            yield
        finally:
            event, count = self.waiting[key]
            if count > 1:
                self.waiting[key] = (event, count - 1)
            else:
                del self.waiting[key]

    def released(self, key: str) -> asyncio.Event:
        """The event of ``key``'s next release (inside ``watch(key)``)."""
        return self.waiting[key][0]

    def wake(self, key: str) -> None:
        if (entry := self.waiting.get(key)) is not None:
            event, count = entry
            self.waiting[key] = (asyncio.Event(), count)
            event.set()


_RELEASES: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _Releases] = (
    weakref.WeakKeyDictionary()
)


def _releases() -> _Releases:
    return _RELEASES.setdefault(asyncio.get_running_loop(), _Releases())


def _wake(key: str) -> None:
    _releases().wake(key)


async def acquire(store: Store, key: str, *, holder: str, lease: float, wait: float) -> HeldLock:
    """Take ``key`` for ``lease`` seconds (refreshed while held), waiting up to ``wait``.

    Raises ``LockTimeoutError`` (naming the holder) when the key stays held.
    """
    token = uuid.uuid4().hex
    loop = asyncio.get_running_loop()
    started = loop.time()
    deadline = started + wait
    interval = _BACKOFF_MIN
    releases = _releases()
    try:
        with releases.watch(key):
            while True:
                now = time.time()
                other = await store.lock_acquire(key, token, holder=holder, lease=lease, now=now)
                if other is None:
                    return HeldLock(store, key, token, lease=lease, waited=loop.time() - started)
                remaining = deadline - loop.time()
                if remaining <= 0:
                    waited = loop.time() - started
                    raise LockTimeoutError(
                        f"The lock {key!r} is held by {other.holder} for "
                        f"{max(other.expires_at - now, 0):.1f} s more (unless released); "
                        f"gave up after waiting {waited:.1f} s. Raise the wait "
                        "(LockPolicy(wait=...) or MSGCORE_LOCKS__WAIT), or look for a holder "
                        "that runs too long.",
                        key=key,
                        holder=other.holder,
                        waited=waited,
                    )
                released = releases.released(key)
                # never sleep past the holder's lease: its lock is free from then on
                pause = min(interval, remaining, max(other.expires_at - now, 0.0) + _BACKOFF_MIN)
                try:
                    async with asyncio.timeout(pause):
                        await released.wait()
                except TimeoutError:
                    interval = min(interval * 2, _BACKOFF_MAX)
    except LockTimeoutError:
        raise
    except BaseException:
        # a cancellation (or a lost reply) can land after the store took the key for us
        _release_later(store, key, token)
        raise


def _release_later(store: Store, key: str, token: str) -> None:
    async def release() -> None:
        try:
            if await store.lock_release(key, token):
                _wake(key)
        except Exception as exc:  # its lease frees it
            logger.warning("releasing the lock %r failed: %r; it frees at its lease", key, exc)

    task = asyncio.get_running_loop().create_task(release(), name=f"msgcore-lock-release:{key}")
    _BACKGROUND.add(task)
    task.add_done_callback(_BACKGROUND.discard)


class HeldLock:
    """A lock this process holds: ``await release()``, or use it as ``async with``."""

    def __init__(self, store: Store, key: str, token: str, *, lease: float, waited: float) -> None:
        self.store = store
        self.key = key
        self.token = token
        self.lease = lease
        self.waited = waited
        """Seconds ``acquire`` waited for the key."""
        self.lost = False
        """A refresh found the lock taken over (its lease ran out while held)."""
        self._refresher: asyncio.Task[None] | None = asyncio.get_running_loop().create_task(
            self._refresh(), name=f"msgcore-lock-refresh:{key}"
        )

    def __repr__(self) -> str:
        return f"HeldLock({self.key!r}, lease={self.lease})"

    async def _refresh(self) -> None:
        while True:
            await asyncio.sleep(self.lease / 3)
            try:
                kept = await self.store.lock_extend(
                    self.key, self.token, lease=self.lease, now=time.time()
                )
            except Exception as exc:  # the next round tries again, within the lease
                logger.warning("refreshing the lock %r failed: %r", self.key, exc)
                continue
            if not kept:
                self.lost = True
                logger.error(
                    "the lock %r ran out while held (this process was silent for longer than "
                    "its %g s lease) and may be held by another now; raise the lease",
                    self.key,
                    self.lease,
                )
                return

    async def release(self, *, with_settlement: bool = False) -> None:
        """Free the key now (idempotent). A store error is logged: the lease frees it.

        ``with_settlement`` (a worker, right before its message is settled): where the
        store shares the transport's writer (SQLite), the release is queued into the
        commit of the message's ack instead of a transaction of its own, and this
        returns without waiting for it: no other message of the key starts between the
        handler's end and the ack.
        """
        refresher, self._refresher = self._refresher, None
        if refresher is None:
            return
        # a cancel landing inside a redis-py command can be lost (msgcore.tasks)
        await cancel_and_wait([refresher])
        queued = self.store.queue_lock_release(self.key, self.token) if with_settlement else None
        if queued is not None:
            queued.add_done_callback(self._released)
            return
        try:
            if await self.store.lock_release(self.key, self.token):
                _wake(self.key)
        except Exception as exc:
            self._release_failed(exc)

    def _released(self, done: asyncio.Future[bool]) -> None:
        if done.cancelled():
            return
        if (exc := done.exception()) is not None:
            self._release_failed(exc)
        elif done.result():
            _wake(self.key)

    def _release_failed(self, exc: BaseException) -> None:
        logger.warning(
            "releasing the lock %r failed: %r; it frees when its %g s lease runs out",
            self.key,
            exc,
            self.lease,
        )

    async def __aenter__(self) -> HeldLock:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.release()
