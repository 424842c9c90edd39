"""``RedisStore``: job records, the completion feed and state in Redis.

Keys, under the stream prefix (``msgcore:`` by default):

- ``_job:{job_id}``: one hash per job (``_to_hash``/``_from_hash``); a terminal job's
  retention is the hash's own TTL.
- ``_jobs``: sorted set of job ids scored by ``created_at``, for ``list_jobs`` and
  ``count_jobs``. Members whose hash expired are dropped lazily when met.
- ``_jobs:feed``: the completion feed, a stream of ``job_id``/``status`` entries added by
  the same script as the terminal transition.
- ``_kv:{key}``: application state, strings and hashes with native TTLs.

``queries`` counts commands, pipelines and script calls sent (one each).
"""

from __future__ import annotations

import asyncio
import json
import math
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from faststream.redis.message import DATA_KEY
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msgcore.adapters.redis.producer import CAPTURED, CapturedPublish
from msgcore.adapters.redis.scripts import ScriptArg
from msgcore.adapters.redis.settlement import CURRENT_DELIVERY, AckCommand
from msgcore.constants import (
    REDIS_FEED_MAXLEN,
    REDIS_JOB_KEY,
    REDIS_JOBS_FEED_KEY,
    REDIS_JOBS_INDEX_KEY,
    REDIS_KV_KEY,
)
from msgcore.exceptions import InvalidURLError, StorageError
from msgcore.store import scripts
from msgcore.store.base import TERMINAL, FeedEvent, JobRecord, JobStatus, Store
from msgcore.urls import redact_url

__all__ = ["RedisStore"]

_CHUNK = 500
"""Commands per pipeline (or records per script call) of a batched operation."""
_SCAN = 1000
"""Index members examined per round trip by ``count_jobs`` and ``purge_expired``."""
_FEED_BATCH = 1000
_MAX_CONNECTIONS = 100
"""Pool size unless the URL sets ``?max_connections=``; a waiting ``read_feed`` holds one."""
_POOL_TIMEOUT = 20.0
_MAX_BLOCK = 2.0
"""Longest ``XREAD BLOCK`` (s): redis-py gives connections a 5 s socket timeout by
default, and a block that outlasts it reads as a dead server. Waiters loop instead."""

_FLOATS = ("created_at", "started_at", "finished_at", "expires_at")
_BOOLS = ("has_result", "cached")


def _encode(value: Any) -> str | bytes | None:
    """A ``JobRecord`` field as a hash value; ``None`` is stored as an absent field."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    if isinstance(value, Mapping):
        return json.dumps(dict(value), separators=(",", ":")) if value else None
    return str(value)


def _to_hash(record: JobRecord) -> dict[str, str | bytes]:
    fields = {
        "channel": record.channel,
        "status": record.status,
        "attempts": record.attempts,
        "worker_id": record.worker_id,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "result": record.result,
        "has_result": record.has_result,
        "error_type": record.error_type,
        "error_message": record.error_message,
        "cached": record.cached,
        "expires_at": record.expires_at,
        "extra": record.extra,
    }
    return {k: v for k, e in fields.items() if (v := _encode(e)) is not None}


def _from_hash(job_id: str, raw: Mapping[bytes, bytes]) -> JobRecord:
    h = {k.decode(): v for k, v in raw.items()}

    def text(name: str) -> str | None:
        value = h.get(name)
        return None if value is None else value.decode()

    floats = {name: float(h[name]) if name in h else None for name in _FLOATS}
    extra = text("extra")
    return JobRecord(
        job_id=job_id,
        channel=text("channel") or "",
        status=JobStatus(text("status") or JobStatus.PENDING),
        attempts=int(h.get("attempts", 0)),
        worker_id=text("worker_id"),
        created_at=floats["created_at"] or 0.0,
        started_at=floats["started_at"],
        finished_at=floats["finished_at"],
        result=h.get("result"),
        has_result=h.get("has_result") == b"1",
        error_type=text("error_type"),
        error_message=text("error_message"),
        cached=h.get("cached") == b"1",
        expires_at=floats["expires_at"],
        extra=json.loads(extra) if extra else {},
    )


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A hash as a script returns it (``HGETALL``: field, value, field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds; at least 1, which Redis accepts everywhere."""
    return max(1, math.ceil(seconds * 1000))


