"""``msgcore.ops`` on the Redis transport: read from the keys ``docs/redis.md`` lists.

Channels are the streams under the stream prefix (msgcore's own keys left out) and the
channels with dead letters; groups are each stream's consumer groups (``XINFO GROUPS``).
A dead letter's id is ``{entry}@{channel}``: its entry id in the channel's dead-letter
stream, which Redis never hands out twice.

A replay adds the message to the group's retry stream, which only that group reads,
without a delivery number (so it is attempt 1 again), and deletes the dead letter in
the same script.
"""

from __future__ import annotations

import re
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import Any, cast

from faststream.redis.message import DATA_KEY
from redis.asyncio import Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msgcore.adapters.redis.connection import connection_class_for
from msgcore.adapters.redis.dead_letters import parse_record
from msgcore.adapters.redis.envelope import Utf8BinaryMessageFormat
from msgcore.adapters.redis.keys import ORIGIN_FIELD, ChannelKeys
from msgcore.adapters.redis.message import ENVELOPE_HEADERS
from msgcore.constants import HEADER_ATTEMPT
from msgcore.exceptions import InvalidURLError, StorageError
from msgcore.naming import REDIS_RESERVED_CHANNEL_PREFIXES, redis_dead_letter_index
from msgcore.ops.backend import OpsBackend, Prepare
from msgcore.ops.errors import TransportUnreachableError
from msgcore.ops.models import DeadLetter, GroupStats, Selection
from msgcore.ops.redis_scripts import REMOVE, REPLAY, TALLY
from msgcore.settings import Settings
from msgcore.urls import redact_url

__all__ = ["RedisOps"]

_BATCH = 500
"""Entries per round trip when reading or removing dead letters."""
_TALLY_BATCH = 1000
"""Entries a counting script reads per call (each call blocks the server briefly)."""
_CONNECT_TIMEOUT = 5.0
_ENTRY_ID = re.compile(rb"^\d+-\d+$")
_GLOB = re.compile(r"([*?\[\]\\])")


def _entry_ms(entry_id: bytes | str) -> int | None:
    """The server time (ms) a stream entry was added at."""
    raw = entry_id.encode() if isinstance(entry_id, str) else entry_id
    if not _ENTRY_ID.match(raw):
        return None
    return int(raw.partition(b"-")[0])


def _parse_id(dead_letter_id: str) -> tuple[str, str] | None:
    """``(channel, entry id)`` of an id of ours; None for anything else."""
    entry, sep, channel = dead_letter_id.partition("@")
    if not sep or not channel or not _ENTRY_ID.match(entry.encode()):
        return None
    return channel, entry


def _dead_letter(channel: str, entry_id: bytes, fields: dict[bytes, bytes]) -> DeadLetter:
    record = parse_record(fields)
    if not record.channel:
        record = replace(record, channel=channel)
    return DeadLetter.of(record, f"{entry_id.decode()}@{channel}")


def _shown(dead: DeadLetter) -> DeadLetter:
    """``dead`` as a reader sees it: the envelope's own entries (correlation id, content
    type, reply-to) are not headers, as on SQLite and RabbitMQ and as a handler sees
    them. A replay keeps them: it re-sends the envelope as it was."""
    if not any(key in dead.headers for key in ENVELOPE_HEADERS):
        return dead
    headers = {k: v for k, v in dead.headers.items() if k not in ENVELOPE_HEADERS}
    correlation_id = dead.correlation_id or dead.headers.get("correlation_id")
    return replace(
        dead,
        headers=headers,
        correlation_id=None if correlation_id is None else str(correlation_id),
    )


def _order(dead: DeadLetter) -> tuple[float, int, int]:
    entry = dead.id.partition("@")[0]
    ms, _, seq = entry.partition("-")
    return (dead.failed_at, int(ms), int(seq))


def _text(value: Any) -> str:
    return value.decode(errors="replace") if isinstance(value, bytes) else str(value)


