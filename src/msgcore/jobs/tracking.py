"""The worker side of job tracking.

Every handler declared on a ``msgcore.Router`` records the life of the job whose id
rides in its message (``x-msgcore-job-id``): ``running`` when an attempt starts, then
``completed`` with the result, ``retrying`` with the error, or ``dead``. The record is
written before the transport settles the message, so a worker that dies in between
leaves a record the redelivery finds: a completed job is not run again (its stored
result is published onward instead) and a running one simply starts its next attempt.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import time
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from typing import TYPE_CHECKING, Any

from faststream import BaseMiddleware
from faststream.exceptions import AckMessage, HandlerException, NackMessage, RejectMessage

from msgcore.constants import HEADER_JOB_ID
from msgcore.failures import INVALID_PAYLOAD
from msgcore.jobs.codec import decode_result, encode_result
from msgcore.message import MessageView
from msgcore.store import JobStatus, Store, store_for

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage

    from msgcore.router import SubscriberDeclaration
    from msgcore.settings import Settings

__all__ = ["JobTracker", "worker_id"]

logger = logging.getLogger("msgcore.jobs")

_ERROR_TEXT_LIMIT = 4000
# Expired records are deleted by a worker at most this often (Redis expires by itself).
_PURGE_EVERY = 600.0


def worker_id() -> str:
    """``host:pid`` of this process, as job records name their worker."""
    return f"{socket.gethostname()}:{os.getpid()}"


class JobTracker:
    """Holds the store of one broker's workers and the declarations it tracks."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.retention = settings.jobs.result_ttl
        self._store: Store | None = None
        self._opening: asyncio.Lock | None = None
        self._declarations: dict[int, tuple[SubscriberDeclaration, str]] = {}
        self._purged_at = time.monotonic()
        self._purging: asyncio.Task[None] | None = None

    def track(self, subscriber: Any, decl: SubscriberDeclaration, channel: str) -> None:
        self._declarations[id(subscriber)] = (decl, channel)
        # the transports' subscribers report crash loops through this attribute
        subscriber.msgcore_jobs = self

    async def crash_loop(self, headers: Mapping[str, Any], *, attempt: int, reason: str) -> None:
        """A transport dead-lettered a message without running its handler (it crashed
        its workers ``attempt - 1`` times): the job is ``dead``, not ``running`` forever."""
        job_id = headers.get(HEADER_JOB_ID)
        if not job_id:
            return
        try:
            store = await self.store()
            await store.finish_attempt(
                str(job_id),
                status=JobStatus.DEAD,
                attempt=attempt,
                now=time.time(),
                retention=self.retention,
                error_type="CrashLoop",
                error_message=reason,
            )
        except Exception as exc:  # the message is dead-lettered either way
            logger.error(
                "job %s: recording the crash loop failed: %r",
                job_id,
                exc,
                extra={"job_id": job_id},
            )

    def declaration_of(self, subscriber: Any) -> tuple[SubscriberDeclaration, str] | None:
        return self._declarations.get(id(subscriber))

    async def store(self, broker: Any = None) -> Store:
        if self._store is not None:
            return self._store
        if self._opening is None:
            self._opening = asyncio.Lock()
        async with self._opening:
            if self._store is None:
                store = store_for(self.settings, broker=broker)
                await store.open()
                self._store = store
        return self._store

    async def open(self, broker: Any = None) -> None:
        """Open the store now (a connected ``broker`` may share its SQLite connection)."""
        if self._declarations:
            await self.store(broker)

    async def close(self) -> None:
        purging, self._purging = self._purging, None
        if purging is not None:
            purging.cancel()
            await asyncio.gather(purging, return_exceptions=True)
        store, self._store = self._store, None
        if store is not None:
            await store.close()

    def maybe_purge(self, store: Store) -> None:
        """Delete expired records in the background, at most every ``_PURGE_EVERY`` s."""
        now = time.monotonic()
        if now - self._purged_at < _PURGE_EVERY or (
            self._purging is not None and not self._purging.done()
        ):
            return
        self._purged_at = now
        self._purging = asyncio.create_task(self._purge(store), name="msgcore-jobs-purge")

    async def _purge(self, store: Store) -> None:
        try:
            deleted = await store.purge_expired(now=time.time())
        except Exception as exc:  # the next round tries again
            logger.warning("deleting expired job records failed: %r", exc)
        else:
            if deleted:
                logger.info("deleted %d expired job record(s) and key(s)", deleted)

    def middleware(self, msg: Any, /, *, context: ContextRepo) -> BaseMiddleware:
        """The broker middleware factory FastStream calls once per message."""
        return _JobMiddleware(msg, context=context, tracker=self)


def _late_duplicate(job_id: str, attempt: int) -> None:
    # another delivery of the same job finished first (its lease ran out while this
    # one worked): the one completed record it wrote stays
    logger.warning(
        "job %s: attempt %d finished after the job was already settled; its result "
        "was discarded",
        job_id,
        attempt,
        extra={"job_id": job_id},
    )


