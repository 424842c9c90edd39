"""How a stream entry is settled for its group: ack, retry with backoff, or dead-letter.

An entry read by a subscriber is *held* until it is settled: the heartbeat keeps held
entries from being reclaimed by other workers (``XCLAIM … JUSTID`` resets their idle
time), and whatever is still held when the subscriber stops is handed back to the
group at once. Every settlement is one Lua script that starts with ``XACK``: if the
entry was reclaimed meanwhile, the late settlement changes nothing (see ``scripts``).

A settlement that fails because the connection to Redis dropped is sent again until it
goes through, for up to a third of the lease (``_through_drops``): otherwise a
short outage would leave every entry being settled at that moment unacked until its
lease ran out. Sending one again is safe: the first ``XACK`` that lands settles the
entry, and the job store's writes ignore a finished job.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, TypeVar

from faststream._internal._compat import dump_json
from faststream.redis.message import bDATA_KEY
from faststream.redis.parser import MessageFormat
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msgcore.adapters.redis import scripts
from msgcore.adapters.redis.dead_letters import DeadLetterEntry
from msgcore.adapters.redis.keys import ATTEMPT_FIELD, ORIGIN_FIELD, ChannelKeys
from msgcore.failures import INVALID_PAYLOAD, describe_error, invalid_reason
from msgcore.retry import RetryPolicy

__all__ = ["CURRENT_DELIVERY", "AckCommand", "Delivery", "Settlement", "describe_error"]

T = TypeVar("T")

_ATTEMPT = ATTEMPT_FIELD.encode()
_ORIGIN = ORIGIN_FIELD.encode()

"""Errors that no retry can fix: the payload cannot be decoded or validated."""

CURRENT_DELIVERY: ContextVar[Delivery | None] = ContextVar("msgcore_redis_delivery", default=None)
"""The entry whose handler runs in this task (for the error-recording middleware)."""

_DROPS = (RedisConnectionError, RedisTimeoutError, ConnectionError)
"""What redis-py raises when the connection drops or the server cannot be reached."""

LogFn = Callable[[str, int, dict[str, str]], None]
"""The subscriber's log: ``(message, level, extra)``."""


@dataclass(eq=False)
class Delivery:
    """One stream entry handed to this subscriber, until it is settled."""

    stream: str
    entry_id: bytes
    fields: dict[bytes, bytes]
    retry_copy: bool
    """Read from the group's retry stream: the entry is deleted once settled."""
    started: bool = False
    settled: bool = False
    error: BaseException | None = field(default=None, repr=False)
    with_ack: list[AckCommand] = field(default_factory=list, repr=False)
    """Scripts that run with this entry's ack, atomically (the job store's record)."""
    resent: bool = False
    """A settlement was sent again after the connection dropped: the first may have
    landed, so a refusal then means it did, not that the lease was lost."""

    @property
    def attempt(self) -> int:
        """Which delivery of the message this is (1 for the first)."""
        try:
            return max(int(self.fields.get(_ATTEMPT, b"1")), 1)
        except ValueError:
            return 1

    @property
    def origin(self) -> bytes:
        """The entry id the message first had: the same on every redelivery."""
        return self.fields.get(_ORIGIN) or self.entry_id

    @property
    def delete_flag(self) -> str:
        return "1" if self.retry_copy else "0"

    def copy_fields(self) -> list[bytes]:
        """The entry's fields without msgcore's bookkeeping, flat for ``XADD``."""
        flat: list[bytes] = []
        for key, value in self.fields.items():
            if key not in (_ATTEMPT, _ORIGIN):
                flat += [key, value]
        return flat

    def envelope(self) -> bytes:
        """What FastStream's stream parser decodes: ``__data__``, or the fields as JSON."""
        data = self.fields.get(bDATA_KEY)
        if data is not None:
            return data
        return dump_json(
            {k.decode(errors="replace"): v.decode(errors="replace") for k, v in self.fields.items()}
        )


@dataclass(eq=False)
class AckCommand:
    """A script to run with an entry's ack, as one script; ``result`` gets its reply
    (or the error) once that script ran."""

    script: scripts.LuaScript
    keys: Sequence[str]
    args: Sequence[scripts.ScriptArg]
    result: asyncio.Future[Any]