class RedisOps(OpsBackend):
    """The Redis server of ``settings.url``, under ``settings.redis.stream_prefix``."""

    def __init__(self, settings: Settings) -> None:
        self.url = settings.url
        self.prefix = settings.redis.stream_prefix
        self._client: Redis | None = None

    # -- connection ------------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            options: dict[str, Any] = {"socket_connect_timeout": _CONNECT_TIMEOUT}
            if (connection_class := connection_class_for(self.url)) is not None:
                options["connection_class"] = connection_class  # keeps cancellations
            client = Redis.from_url(self.url, **options)
        except ValueError as exc:
            raise InvalidURLError(
                f"{redact_url(self.url)!r} is not a usable Redis URL "
                f"({redact_url(str(exc))}): use redis://host:6379/0 (MSGCORE_URL)."
            ) from None
        try:
            with self._errors():
                await client.ping()
        except BaseException:
            await client.aclose()
            raise
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """redis-py's errors as msgcore's, with the URL redacted."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError, OSError) as exc:
            raise TransportUnreachableError(
                f"Cannot reach Redis at {redact_url(self.url)} ({type(exc).__name__}: "
                f"{redact_url(str(exc))}). Check that Redis is running there and that the "
                "URL's host, port and password are right (MSGCORE_URL)."
            ) from None
        except RedisError as exc:
            raise StorageError(
                f"Redis at {redact_url(self.url)} refused an operation: {redact_url(str(exc))}"
            ) from None

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise StorageError(f"Redis at {redact_url(self.url)} is not open: call open() first.")
        return self._client

    def _keys(self, channel: str) -> ChannelKeys:
        return ChannelKeys(channel, self.prefix)

    @property
    def _dead_index(self) -> str:
        return redis_dead_letter_index(self.prefix)

    # -- counts ------------------------------------------------------------------------------

    async def stats(self, channel: str | None) -> list[GroupStats]:
        with self._errors():
            channels = [channel] if channel is not None else await self._channels()
            seconds, micros = await self.client.time()
            now_ms = seconds * 1000 + micros // 1000
            found: list[GroupStats] = []
            for name in sorted(channels):
                found += await self._channel_stats(name, now_ms)
            return found

    async def _channels(self) -> set[str]:
        """Channels with a stream under the prefix, or with dead letters."""
        pattern = _GLOB.sub(r"\\\1", self.prefix) + "*"
        names: set[str] = set()
        async for key in self.client.scan_iter(match=pattern, count=1000, _type="stream"):
            name = _text(key)[len(self.prefix) :]
            if not name.startswith(REDIS_RESERVED_CHANNEL_PREFIXES):
                names.add(name)
        members = cast("set[bytes]", await self.client.smembers(self._dead_index))
        names.update(_text(m) for m in members)
        return names

    async def _groups(self, stream: str) -> dict[str, dict[str, Any]]:
        """``XINFO GROUPS`` by group name; empty when the stream does not exist."""
        try:
            infos: list[dict[str, Any]] = await self.client.xinfo_groups(stream)
        except ResponseError:  # no such key
            return {}
        return {_text(info["name"]): info for info in infos}

    async def _tally(self, stream: str, *, after: str = "-", field: str = "") -> dict[str, int]:
        """Entries of ``stream`` after ``after``, by the value of ``field`` ("" if none)."""
        counts: dict[str, int] = {}
        while True:
            reply = await TALLY(self.client, [stream], [after, _TALLY_BATCH, field])
            last, read, pairs = reply[0], int(reply[1]), reply[2:]
            for value, n in zip(pairs[::2], pairs[1::2], strict=True):
                counts[_text(value)] = counts.get(_text(value), 0) + int(n)
            if not field and read:
                counts[""] = counts.get("", 0) + read
            if read < _TALLY_BATCH:
                return counts
            after = _text(last)

    async def _lag(self, stream: str, info: dict[str, Any] | None) -> int:
        if info is None:
            return 0
        lag = info.get("lag")
        if lag is not None:
            return int(lag)
        # Redis cannot tell after deletions in the stream: count what follows the
        # group's last delivered entry
        last = _text(info.get("last-delivered-id") or "0-0")
        return (await self._tally(stream, after=last)).get("", 0)

    async def _first_after(self, stream: str, info: dict[str, Any]) -> int | None:
        """When the first undelivered entry was first added (ms): a redelivered copy's
        original entry time."""
        last = _text(info.get("last-delivered-id") or "0-0")
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await self.client.xrange(stream, min=f"({last}", max="+", count=1),
        )
        if not entries:
            return None
        entry_id, fields = entries[0]
        origin = fields.get(ORIGIN_FIELD.encode())
        return (_entry_ms(origin) if origin else None) or _entry_ms(entry_id)

    async def _due_split(self, key: str, now_ms: int) -> tuple[int, int, int | None]:
        """Members of a due set: (due now, due later, earliest due time in ms)."""
        client = self.client
        due = int(await client.zcount(key, "-inf", now_ms))
        later = int(await client.zcount(key, f"({now_ms}", "+inf"))
        first = cast("list[tuple[bytes, float]]", await client.zrange(key, 0, 0, withscores=True))
        return due, later, int(first[0][1]) if first else None

    async def _channel_stats(self, channel: str, now_ms: int) -> list[GroupStats]:
        keys = self._keys(channel)
        groups = await self._groups(keys.stream)
        dead = await self._tally(keys.dead, field="group")
        delayed_due, delayed_later, delayed_first = await self._due_split(keys.delayed, now_ms)
        found: list[GroupStats] = []
        for group in sorted(set(groups) | {g for g, n in dead.items() if n}):
            info = groups.get(group)
            if info is None:  # the group is gone; its dead letters are not
                found.append(GroupStats(channel, group, 0, 0, 0, 0, dead.get(group, 0), None, None))
                continue
            retry_stream = keys.retry_stream(group)
            retry = (await self._groups(retry_stream)).get(group)
            retry_due, retry_later, retry_first = await self._due_split(
                keys.retry_set(group), now_ms
            )
            fresh = await self._lag(keys.stream, info)
            again = await self._lag(retry_stream, retry)
            since: list[int | None] = []
            if fresh:
                since.append(await self._first_after(keys.stream, info))
            if again and retry is not None:
                since.append(await self._first_after(retry_stream, retry))
            if delayed_due:
                since.append(delayed_first)
            if retry_due:
                since.append(retry_first)
            known = [t for t in since if t is not None]
            found.append(
                GroupStats(
                    channel=channel,
                    group=group,
                    waiting=fresh + again + delayed_due + retry_due,
                    running=int(info.get("pending") or 0) + int((retry or {}).get("pending") or 0),
                    delayed=delayed_later,
                    retrying=retry_later,
                    dead=dead.get(group, 0),
                    oldest_age=max(now_ms - min(known), 0) / 1000 if known else None,
                    delivered=_delivered(info, retry),
                    consumers=int(info.get("consumers") or 0),
                )
            )
        return found

    # -- dead letters --------------------------------------------------------------------

    async def _dead_channels(self, selection: Selection) -> list[str]:
        if selection.channel is not None:
            return [selection.channel]
        members = cast("set[bytes]", await self.client.smembers(self._dead_index))
        return sorted(_text(m) for m in members)

    async def _scan(self, channel: str) -> AsyncIterator[list[DeadLetter]]:
        """Every dead letter of ``channel``, oldest first, in batches."""
        key = self._keys(channel).dead
        start = "-"
        while True:
            entries = cast(
                "list[tuple[bytes, dict[bytes, bytes]]]",
                await self.client.xrange(key, min=start, max="+", count=_BATCH),
            )
            if not entries:
                return
            yield [_dead_letter(channel, entry_id, fields) for entry_id, fields in entries]
            if len(entries) < _BATCH:
                return
            start = f"({entries[-1][0].decode()}"

    async def _by_ids(self, selection: Selection) -> list[DeadLetter]:
        assert selection.ids is not None
        found: list[DeadLetter] = []
        for dead_letter_id in sorted(selection.ids):
            dead = await self._get(dead_letter_id)
            if dead is not None and selection.matches(dead):
                found.append(dead)
        return sorted(found, key=_order)

    async def _select(self, selection: Selection, limit: int) -> AsyncIterator[list[DeadLetter]]:
        """The selected dead letters in batches, each channel oldest first; at most
        ``limit`` per channel."""
        if selection.ids is not None:
            yield (await self._by_ids(selection))[:limit]
            return
        for channel in await self._dead_channels(selection):
            taken = 0
            async for batch in self._scan(channel):
                chosen = [dead for dead in batch if selection.matches(dead)][: limit - taken]
                taken += len(chosen)
                if chosen:
                    yield chosen
                if taken >= limit:
                    break

    async def dead_letters(self, selection: Selection, limit: int) -> list[DeadLetter]:
        if limit <= 0 or selection.empty:
            return []
        with self._errors():
            found = [dead async for batch in self._select(selection, limit) for dead in batch]
        return [_shown(dead) for dead in sorted(found, key=_order)[:limit]]

    async def _get(self, dead_letter_id: str) -> DeadLetter | None:
        parsed = _parse_id(dead_letter_id)
        if parsed is None:
            return None
        channel, entry = parsed
        entries = cast(
            "list[tuple[bytes, dict[bytes, bytes]]]",
            await self.client.xrange(self._keys(channel).dead, min=entry, max=entry, count=1),
        )
        return _dead_letter(channel, *entries[0]) if entries else None

    async def dead_letter(self, dead_letter_id: str) -> DeadLetter | None:
        with self._errors():
            found = await self._get(dead_letter_id)
        return None if found is None else _shown(found)

    async def replay(self, selection: Selection, prepare: Prepare) -> int:
        if selection.empty:
            return 0
        replayed = 0
        with self._errors():
            # the whole selection first: a replay must not meet its own copies again
            batches = [batch async for batch in self._select(selection, _UNLIMITED)]
            for batch in batches:
                await prepare(batch)
                for dead in batch:
                    replayed += await self._replay_one(dead)
        return replayed

    async def _replay_one(self, dead: DeadLetter) -> int:
        parsed = _parse_id(dead.id)
        if parsed is None:
            return 0
        channel, entry = parsed
        keys = self._keys(channel)
        headers = {k: v for k, v in dead.headers.items() if k != HEADER_ATTEMPT}
        data = await Utf8BinaryMessageFormat.encode(
            message=dead.body,
            reply_to=None,
            headers=headers,
            correlation_id=dead.correlation_id or str(headers.get("correlation_id", "")),
        )
        fields: list[str | bytes] = [DATA_KEY, data]
        if dead.message_id:
            # handlers see the same message_id as on the message's first delivery
            fields += [ORIGIN_FIELD, dead.message_id]
        done = await REPLAY(
            self.client,
            [keys.dead, keys.retry_stream(dead.group), self._dead_index],
            [entry, channel, *fields],
        )
        return int(done)

    async def purge(self, selection: Selection) -> int:
        if selection.empty:
            return 0
        removed = 0
        with self._errors():
            everything = (
                selection.ids is None
                and selection.group is None
                and selection.failed_before is None
            )
            if everything:
                for channel in await self._dead_channels(selection):
                    removed += await self._remove(channel, [])
                return removed
            by_channel: dict[str, list[str]] = {}
            async for batch in self._select(selection, _UNLIMITED):
                for dead in batch:
                    parsed = _parse_id(dead.id)
                    if parsed is not None:
                        by_channel.setdefault(parsed[0], []).append(parsed[1])
            for channel, entries in by_channel.items():
                for i in range(0, len(entries), _BATCH):
                    removed += await self._remove(channel, entries[i : i + _BATCH])
        return removed

    async def _remove(self, channel: str, entries: Sequence[str]) -> int:
        keys = self._keys(channel)
        return int(await REMOVE(self.client, [keys.dead, self._dead_index], [channel, *entries]))


_UNLIMITED = 1 << 62


def _delivered(info: dict[str, Any], retry: dict[str, Any] | None) -> int | None:
    """Entries read by the group from the channel stream and its retry stream."""

    def read(group: dict[str, Any] | None) -> int | None:
        if group is None:
            return 0
        value = group.get("entries-read")
        if value is not None:
            return int(value)
        # a group created at 0 reports nothing until its first read
        return 0 if _text(group.get("last-delivered-id") or "0-0") == "0-0" else None

    fresh, again = read(info), read(retry)
    if fresh is None:
        return None
    return fresh + (again or 0)