def _check_recorded(job_id: str, attempt: int, future: asyncio.Future[bool]) -> None:
    if future.cancelled():
        return
    if (exc := future.exception()) is not None:
        # the ack was in the same transaction and failed with it: redelivered later
        logger.error(
            "job %s: recording attempt %d as completed failed: %r",
            job_id,
            attempt,
            exc,
            extra={"job_id": job_id},
        )
    elif not future.result():
        _late_duplicate(job_id, attempt)


class _JobMiddleware(BaseMiddleware):
    def __init__(self, msg: Any, /, *, context: ContextRepo, tracker: JobTracker) -> None:
        super().__init__(msg, context=context)
        self.tracker = tracker

    async def consume_scope(
        self,
        call_next: Callable[[Any], Awaitable[Any]],
        msg: StreamMessage[Any],
    ) -> Any:
        job_id = msg.headers.get(HEADER_JOB_ID)
        found = self.tracker.declaration_of(self.context.get_local("handler_"))
        if not job_id or found is None:
            return await call_next(msg)
        decl, channel = found
        tracker = self.tracker
        store = await tracker.store()
        attempt = MessageView(msg).attempt
        started = time.time()
        record = await store.start_attempt(
            str(job_id), channel=channel, attempt=attempt, worker_id=worker_id(), now=started
        )
        if record.done:
            return self._already_done(record.status, record.result, str(job_id))
        try:
            result = await call_next(msg)
        except HandlerException as exc:
            await self._settled_by_handler(exc, store, str(job_id), attempt, decl)
            raise
        except Exception as exc:
            final = isinstance(exc, INVALID_PAYLOAD) or decl.retry.exhausted(attempt)
            await self._failed(exc, store, str(job_id), attempt, dead=final)
            raise
        finished = time.time()
        tracker.maybe_purge(store)
        completion: dict[str, Any] = {
            "status": JobStatus.COMPLETED,
            "attempt": attempt,
            "now": finished,
            "retention": tracker.retention,
            "result": encode_result(result),
            "has_result": True,
        }
        logger.debug(
            "job %s completed on attempt %d in %.1f ms",
            job_id,
            attempt,
            (finished - started) * 1000,
            extra={"job_id": job_id, "correlation_id": msg.correlation_id},
        )
        # On the SQLite transport's own file the record joins the transaction of the
        # ack that follows (never a later one): atomic with the settlement, one commit.
        queued = store.queue_finish_attempt(str(job_id), **completion)
        if queued is not None:
            queued.add_done_callback(partial(_check_recorded, str(job_id), attempt))
        elif not await store.finish_attempt(str(job_id), **completion):
            _late_duplicate(str(job_id), attempt)
        return result

    def _already_done(self, status: JobStatus, result: bytes | None, job_id: str) -> Any:
        logger.info(
            "job %s is %s already: acknowledged without running the handler",
            job_id,
            status.value,
            extra={"job_id": job_id},
        )
        if status is JobStatus.COMPLETED:
            # A worker died between recording the result and settling the message:
            # publish the recorded result onward again instead of running twice.
            return decode_result(result)
        raise AckMessage

    async def _settled_by_handler(
        self,
        exc: HandlerException,
        store: Store,
        job_id: str,
        attempt: int,
        decl: SubscriberDeclaration,
    ) -> None:
        if isinstance(exc, AckMessage):
            await store.finish_attempt(
                job_id,
                status=JobStatus.COMPLETED,
                attempt=attempt,
                now=time.time(),
                retention=self.tracker.retention,
            )
        elif isinstance(exc, RejectMessage):
            await self._failed(exc, store, job_id, attempt, dead=True)
        elif isinstance(exc, NackMessage):
            await self._failed(exc, store, job_id, attempt, dead=decl.retry.exhausted(attempt))

    async def _failed(
        self, exc: BaseException, store: Store, job_id: str, attempt: int, *, dead: bool
    ) -> None:
        status = JobStatus.DEAD if dead else JobStatus.RETRYING
        try:
            await store.finish_attempt(
                job_id,
                status=status,
                attempt=attempt,
                now=time.time(),
                retention=self.tracker.retention if dead else None,
                error_type=type(exc).__name__,
                error_message=str(exc)[:_ERROR_TEXT_LIMIT],
            )
        except Exception as store_exc:  # the handler's error is the one to report
            logger.error(
                "job %s: recording attempt %d as %s failed: %r",
                job_id,
                attempt,
                status.value,
                store_exc,
                extra={"job_id": job_id},
            )
        else:
            logger.log(
                logging.WARNING if dead else logging.INFO,
                "job %s attempt %d failed (%s: %s); %s",
                job_id,
                attempt,
                type(exc).__name__,
                exc,
                "dead-lettered" if dead else "will be retried",
                extra={"job_id": job_id},
            )
