"""``msgcore.ops`` on RabbitMQ, over AMQP only (no management plugin needed).

AMQP cannot list queues, so the groups come from the subscriber registry workers keep
in the job store (``registry.py``); a channel asked for by name also has its ``default``
group looked at. Counts come from passive declares of the queues ``docs/rabbit.md``
lists (a declare of a queue that does not exist closes its AMQP channel, so each one
gets a channel of its own). AMQP reports a queue's ready messages and consumers, not
its unacknowledged ones: ``running`` is unknown here.

Dead letters are read with ``basic.get`` and held unacknowledged; what an operation
does not take (ack) goes back to the queue when its channel closes, in order. A queue
gives messages no ids, so a dead letter is named ``{token}@{dead-letter queue}``: the
token msgcore gave it when dead-lettering it (``x-msgcore-dead-letter-id``), or for one
RabbitMQ dead-lettered itself a digest of its content. Two readers at the same moment
each see part of a queue.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Iterable, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass

import aio_pika
import aiormq
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage, AbstractQueue

from msgcore.adapters.rabbit.dead_letters import record_of
from msgcore.adapters.rabbit.message import (
    HEADER_CHANNEL,
    HEADER_DEAD_LETTER_ID,
    transport_headers,
    user_headers,
)
from msgcore.adapters.rabbit.settlement import Settler, ensure_routed
from msgcore.adapters.rabbit.topology import MAX_WAIT_MS, handshake_refused
from msgcore.constants import DEFAULT_GROUP
from msgcore.exceptions import DeliveryError, MsgcoreError
from msgcore.naming import (
    rabbit_dead_letter_queue,
    rabbit_delay_queue,
    rabbit_group_queue,
    rabbit_wait_queue,
)
from msgcore.ops.backend import OpsBackend, Prepare
from msgcore.ops.errors import TransportUnreachableError
from msgcore.ops.models import DeadLetter, GroupStats, Selection
from msgcore.ops.registry import registered_subscribers
from msgcore.settings import Settings
from msgcore.urls import redact_url

__all__ = ["RabbitOps"]

_TTL_BUCKETS = tuple(1 << n for n in range(MAX_WAIT_MS.bit_length()))
"""Every wait time a wait or delay queue can have (powers of two, ms; see topology)."""
_CONNECT_TIMEOUT = 10.0
_DEAD_SUFFIX = rabbit_dead_letter_queue("c", "g")[len(rabbit_group_queue("c", "g")) :]
"""What a group queue's name gets to become its dead-letter queue's (``.dead``)."""


@dataclass(frozen=True)
class _QueueInfo:
    messages: int
    """Ready messages (unacknowledged ones are not counted by AMQP)."""
    consumers: int


@dataclass(frozen=True)
class _Held:
    """A dead letter fetched and not acknowledged yet."""

    message: AbstractIncomingMessage
    dead: DeadLetter


def _parse_id(dead_letter_id: str) -> tuple[str, str] | None:
    """``(token, dead-letter queue)`` of an id of ours; None for anything else."""
    token, sep, queue = dead_letter_id.partition("@")
    if not sep or not token or not queue.endswith(_DEAD_SUFFIX):
        return None
    return token, queue


def _token(message: AbstractIncomingMessage) -> str:
    headers = message.headers or {}
    token = headers.get(HEADER_DEAD_LETTER_ID)
    if isinstance(token, bytes):
        token = token.decode(errors="replace")
    if isinstance(token, str) and token:
        return token
    # Dead-lettered by RabbitMQ itself (or by an older msgcore): its content names it.
    # RabbitMQ's delivery count is left out: it changes each time the queue is read.
    digest = hashlib.sha256(message.body)
    stable = {
        "headers": transport_headers(headers),
        "x-death": headers.get("x-death"),
        "message_id": message.message_id,
        "correlation_id": message.correlation_id,
        "timestamp": message.timestamp,
    }
    digest.update(json.dumps(stable, sort_keys=True, default=str).encode())
    return digest.hexdigest()[:32]


def _owner(queue: str) -> tuple[str, str]:
    """A dead-letter queue's channel and group, read from its name: only for messages
    that do not say (RabbitMQ dead-lettered them); a group with a dot is split wrong."""
    base = queue[: -len(_DEAD_SUFFIX)]
    channel, dot, group = base.rpartition(".")
    return (channel, group) if dot else (base, DEFAULT_GROUP)


def _home(held: _Held) -> str:
    """The group queue a dead letter returns to when replayed."""
    headers = held.message.headers or {}
    if HEADER_CHANNEL not in headers:
        deaths = headers.get("x-death")
        if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
            queue = deaths[0].get("queue")
            if isinstance(queue, str | bytes) and queue:
                return queue.decode() if isinstance(queue, bytes) else queue
    return rabbit_group_queue(held.dead.channel, held.dead.group)


class RabbitOps(OpsBackend):
    """The RabbitMQ server of ``settings.url`` and msgcore's queues on it."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.url = settings.url
        self.exchange = settings.rabbit.exchange
        self._connection: AbstractConnection | None = None
        # One probe at a time: a passive declare of a missing queue makes the server
        # close the channel, and aiormq may reuse its number for a channel opened
        # meanwhile ("CHANNEL_ERROR - second 'channel.open' seen" closes the connection).
        self._probing = asyncio.Lock()

    # -- connection ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._connection is not None:
            return
        with self._errors():
            self._connection = await aio_pika.connect(self.url, timeout=_CONNECT_TIMEOUT)

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is not None:
            with contextlib.suppress(Exception):
                await connection.close()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """aio-pika's and aiormq's errors as msgcore's, with the URL redacted."""
        try:
            yield
        except MsgcoreError:
            raise
        except (
            aiormq.exceptions.AMQPConnectionError,
            ConnectionError,
            OSError,
            TimeoutError,
        ) as exc:
            raise TransportUnreachableError(
                f"Cannot reach RabbitMQ at {redact_url(self.url)} ({type(exc).__name__}: "
                f"{redact_url(str(exc))}). Check that RabbitMQ is running there and that the "
                "URL's host, port, user and password are right (MSGCORE_URL)."
            ) from None
        except aiormq.exceptions.AMQPError as exc:
            if (advice := handshake_refused(self.url, exc)) is not None:
                raise TransportUnreachableError(advice) from None
            raise DeliveryError(
                f"RabbitMQ at {redact_url(self.url)} refused an operation: "
                f"{type(exc).__name__}: {redact_url(str(exc))}"
            ) from None

    @property
    def connection(self) -> AbstractConnection:
        if self._connection is None:
            raise TransportUnreachableError(
                f"RabbitMQ at {redact_url(self.url)} is not connected: call open() first."
            )
        return self._connection

    async def _probe(self, queue: str) -> _QueueInfo | None:
        """The counts of ``queue``; None if it does not exist."""
        async with self._probing:
            amqp = await self.connection.channel(publisher_confirms=False)
            try:
                declared = await amqp.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                return None
            finally:
                with contextlib.suppress(Exception):
                    await amqp.close()
        result = declared.declaration_result
        return _QueueInfo(int(result.message_count or 0), int(result.consumer_count or 0))

    async def _total(self, queues: Iterable[str]) -> int:
        """Ready messages in ``queues`` together (missing ones count 0)."""
        total = 0
        for queue in queues:
            info = await self._probe(queue)
            total += 0 if info is None else info.messages
        return total

    # -- counts ------------------------------------------------------------------------------

    async def _pairs(self, channel: str | None, group: str | None) -> set[tuple[str, str]]:
        """Registered groups (of ``channel``/``group``); a named channel's named or
        default group too."""
        pairs = {
            (c, g)
            for c, g in await registered_subscribers(self.settings)
            if (channel is None or c == channel) and (group is None or g == group)
        }
        if channel is not None:
            pairs.add((channel, group or DEFAULT_GROUP))
        return pairs

    async def stats(self, channel: str | None) -> list[GroupStats]:
        return await self._counts(channel, full=True)

    async def depth(self, channel: str) -> list[GroupStats]:
        """Waiting and dead only: ``stats`` probes every wait and delay queue a group may
        have (64 passive declares, a channel each), too much for every worker to do every
        few seconds; two per group here."""
        return await self._counts(channel, full=False)

    async def _counts(self, channel: str | None, *, full: bool) -> list[GroupStats]:
        """Each group's counts; ``full``: with its wait queues (``retrying``) and its
        channel's delay queues (``delayed``), else those are left unknown."""
        with self._errors():
            pairs = await self._pairs(channel, None)
            delayed: dict[str, int] = {}
            found: list[GroupStats] = []
            for chan, group in sorted(pairs):
                queue = rabbit_group_queue(chan, group)
                main = await self._probe(queue)
                if main is None:  # registered once, but its queue is gone
                    continue
                dead = await self._probe(rabbit_dead_letter_queue(chan, group))
                retrying = None
                if full:
                    retrying = await self._total(
                        rabbit_wait_queue(queue, ms) for ms in _TTL_BUCKETS
                    )
                    if chan not in delayed:
                        delayed[chan] = await self._total(
                            rabbit_delay_queue(chan, ms, self.exchange) for ms in _TTL_BUCKETS
                        )
                found.append(
                    GroupStats(
                        channel=chan,
                        group=group,
                        waiting=main.messages,
                        running=None,
                        delayed=delayed.get(chan),
                        retrying=retrying,
                        dead=0 if dead is None else dead.messages,
                        oldest_age=None,
                        delivered=None,
                        consumers=main.consumers,
                    )
                )
            return found

    # -- dead letters --------------------------------------------------------------------

    async def _targets(self, selection: Selection) -> dict[str, tuple[str, str]]:
        """The dead-letter queues ``selection`` may find something in, with the channel
        and group each belongs to."""
        if selection.ids is not None:
            queues = {p[1] for i in selection.ids if (p := _parse_id(i)) is not None}
            return {q: _owner(q) for q in sorted(queues)}
        pairs = await self._pairs(selection.channel, selection.group)
        return {rabbit_dead_letter_queue(c, g): (c, g) for c, g in sorted(pairs)}

    @asynccontextmanager
    async def _reading(self, queue: str) -> AsyncIterator[tuple[AbstractChannel, AbstractQueue]]:
        """A channel holding what is fetched from ``queue`` until it closes.

        ``LookupError`` if the queue does not exist."""
        amqp = await self.connection.channel()
        try:
            try:
                dead = await amqp.declare_queue(queue, passive=True)
            except aiormq.exceptions.ChannelNotFoundEntity:
                raise LookupError(queue) from None
            yield amqp, dead
        finally:
            with contextlib.suppress(Exception):
                await amqp.close()

    async def _fetch(
        self, queue: AbstractQueue, owner: tuple[str, str], selection: Selection, limit: int
    ) -> list[_Held]:
        """Up to ``limit`` selected dead letters of ``queue``, held unacknowledged.

        Only what was in the queue when it was declared is read: what a replay sends
        back and dies again at once lands behind that and is not met a second time."""
        count = int(queue.declaration_result.message_count or 0)
        held: list[_Held] = []
        for _ in range(count):
            if len(held) >= limit:
                break
            message = await queue.get(no_ack=False, fail=False)
            if message is None:
                break
            record = record_of(message, channel=owner[0], group=owner[1])
            dead = DeadLetter.of(record, f"{_token(message)}@{queue.name}")
            if selection.matches(dead):
                held.append(_Held(message, dead))
        return held

    async def dead_letters(self, selection: Selection, limit: int) -> list[DeadLetter]:
        if limit <= 0 or selection.empty:
            return []
        found: list[DeadLetter] = []
        with self._errors():
            for queue, owner in (await self._targets(selection)).items():
                with contextlib.suppress(LookupError):
                    async with self._reading(queue) as (_, dead):
                        found += [h.dead for h in await self._fetch(dead, owner, selection, limit)]
        found.sort(key=lambda d: d.failed_at)
        return found[:limit]

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        found = await self.dead_letters(Selection.of([dead_letter_id]), 1)
        return found[0] if found else None

    async def replay(self, selection: Selection, prepare: Prepare) -> int:
        if selection.empty:
            return 0
        replayed = 0
        with self._errors():
            for queue, owner in (await self._targets(selection)).items():
                with contextlib.suppress(LookupError):
                    async with self._reading(queue) as (amqp, dead):
                        held = await self._fetch(dead, owner, selection, _UNLIMITED)
                        replayed += await self._replay(amqp, held, prepare)
        return replayed

    async def _replay(self, amqp: AbstractChannel, held: Sequence[_Held], prepare: Prepare) -> int:
        if not held:
            return 0
        homes = {_home(h) for h in held}
        for home in sorted(homes):
            if await self._probe(home) is None:
                raise DeliveryError(
                    f"Cannot replay into {home!r}: the queue does not exist on RabbitMQ at "
                    f"{redact_url(self.url)}. Start a worker of its group once (it declares "
                    "the queue), then replay again; the dead letters were left in place."
                )
        await prepare([h.dead for h in held])
        for h in held:
            home = _home(h)
            # the publisher's headers only: attempt count, due time and death history go
            copy = Settler.copy_of(h.message, user_headers(h.message.headers))
            result = await amqp.default_exchange.publish(copy, routing_key=home, mandatory=True)
            ensure_routed(result, f"a replayed dead letter for {home!r}")
            await h.message.ack()
        return len(held)

    async def purge(self, selection: Selection) -> int:
        if selection.empty:
            return 0
        whole = selection.ids is None and selection.failed_before is None
        removed = 0
        with self._errors():
            for queue, owner in (await self._targets(selection)).items():
                with contextlib.suppress(LookupError):
                    async with self._reading(queue) as (_, dead):
                        if whole:  # every message of the queue is the group's
                            purged = await dead.purge()
                            removed += int(purged.message_count or 0) if purged else 0
                            continue
                        for h in await self._fetch(dead, owner, selection, _UNLIMITED):
                            await h.message.ack()
                            removed += 1
        return removed


_UNLIMITED = 1 << 62