class Settlement:
    """Settles the entries of one subscriber (one channel, one group)."""

    def __init__(
        self,
        *,
        client: Callable[[], Redis],
        keys: ChannelKeys,
        group: str,
        consumer: str,
        retry: RetryPolicy,
        lease_seconds: float,
        message_format: type[MessageFormat],
        log: LogFn,
        on_schedule: Callable[[float], None] = lambda _: None,
    ) -> None:
        self._client = client
        self.keys = keys
        self.group = group
        self.consumer = consumer
        self.retry = retry
        self.lease_seconds = lease_seconds
        self.message_format = message_format
        self.log = log
        self.on_schedule = on_schedule
        self.retry_stream = keys.retry_stream(group)
        self.retry_set = keys.retry_set(group)
        self._held: dict[tuple[str, bytes], Delivery] = {}
        self._reclaim_from: dict[str, bytes] = {}

    # -- what this subscriber holds ----------------------------------------------------

    def hold(self, stream: str, entries: Iterable[tuple[bytes, dict[bytes, bytes]]]) -> None:
        retry_copy = stream == self.retry_stream
        for entry_id, fields in entries:
            self._held[(stream, entry_id)] = Delivery(stream, entry_id, dict(fields), retry_copy)

    def find(self, stream: str, entry_id: bytes) -> Delivery | None:
        return self._held.get((stream, entry_id))

    def forget(self, delivery: Delivery) -> None:
        """Stop renewing an entry; unsettled, it is reclaimed after its lease."""
        self._held.pop((delivery.stream, delivery.entry_id), None)

    @property
    def held(self) -> list[Delivery]:
        return list(self._held.values())

    @property
    def holding(self) -> int:
        """Entries read and not settled yet (running, or waiting for a handler)."""
        return len(self._held)

    def _take(self, delivery: Delivery) -> bool:
        """Mark ``delivery`` settled by this call; False if something settled it before."""
        if delivery.settled:
            return False
        delivery.settled = True
        self.forget(delivery)
        return True

    # -- settlements ---------------------------------------------------------------------

    async def _through_drops(self, delivery: Delivery, call: Callable[[], Awaitable[T]]) -> T:
        """``call()``, made again while the connection to Redis is down, for up to a
        third of the lease (the entry's last heartbeat was at most a third of it ago,
        so no other worker can have reclaimed it before that; see the module)."""
        deadline = time.monotonic() + self.lease_seconds / 3
        pause = 0.05
        while True:
            try:
                return await call()
            except _DROPS:
                if time.monotonic() + pause > deadline:
                    raise
            delivery.resent = True
            await asyncio.sleep(pause)
            pause = min(pause * 2, 1.0)

    async def ack(self, delivery: Delivery) -> None:
        if not self._take(delivery):
            return
        ack_keys = [delivery.stream]
        ack_args: list[scripts.ScriptArg] = [self.group, delivery.entry_id, delivery.delete_flag]
        if delivery.with_ack:
            acked = await self._ack_with(delivery, ack_keys, ack_args)
        else:
            acked = await self._through_drops(
                delivery, lambda: scripts.ACK(self._client(), ack_keys, ack_args)
            )
        if not acked:
            self._lease_lost(delivery, "ack")

    async def _ack_with(
        self,
        delivery: Delivery,
        ack_keys: Sequence[str],
        ack_args: Sequence[scripts.ScriptArg],
    ) -> Any:
        """The ack and the delivery's ``with_ack`` scripts run as one script:
        one round trip, atomic."""
        commands = delivery.with_ack
        calls = [(scripts.ACK, ack_keys, ack_args), *((c.script, c.keys, c.args) for c in commands)]
        try:
            replies = await self._through_drops(
                delivery, lambda: scripts.run_atomically(self._client(), calls)
            )
        except BaseException as exc:
            for command in commands:
                if not command.result.done():
                    command.result.set_exception(exc)
            raise
        for command, reply in zip(commands, replies[1:], strict=True):
            if not command.result.done():
                command.result.set_result(reply)
        return replies[0]

    async def nack(self, delivery: Delivery, *, delay: float | None = None) -> None:
        """Retry after ``delay`` (default: the backoff), or dead-letter when that is pointless."""
        if delivery.settled:
            return
        error = delivery.error
        if isinstance(error, INVALID_PAYLOAD):
            await self.dead_letter(delivery, reason=invalid_reason(error))
            return
        attempt = delivery.attempt
        if self.retry.exhausted(attempt):
            await self.dead_letter(
                delivery, reason=f"failed {attempt} of {self.retry.max_attempts} attempts"
            )
            return
        wait = self.retry.delay(attempt) if delay is None else max(delay, 0.0)
        if await self._requeue(delivery, attempt + 1, wait):
            self._log(
                delivery,
                logging.INFO,
                f"attempt {attempt} failed, retrying in {wait:.2f}s: {describe_error(error)}",
            )

    async def reject(self, delivery: Delivery) -> None:
        await self.dead_letter(delivery, reason="rejected by the handler")

    async def dead_letter(self, delivery: Delivery, *, reason: str) -> None:
        if not self._take(delivery):
            return
        body, headers = self.message_format.parse(delivery.envelope())
        entry = DeadLetterEntry(
            group=self.group,
            body=body,
            headers=headers,
            correlation_id=_str_or_none(headers.get("correlation_id")),
            message_id=_str_or_none(headers.get("message_id")) or delivery.origin.decode(),
            attempts=delivery.attempt,
            reason=reason,
            error=describe_error(delivery.error),
            failed_at=time.time(),
        )
        keys = [delivery.stream, self.keys.dead, self.keys.dead_index]
        args: list[scripts.ScriptArg] = [
            self.group,
            delivery.entry_id,
            delivery.delete_flag,
            self.keys.channel,
            *entry.fields(self.keys.channel),
        ]
        done = await self._through_drops(
            delivery, lambda: scripts.DEAD_LETTER(self._client(), keys, args)
        )
        if not done:
            self._lease_lost(delivery, "dead-letter")
            return
        error = f" ({entry.error})" if entry.error else ""
        self._log(
            delivery,
            logging.WARNING,
            f"moved to the dead letters (correlation_id={entry.correlation_id}): {reason}{error}",
        )

    async def release(self) -> int:
        """Hand every held entry back to the group now (shutdown).

        Entries whose handler never started keep their delivery number; an entry whose
        handler was cancelled counts as a delivery.
        """
        released = 0
        for delivery in self.held:
            if delivery.settled:
                continue
            attempt = delivery.attempt + (1 if delivery.started else 0)
            try:
                released += await self._requeue(delivery, attempt, None, patient=False)
            except Exception as exc:  # the lease runs out instead: reclaimed later
                self._log(
                    delivery,
                    logging.WARNING,
                    f"handing the message back failed; it is reclaimed after its lease: {exc!r}",
                )
        self._held.clear()
        return released

    async def _requeue(
        self, delivery: Delivery, attempt: int, wait: float | None, *, patient: bool = True
    ) -> bool:
        """``patient=False`` (shutdown): no second try if the connection is down."""
        if not self._take(delivery):
            return False
        delay_ms = "" if not wait else str(max(int(wait * 1000), 1))
        keys = [delivery.stream, self.retry_stream, self.retry_set]
        args: list[scripts.ScriptArg] = [
            self.group,
            delivery.entry_id,
            delivery.delete_flag,
            uuid.uuid4().hex,
            delay_ms,
            delivery.origin,
            attempt,
            *delivery.copy_fields(),
        ]

        def requeue() -> Awaitable[Any]:
            return scripts.REQUEUE(self._client(), keys, args)

        done = await (self._through_drops(delivery, requeue) if patient else requeue())
        if not done:
            self._lease_lost(delivery, "retry")
            return False
        if wait:
            self.on_schedule(wait)
        return True

    # -- leases ---------------------------------------------------------------------------

    async def heartbeat(self) -> None:
        """Reset the idle time of every held entry, so that no worker reclaims it."""
        by_stream: dict[str, list[bytes]] = {}
        for delivery in self.held:
            by_stream.setdefault(delivery.stream, []).append(delivery.entry_id)
        if not by_stream:
            return
        client = self._client()
        async with client.pipeline(transaction=False) as pipe:
            for stream, ids in by_stream.items():
                pipe.xclaim(stream, self.group, self.consumer, 0, list[Any](ids), justid=True)
            await pipe.execute()

    async def reclaim(self, *, batch: int = 100, rounds: int = 10) -> int:
        """Hand entries idle for longer than the lease back to the group (dead workers)."""
        client = self._client()
        min_idle = max(int(self.lease_seconds * 1000), 1)
        moved = 0
        for stream in (self.keys.stream, self.retry_stream):
            start = self._reclaim_from.get(stream, b"0-0")
            for _ in range(rounds):
                cursor, count = await scripts.RECLAIM(
                    client,
                    [stream, self.retry_stream],
                    [
                        self.group,
                        self.consumer,
                        min_idle,
                        start,
                        batch,
                        "1" if stream == self.retry_stream else "0",
                    ],
                )
                moved += int(count)
                start = cursor
                if start in (b"0-0", "0-0"):
                    break
            self._reclaim_from[stream] = start if isinstance(start, bytes) else str(start).encode()
        if moved:
            self.log(
                f"{moved} message(s) of a worker silent for over {self.lease_seconds}s "
                f"handed back to group {self.group!r} with their next delivery number",
                logging.WARNING,
                {"channel": self.keys.stream, "message_id": ""},
            )
        return moved

    # -- logging --------------------------------------------------------------------------

    def _lease_lost(self, delivery: Delivery, what: str) -> None:
        if delivery.resent:
            self._log(
                delivery,
                logging.INFO,
                f"{what} of attempt {delivery.attempt} was sent again after the connection "
                "dropped, and the first try had gone through",
            )
            return
        self._log(
            delivery,
            logging.WARNING,
            f"{what} of attempt {delivery.attempt} refused: the entry is no longer pending "
            f"for group {self.group!r} (another worker reclaimed it after "
            f"{self.lease_seconds}s without a heartbeat), so this attempt's result was "
            "discarded. Raise lease_seconds if handlers block the event loop this long.",
        )

    def _log(self, delivery: Delivery, level: int, text: str) -> None:
        self.log(
            text,
            level,
            {"channel": self.keys.stream, "message_id": delivery.origin.decode()},
        )


def _str_or_none(value: object) -> str | None:
    return None if value is None else str(value)
