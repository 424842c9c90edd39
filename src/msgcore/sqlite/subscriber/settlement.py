"""How a consumed row is settled: ack, retry with backoff, or dead-letter.

Every settlement is fenced by the row's lease token (see ``client/queries.py``): a
worker that lost its lease cannot overwrite the attempt that replaced it.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable
from contextvars import ContextVar
from typing import TYPE_CHECKING

from msgcore.failures import INVALID_PAYLOAD, describe_error, invalid_reason
from msgcore.retry import RetryPolicy

if TYPE_CHECKING:
    from msgcore.sqlite.client.base import QueueTransport, StoredMessage

# The row whose handler is running in this task: publishes made by the handler join
# its ack transaction (see ``publisher/producer.py``).
CURRENT_DELIVERY: ContextVar[StoredMessage | None] = ContextVar(
    "msgcore_sqlite_delivery", default=None
)


LogFn = Callable[[str, int, dict[str, str]], None]
"""The subscriber's log: ``(message, level, extra)``, extra carrying queue/group/message_id."""


def _stdlib_log(message: str, level: int, extra: dict[str, str]) -> None:
    logging.getLogger("msgcore.sqlite").log(level, message)


class Settlement:
    """Settles rows of one subscriber and tracks its leases for the heartbeat."""

    def __init__(
        self,
        transport: QueueTransport,
        *,
        retry: RetryPolicy,
        lease_seconds: float,
        log: LogFn = _stdlib_log,
    ) -> None:
        self.log = log
        self.transport = transport
        self.retry = retry
        self.lease_seconds = lease_seconds
        self._held: Counter[str] = Counter()
        """Unsettled rows per lease token: what the heartbeat keeps alive."""
        self._inflight: set[asyncio.Future[bool]] = set()

    # -- lease bookkeeping --------------------------------------------------------

    def hold(self, messages: list[StoredMessage]) -> None:
        for m in messages:
            if m.lease_token is not None:
                self._held[m.lease_token] += 1

    def _drop(self, msg: StoredMessage) -> None:
        msg.settled = True
        token = msg.lease_token
        if token is not None and token in self._held:
            self._held[token] -= 1
            if self._held[token] <= 0:
                del self._held[token]

    @property
    def held_tokens(self) -> list[str]:
        return list(self._held)

    async def renew(self) -> None:
        await self.transport.extend_leases(self.held_tokens, self.lease_seconds)

    # -- settlements --------------------------------------------------------------

    async def ack(self, msg: StoredMessage) -> None:
        if msg.settled or msg.lease_token is None:
            return
        outbox, msg.outbox = msg.outbox or [], None
        after, msg.after_ack = msg.after_ack, None
        self._drop(msg)
        # Not awaited: the consumer moves on while the ack joins the next group commit
        # (with the job result queued just before it). The lease stays valid until
        # then, and close() waits for the commit.
        fut = self.transport.queue_ack(msg.id, msg.lease_token, outbox)
        self._track(fut, msg, "ack", after)

    async def nack(self, msg: StoredMessage, *, delay: float | None = None) -> None:
        if msg.settled or msg.lease_token is None:
            return
        msg.outbox = None
        error = msg.error
        if isinstance(error, INVALID_PAYLOAD):
            await self.dead_letter(msg, reason=invalid_reason(error))
            return
        if self.retry.exhausted(msg.attempts):
            await self.dead_letter(
                msg, reason=f"failed {msg.attempts} of {self.retry.max_attempts} attempts"
            )
            return
        wait = self.retry.delay(msg.attempts) if delay is None else max(delay, 0.0)
        self._drop(msg)
        ok = await self.transport.nack(
            msg.id,
            msg.lease_token,
            queue=msg.queue,
            retry_at=time.time() + wait,
            error=describe_error(error),
        )
        if not ok:
            self._lease_lost(msg, "nack")
        else:
            self._log(
                msg,
                logging.INFO,
                f"attempt {msg.attempts} failed, retrying in {wait:.2f}s "
                f"(correlation_id={msg.correlation_id}): {describe_error(error)}",
            )

    async def reject(self, msg: StoredMessage) -> None:
        await self.dead_letter(msg, reason="rejected by the handler")

    async def dead_letter(self, msg: StoredMessage, *, reason: str) -> None:
        if msg.settled or msg.lease_token is None:
            return
        msg.outbox = None
        self._drop(msg)
        error = describe_error(msg.error)
        ok = await self.transport.dead_letter(msg.id, msg.lease_token, reason=reason, error=error)
        if not ok:
            self._lease_lost(msg, "dead-letter")
            return
        self._log(
            msg,
            logging.WARNING,
            f"moved to the dead-letter table (correlation_id={msg.correlation_id}): "
            f"{reason}{f' ({error})' if error else ''}",
        )

    async def release(self, messages: list[StoredMessage], *, started: bool) -> None:
        """Hand rows back for another worker now (shutdown); unstarted ones keep their count."""
        by_queue: dict[str, list[tuple[int, str]]] = {}
        for m in messages:
            if not m.settled and m.lease_token is not None:
                by_queue.setdefault(m.queue, []).append((m.id, m.lease_token))
                self._drop(m)
        for queue, rows in by_queue.items():
            await self.transport.release(rows, queue=queue, uncount=not started)

    async def wait_settled(self) -> None:
        if self._inflight:
            await asyncio.gather(*self._inflight, return_exceptions=True)

    def _track(
        self,
        fut: asyncio.Future[bool],
        msg: StoredMessage,
        what: str,
        after: list[Callable[[], None]] | None = None,
    ) -> None:
        self._inflight.add(fut)

        def done(f: asyncio.Future[bool]) -> None:
            self._inflight.discard(f)
            if f.cancelled():
                return
            if (exc := f.exception()) is not None:
                self._log(
                    msg,
                    logging.ERROR,
                    f"{what} failed; the message is delivered again when its lease expires "
                    f"(correlation_id={msg.correlation_id}): {exc}",
                )
            elif not f.result():
                self._lease_lost(msg, what)
            elif after:
                for callback in after:
                    callback()

        fut.add_done_callback(done)

    def _lease_lost(self, msg: StoredMessage, what: str) -> None:
        self._log(
            msg,
            logging.WARNING,
            f"{what} of attempt {msg.attempts} refused: this worker's lease expired and a "
            "newer attempt owns the message, so this attempt's result and publishes were "
            f"discarded (correlation_id={msg.correlation_id}). Raise lease_seconds if "
            "handlers legitimately block the event loop this long.",
        )

    def _log(self, msg: StoredMessage, level: int, text: str) -> None:
        self.log(
            text,
            level,
            {"queue": msg.queue, "group": msg.group, "message_id": msg.message_id or ""},
        )
