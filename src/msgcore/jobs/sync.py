"""``msgcore.SyncClient``: ``Client``'s methods, blocking, for scripts and plain CLIs.

The async client runs on an event loop of its own in a background thread (uvloop
where available); every method hands its coroutine to that loop and blocks on the
result, so a SyncClient works from any thread, including inside another event loop's
synchronous callbacks.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Coroutine, Iterable, Iterator
from concurrent.futures import Future
from types import TracebackType
from typing import Any, Self, TypeVar

from faststream._internal.basic_types import SendableMessage

from msgcore.exceptions import ConfigurationError
from msgcore.jobs.client import Client
from msgcore.jobs.job import Job, ReturnWhen, WaitResult
from msgcore.locks.lock import HeldLock
from msgcore.settings import Settings
from msgcore.store import JobRecord, JobStatus
from msgcore.store.cache import CacheStats
from msgcore.store.locks import LockHolder

__all__ = ["SyncClient", "SyncJob"]

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    try:
        import uvloop
    except ImportError:  # Windows: plain asyncio
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class SyncJob:
    """A ``Job`` whose methods block."""

    __slots__ = ("_client", "job")

    def __init__(self, client: SyncClient, job: Job) -> None:
        self._client = client
        self.job = job

    @property
    def id(self) -> str:
        return self.job.id

    @property
    def record(self) -> JobRecord:
        return self.job.record

    @property
    def cached(self) -> bool:
        return self.job.cached

    def status(self) -> JobStatus:
        return self._client._call(self.job.status())

    def result(self, timeout: float | None = None, *, as_type: type[T] | None = None) -> Any:
        return self._client._call(self.job.result(timeout, as_type=as_type))

    def __repr__(self) -> str:
        return repr(self.job)


class SyncClient:
    """``with SyncClient() as client: job = client.submit("render", {...})``"""

    def __init__(
        self,
        url: str | None = None,
        *,
        store_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        self._client = Client(url, store_url=store_url, settings=settings)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._entered = 0

    @property
    def settings(self) -> Settings:
        return self._client.settings

    # -- lifecycle ------------------------------------------------------------------------

    def connect(self) -> None:
        if self._loop is not None:
            return
        loop = _new_loop()
        thread = threading.Thread(target=loop.run_forever, name="msgcore-sync-client", daemon=True)
        thread.start()
        self._loop, self._thread = loop, thread
        try:
            self._call(self._client.connect())
        except BaseException:
            self._stop_loop()
            raise

    def close(self) -> None:
        if self._loop is None:
            return
        try:
            self._call(self._client.close())
        finally:
            self._stop_loop()

    def _stop_loop(self) -> None:
        loop, thread = self._loop, self._thread
        self._loop = self._thread = None
        if loop is not None:
            loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(10)
        if loop is not None and not loop.is_running():
            loop.close()

    def __enter__(self) -> Self:
        self.connect()
        self._entered += 1
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        # a nested `with client:` leaves it connected for the outer block
        self._entered -= 1
        if self._entered <= 0:
            self._entered = 0
            self.close()

    def _call(self, coro: Coroutine[Any, Any, T]) -> T:
        loop = self._loop
        if loop is None:
            coro.close()
            raise ConfigurationError(
                "The SyncClient is not connected: use `with SyncClient() as client:` (or "
                "client.connect())."
            )
        future: Future[T] = asyncio.run_coroutine_threadsafe(coro, loop)
        try:
            return future.result()
        except KeyboardInterrupt:
            future.cancel()
            raise

    # -- the Client's methods -------------------------------------------------------------

    def submit(
        self,
        channel: str,
        payload: SendableMessage = None,
        *,
        job_id: str | None = None,
        delay: float | None = None,
        priority: int | None = None,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> SyncJob:
        job = self._call(
            self._client.submit(
                channel,
                payload,
                job_id=job_id,
                delay=delay,
                priority=priority,
                headers=headers,
                cache=cache,
            )
        )
        return SyncJob(self, job)

    def submit_many(
        self,
        channel: str,
        payloads: Iterable[SendableMessage],
        *,
        batch_size: int = 500,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> list[SyncJob]:
        jobs = self._call(
            self._client.submit_many(
                channel, list(payloads), batch_size=batch_size, headers=headers, cache=cache
            )
        )
        return [SyncJob(self, job) for job in jobs]

    def get_job(self, job_id: str) -> SyncJob:
        return SyncJob(self, self._call(self._client.get_job(job_id)))

    def cancel(self, job_id: str) -> bool:
        return self._call(self._client.cancel(job_id))

    def wait(
        self,
        jobs: Iterable[SyncJob | Job],
        *,
        timeout: float | None = None,
        return_when: ReturnWhen | str = ReturnWhen.ALL,
        progress: bool = False,
        raise_on_timeout: bool = False,
    ) -> WaitResult:
        if isinstance(jobs, SyncJob | Job | str) or not isinstance(jobs, Iterable):
            raise ConfigurationError(
                f"wait() takes an iterable of job handles, got {type(jobs).__name__}: "
                "wait([job]) for one job."
            )
        handles = [j.job if isinstance(j, SyncJob) else j for j in jobs]
        return self._call(
            self._client.wait(
                handles,
                timeout=timeout,
                return_when=return_when,
                progress=progress,
                raise_on_timeout=raise_on_timeout,
            )
        )

    def request(
        self,
        channel: str,
        payload: SendableMessage = None,
        *,
        timeout: float | None = None,
        headers: dict[str, Any] | None = None,
        cache: bool = True,
    ) -> Any:
        return self._call(
            self._client.request(channel, payload, timeout=timeout, headers=headers, cache=cache)
        )

    @contextlib.contextmanager
    def lock(
        self, key: str, *, wait: float | None = None, lease: float | None = None
    ) -> Iterator[HeldLock]:
        """``with client.lock("nightly-report"):`` (``Client.lock``, blocking). The lease
        is refreshed on the client's loop thread while the block runs."""
        context = self._client.lock(key, wait=wait, lease=lease)
        held = self._call(context.__aenter__())
        try:
            yield held
        finally:
            self._call(context.__aexit__(None, None, None))

    def locks(self, prefix: str = "") -> list[LockHolder]:
        return self._call(self._client.locks(prefix))

    def cache_stats(self, channel: str | None = None) -> list[CacheStats]:
        return self._call(self._client.cache_stats(channel))

    def cache_clear(self, channel: str | None = None) -> int:
        return self._call(self._client.cache_clear(channel))

    def __repr__(self) -> str:
        return f"SyncClient({self.settings.safe_url!r})"