def _chunks(items: Sequence[str], size: int = _CHUNK) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


class RedisStore(Store):
    """The Redis :class:`Store`."""

    def __init__(self, url: str, *, prefix: str = "msgcore:", transport: bool = False) -> None:
        """``transport``: the Redis transport of this process uses the same server, so a
        job's record can be written in the same step as its message and its ack."""
        self.url = url
        self.prefix = prefix
        self._with_transport = transport
        self.queries = 0
        self._client: Redis | None = None
        self._index = f"{prefix}{REDIS_JOBS_INDEX_KEY}"
        self._feed = f"{prefix}{REDIS_JOBS_FEED_KEY}"

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r})"

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}{REDIS_JOB_KEY}{job_id}"

    def _kv(self, key: str) -> str:
        return f"{self.prefix}{REDIS_KV_KEY}{key}"

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            # Blocking: a burst of concurrent handlers waits for a pooled connection
            # instead of failing with "Too many connections".
            pool = BlockingConnectionPool.from_url(
                self.url, max_connections=_MAX_CONNECTIONS, timeout=_POOL_TIMEOUT
            )
        except ValueError as exc:
            raise InvalidURLError(
                f"{redact_url(self.url)!r} is not a usable Redis URL "
                f"({redact_url(str(exc))}): use redis://host:6379/0."
            ) from None
        client = Redis.from_pool(pool)
        try:
            with self._errors():
                await client.ping()  # fail at open, not at the first job
        except BaseException:
            await client.aclose()
            raise
        self.queries += 1
        self._client = client

    async def close(self) -> None:
        if self._client is not None:
            client, self._client = self._client, None
            await client.aclose()

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Turn redis-py's errors into msgcore's, with the URL redacted."""
        try:
            yield
        except (RedisConnectionError, RedisTimeoutError) as exc:
            where = redact_url(self.url)
            raise StorageError(
                f"Cannot reach the Redis job store at {where} ({type(exc).__name__}: "
                f"{redact_url(str(exc))}). Check that Redis is running there and that the "
                "URL's host, port and password are right, or point MSGCORE_STORE_URL at "
                "another store."
            ) from None
        except RedisError as exc:
            raise StorageError(
                f"The Redis job store at {redact_url(self.url)} refused an operation: "
                f"{redact_url(str(exc))}"
            ) from None

    def _redis(self) -> Redis:
        if self._client is None:
            raise StorageError(
                f"The job store {redact_url(self.url)} is not open: use `async with store:` "
                "or `await store.open()` first."
            )
        self.queries += 1
        return self._client

    async def _hashes(self, job_ids: Sequence[str]) -> list[dict[bytes, bytes]]:
        """``HGETALL`` of each job, one pipeline per chunk; ``{}`` for a missing job."""
        found: list[dict[bytes, bytes]] = []
        for chunk in _chunks(job_ids):
            pipe = self._redis().pipeline(transaction=False)
            for job_id in chunk:
                pipe.hgetall(self._job(job_id))
            with self._errors():
                found.extend(await pipe.execute())
        return found

    async def _index_window(self, start: int, size: int, *, newest: bool) -> list[str]:
        client = self._redis()
        with self._errors():
            members: Any = await client.zrange(self._index, start, start + size - 1, desc=newest)
        return [m.decode() for m in members]

    async def _drop_from_index(self, job_ids: Sequence[str]) -> None:
        """Forget ids found without a record (expired), unless recreated meanwhile."""
        for chunk in _chunks(job_ids):
            keys = [self._index, *(self._job(job_id) for job_id in chunk)]
            client = self._redis()
            with self._errors():
                await scripts.DROP_STALE(client, keys, chunk)

    # -- jobs ----------------------------------------------------------------------------

    async def create_jobs(self, records: Sequence[JobRecord]) -> list[tuple[JobRecord, bool]]:
        out: list[tuple[JobRecord, bool]] = []
        for start in range(0, len(records), _CHUNK):
            chunk = records[start : start + _CHUNK]
            keys = [self._index]
            args: list[str | bytes] = []
            for r in chunk:
                fields = _to_hash(r)
                expire_at = "" if r.expires_at is None else str(math.ceil(r.expires_at * 1000))
                keys.append(self._job(r.job_id))
                args += [r.job_id, repr(r.created_at), expire_at, str(len(fields))]
                for name, value in fields.items():
                    args += [name, value]
            client = self._redis()
            with self._errors():
                replies = await scripts.CREATE_JOBS(client, keys, args)
            for r, reply in zip(chunk, replies, strict=True):
                if reply == 1:
                    out.append((r, True))
                else:
                    out.append((_from_hash(r.job_id, _pairs(reply)), False))
        return out

    async def create_jobs_publishing(
        self,
        records: Sequence[JobRecord],
        publish: Callable[[], Awaitable[None]],
    ) -> list[tuple[JobRecord, bool]] | None:
        if not self._with_transport or not records or len(records) > _CHUNK:
            return None
        captured: list[CapturedPublish] = []
        token = CAPTURED.set(captured)
        try:
            await publish()
        finally:
            CAPTURED.reset(token)
        by_job = {c.correlation_id: c for c in captured if c.stream}
        if len(captured) != len(records) or any(r.job_id not in by_job for r in records):
            # something else than one immediate stream publish per job (a delay):
            # what was captured is dropped; create, then publish the usual way
            return None
        keys = [self._index]
        streams: list[str] = []
        head: list[ScriptArg] = [len(records), DATA_KEY]
        tail: list[ScriptArg] = []
        for r in records:
            fields = _to_hash(r)
            expire_at = "" if r.expires_at is None else str(math.ceil(r.expires_at * 1000))
            keys.append(self._job(r.job_id))
            head += [r.job_id, repr(r.created_at), expire_at, str(len(fields))]
            for name, value in fields.items():
                head += [name, value]
            message = by_job[r.job_id]
            streams.append(message.stream)
            tail += ["" if message.maxlen is None else message.maxlen, message.data]
        client = self._redis()
        with self._errors():
            replies = await scripts.CREATE_AND_PUBLISH(client, [*keys, *streams], [*head, *tail])
        return [
            (r, True) if reply == 1 else (_from_hash(r.job_id, _pairs(reply)), False)
            for r, reply in zip(records, replies, strict=True)
        ]

    async def delete_jobs(self, job_ids: Sequence[str]) -> int:
        """Delete job records (a submit that failed to publish); how many existed."""
        deleted = 0
        for chunk in _chunks(list(dict.fromkeys(job_ids))):
            pipe = self._redis().pipeline(transaction=True)
            pipe.delete(*(self._job(job_id) for job_id in chunk))
            pipe.zrem(self._index, *chunk)
            with self._errors():
                count, _ = await pipe.execute()
            deleted += int(count)
        return deleted

    async def get_jobs(self, job_ids: Sequence[str]) -> dict[str, JobRecord]:
        ids = list(dict.fromkeys(job_ids))
        hashes = await self._hashes(ids)
        return {i: _from_hash(i, h) for i, h in zip(ids, hashes, strict=True) if h}

    async def start_attempt(
        self, job_id: str, *, channel: str, attempt: int, worker_id: str, now: float
    ) -> JobRecord:
        client = self._redis()
        with self._errors():
            flat = await scripts.START_ATTEMPT(
                client,
                [self._job(job_id), self._index],
                [job_id, channel, attempt, worker_id, repr(now)],
            )
        return _from_hash(job_id, _pairs(flat))

    async def finish_attempt(
        self,
        job_id: str,
        *,
        status: JobStatus,
        attempt: int,
        now: float,
        retention: float | None,
        result: bytes | None = None,
        has_result: bool = False,
        error_type: str | None = None,
        error_message: str | None = None,
        cached: bool = False,
    ) -> bool:
        keys, args = self._finish_call(
            job_id,
            status=status,
            attempt=attempt,
            now=now,
            retention=retention,
            result=result,
            has_result=has_result,
            error_type=error_type,
            error_message=error_message,
            cached=cached,
        )
        client = self._redis()
        with self._errors():
            done = await scripts.FINISH_ATTEMPT(client, keys, args)
        return bool(done)

    @property
    def shares_transport_writer(self) -> bool:
        return self._with_transport

    def queue_finish_attempt(
        self,
        job_id: str,
        *,
        status: JobStatus,
        attempt: int,
        now: float,
        retention: float | None,
        result: bytes | None = None,
        has_result: bool = False,
        error_type: str | None = None,
        error_message: str | None = None,
        cached: bool = False,
    ) -> asyncio.Future[bool] | None:
        delivery = CURRENT_DELIVERY.get()
        if not self._with_transport or delivery is None or delivery.settled:
            return None
        keys, args = self._finish_call(
            job_id,
            status=status,
            attempt=attempt,
            now=now,
            retention=retention,
            result=result,
            has_result=has_result,
            error_type=error_type,
            error_message=error_message,
            cached=cached,
        )
        reply: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.with_ack.append(AckCommand(scripts.FINISH_ATTEMPT, keys, args, reply))
        self.queries += 1  # rides in the ack's round trip, counted as a command
        done: asyncio.Future[bool] = asyncio.get_running_loop().create_future()

        def forward(f: asyncio.Future[Any]) -> None:
            if done.done():
                return
            if f.cancelled():
                done.cancel()
            elif (exc := f.exception()) is not None:
                done.set_exception(exc)
            else:
                done.set_result(bool(f.result()))

        reply.add_done_callback(forward)
        return done

    def _finish_call(
        self,
        job_id: str,
        *,
        status: JobStatus,
        attempt: int,
        now: float,
        retention: float | None,
        result: bytes | None,
        has_result: bool,
        error_type: str | None,
        error_message: str | None,
        cached: bool,
    ) -> tuple[list[str], list[ScriptArg]]:
        terminal = status in TERMINAL
        # Only a terminal record expires; the others wait for their next attempt.
        retain = retention if terminal else None
        changes = {
            "status": status,
            "attempts": attempt,
            "finished_at": now if terminal else None,
            "result": result,
            "has_result": has_result,
            "error_type": error_type,
            "error_message": error_message,
            "cached": cached,
            "expires_at": None if retain is None else now + retain,
        }
        encoded = {name: _encode(value) for name, value in changes.items()}
        pairs = [x for name, v in encoded.items() if v is not None for x in (name, v)]
        gone = [name for name, v in encoded.items() if v is None]
        return (
            [self._job(job_id), self._index, self._feed],
            [
                job_id,
                status,
                repr(now),
                "" if retain is None else _ms(retain),
                REDIS_FEED_MAXLEN,
                len(pairs) // 2,
                *pairs,
                *gone,
            ],
        )

    async def cancel_job(self, job_id: str, *, now: float, retention: float | None) -> bool:
        expires_at = "" if retention is None else repr(now + retention)
        client = self._redis()
        with self._errors():
            done = await scripts.CANCEL_JOB(
                client,
                [self._job(job_id), self._feed],
                [
                    job_id,
                    repr(now),
                    "" if retention is None else _ms(retention),
                    expires_at,
                    REDIS_FEED_MAXLEN,
                ],
            )
        return bool(done)

    async def list_jobs(
        self,
        *,
        status: JobStatus | None = None,
        channel: str | None = None,
        limit: int = 100,
    ) -> list[JobRecord]:
        # The index knows only creation order: filters are applied to the records read,
        # window after window, newest first.
        found: list[JobRecord] = []
        stale: list[str] = []
        start, window = 0, max(limit, 100)
        while len(found) < limit:
            ids = await self._index_window(start, window, newest=True)
            if not ids:
                break
            start += window
            for job_id, h in zip(ids, await self._hashes(ids), strict=True):
                if not h:
                    stale.append(job_id)
                    continue
                record = _from_hash(job_id, h)
                if (status is None or record.status == status) and (
                    channel is None or record.channel == channel
                ):
                    found.append(record)
        await self._drop_from_index(stale)
        return found[:limit]

    async def count_jobs(self, *, channel: str | None = None) -> dict[JobStatus, int]:
        counts = dict.fromkeys(JobStatus, 0)
        stale: list[str] = []
        start = 0
        while ids := await self._index_window(start, _SCAN, newest=False):
            start += len(ids)
            pipe = self._redis().pipeline(transaction=False)
            for job_id in ids:
                pipe.hmget(self._job(job_id), ["status", "channel"])
            with self._errors():
                rows = await pipe.execute()
            for job_id, (st, ch) in zip(ids, rows, strict=True):
                if st is None:
                    stale.append(job_id)
                elif channel is None or (ch or b"").decode() == channel:
                    counts[JobStatus(st.decode())] += 1
        await self._drop_from_index(stale)
        return counts

    # -- completion feed -----------------------------------------------------------------

    async def feed_position(self) -> str:
        client = self._redis()
        with self._errors():
            last: Any = await client.xrevrange(self._feed, count=1)
        return last[0][0].decode() if last else "0-0"

    async def read_feed(self, position: str, *, timeout: float) -> tuple[str, list[FeedEvent]]:
        client = self._redis()
        # BLOCK 0 would wait for ever: no timeout means do not wait at all.
        block = _ms(min(timeout, _MAX_BLOCK)) if timeout > 0 else None
        with self._errors():
            reply: Any = await client.xread({self._feed: position}, count=_FEED_BATCH, block=block)
        if not reply:
            return position, []
        entries = reply[0][1]
        events = [
            FeedEvent(fields[b"job_id"].decode(), JobStatus(fields[b"status"].decode()))
            for _, fields in entries
        ]
        return entries[-1][0].decode(), events

    # -- application state ---------------------------------------------------------------

    async def get(self, key: str) -> str | None:
        client = self._redis()
        with self._errors():
            value: Any = await client.get(self._kv(key))
        return None if value is None else str(value.decode())

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        # A plain SET also clears an earlier TTL, which is what ttl=None asks for.
        client = self._redis()
        with self._errors():
            await client.set(self._kv(key), value, px=None if ttl is None else _ms(ttl))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        client = self._redis()
        with self._errors():
            return int(await client.delete(*{self._kv(k) for k in keys}))

    async def hset(self, key: str, mapping: Mapping[str, str], *, ttl: float | None = None) -> None:
        if not mapping:
            # Redis has no empty hashes: only the expiry can change.
            if ttl is not None:
                await self.expire(key, ttl)
            return
        pipe = self._redis().pipeline(transaction=True)
        fields: dict[Any, Any] = dict(mapping)
        pipe.hset(self._kv(key), mapping=fields)
        if ttl is not None:
            pipe.pexpire(self._kv(key), _ms(ttl))
        with self._errors():
            await pipe.execute()

    async def hgetall(self, key: str) -> dict[str, str]:
        client = self._redis()
        with self._errors():
            raw: Any = await client.hgetall(self._kv(key))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def expire(self, key: str, ttl: float) -> bool:
        client = self._redis()
        with self._errors():
            return bool(await client.pexpire(self._kv(key), _ms(ttl)))

    # -- housekeeping --------------------------------------------------------------------

    async def purge_expired(self, *, now: float) -> int:
        """Redis deletes expired records itself; this only drops their index entries."""
        stale: list[str] = []
        start = 0
        while ids := await self._index_window(start, _SCAN, newest=False):
            start += len(ids)
            pipe = self._redis().pipeline(transaction=False)
            for job_id in ids:
                pipe.exists(self._job(job_id))
            with self._errors():
                exists = await pipe.execute()
            stale += [job_id for job_id, found in zip(ids, exists, strict=True) if not found]
        await self._drop_from_index(stale)
        return 0
