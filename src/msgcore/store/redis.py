"""``RedisStore``: job records, the completion feed and state in Redis.

Keys, under the stream prefix (``msgcore:`` by default):

- ``_job:{job_id}``: one hash per job (``_to_hash``/``_from_hash``); a terminal job's
  retention is the hash's own TTL.
- ``_jobs``: sorted set of job ids scored by ``created_at``, for ``list_jobs`` and
  ``count_jobs``. Members whose hash expired are dropped lazily when met.
- ``_jobs:feed``: the completion feed, a stream of ``job_id``/``status`` entries added by
  the same script as the terminal transition.
- ``_kv:{key}``: application state, strings and hashes with native TTLs.
- ``_jobs:subscribers``: the subscriber registry, a hash of JSON ``[channel, group]``
  to the epoch seconds a worker last registered it.
- ``_cache:e:{key}``: one hash per cached result (``CacheEntry``), its TTL the entry's.
- ``_cache:f:{key}``: the id of the job computing the key (in-flight claim), TTL the lease.
- ``_cache:z:{channel}``: the channel's keys scored by ``created_at``, for the size cap,
  ``cache_stats`` and ``cache_clear``. Members whose entry expired are dropped lazily.
- ``_cache:c:{channel}``: the registered policy and version, and the counters.
- ``_cache:channels``: the channels with a policy, entries or counters.

``queries`` counts commands, pipelines and script calls sent (one each).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import re
import time
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar, cast

from faststream.redis.message import DATA_KEY
from redis.asyncio import BlockingConnectionPool, Redis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import RedisError, ResponseError
from redis.exceptions import TimeoutError as RedisTimeoutError

from msgcore.adapters.redis.connection import connection_class_for
from msgcore.adapters.redis.keys import JOB_FIELD
from msgcore.adapters.redis.producer import CAPTURED, CapturedPublish
from msgcore.adapters.redis.scripts import ScriptArg
from msgcore.adapters.redis.settlement import CURRENT_DELIVERY, AckCommand
from msgcore.constants import (
    REDIS_CACHE_BY_AGE_KEY,
    REDIS_CACHE_CHANNEL_KEY,
    REDIS_CACHE_CHANNELS_KEY,
    REDIS_CACHE_ENTRY_KEY,
    REDIS_CACHE_INFLIGHT_KEY,
    REDIS_FEED_MAXLEN,
    REDIS_JOB_KEY,
    REDIS_JOBS_FEED_KEY,
    REDIS_JOBS_INDEX_KEY,
    REDIS_KV_KEY,
    REDIS_LOCK_KEY,
    REDIS_SUBSCRIBERS_KEY,
)
from msgcore.exceptions import InvalidURLError, StorageError, StoreUnavailableError
from msgcore.store import scripts
from msgcore.store.base import (
    STATUS,
    AttemptOutcome,
    FeedEvent,
    JobRecord,
    JobStatus,
    Store,
    new_record,
)
from msgcore.store.cache import (
    CacheCheck,
    CacheClaim,
    CacheEntry,
    CacheFill,
    CacheStats,
    CacheSubmit,
    ClaimKind,
)
from msgcore.store.deferred import DueLater
from msgcore.store.kv_args import key_arg, mapping_arg, ttl_arg, value_arg, wrong_kind
from msgcore.store.locks import LockHolder
from msgcore.urls import redact_url

__all__ = ["RedisStore"]

_T = TypeVar("_T")

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


def _encode(value: Any) -> str | bytes | None:
    """A ``JobRecord`` field as a hash value; ``None`` is stored as an absent field.

    The concrete types first: ``isinstance(value, Mapping)`` goes through the ABC
    machinery, and a record has a dozen fields, written for every job."""
    if value is None or isinstance(value, bytes):
        return value
    if isinstance(value, str):
        return str(value)  # a status (a StrEnum) as its value
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, float):
        return repr(value)  # round-trips exactly
    if isinstance(value, int):
        return str(value)
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
    get = raw.get

    def text(name: bytes) -> str | None:
        value = get(name)
        return None if value is None else value.decode()

    def number(name: bytes) -> float | None:
        value = get(name)
        return None if value is None else float(value)

    status = get(b"status")
    extra = get(b"extra")
    return new_record(
        job_id,
        text(b"channel") or "",
        status=JobStatus.PENDING if status is None else STATUS[status.decode()],
        attempts=int(get(b"attempts", 0)),
        worker_id=text(b"worker_id"),
        created_at=number(b"created_at") or 0.0,
        started_at=number(b"started_at"),
        finished_at=number(b"finished_at"),
        result=get(b"result"),
        has_result=get(b"has_result") == b"1",
        error_type=text(b"error_type"),
        error_message=text(b"error_message"),
        cached=get(b"cached") == b"1",
        expires_at=number(b"expires_at"),
        extra=json.loads(extra) if extra else {},
    )


def _pairs(flat: Sequence[bytes]) -> dict[bytes, bytes]:
    """A hash as a script returns it (``HGETALL``: field, value, field, value, ...)."""
    return dict(zip(flat[::2], flat[1::2], strict=True))


def _glob_escape(text: str) -> str:
    """``text`` matched literally in a ``SCAN MATCH`` pattern."""
    return "".join(f"\\{c}" if c in "*?[]\\" else c for c in text)


def _ms(seconds: float) -> int:
    """A TTL in whole milliseconds; at least 1, which Redis accepts everywhere."""
    return max(1, math.ceil(seconds * 1000))


# redis-py names a failed pipeline command with its arguments, stored values included
_PIPELINE_COMMAND = re.compile(r"Command # (\d+) \((\S+).*?\) of pipeline caused error", re.DOTALL)


def _without_arguments(text: str) -> str:
    """A Redis error's text with the command's arguments (which may be secrets) left out."""
    return _PIPELINE_COMMAND.sub(r"Command # \1 (\2 ...) of pipeline caused error", text)


def _chunks(items: Sequence[_T], size: int = _CHUNK) -> Iterator[Sequence[_T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _flat(record: JobRecord) -> list[ScriptArg]:
    """A record's hash fields as a script takes them: count, then the pairs."""
    fields = _to_hash(record)
    return [len(fields), *(x for pair in fields.items() for x in pair)]


def _entry(key: str, raw: Mapping[bytes, bytes]) -> CacheEntry:
    def num(name: bytes) -> float | None:
        value = raw.get(name)
        return None if value is None else float(value)

    job_id = raw.get(b"job_id")
    return CacheEntry(
        key=key,
        channel=raw.get(b"channel", b"").decode(),
        result=raw.get(b"result"),
        created_at=num(b"created_at") or 0.0,
        expires_at=num(b"expires_at"),
        job_id=None if job_id is None else job_id.decode(),
    )


logger = logging.getLogger("msgcore.jobs")

_START_AFTER = 0.05
"""Seconds a job's first delivery runs before its ``running`` write is sent (see
``RedisStore._start_deferred``): how late another process may see ``running``."""

_JOB_FIELD = JOB_FIELD.encode()


def _count(value: bytes | None) -> int:
    return 0 if value is None else int(value)


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
        self._cache_channels = f"{prefix}{REDIS_CACHE_CHANNELS_KEY}"
        self._subscribers = f"{prefix}{REDIS_SUBSCRIBERS_KEY}"
        self._starting: dict[str, list[ScriptArg]] = {}
        """Attempts run without a start read whose ``running`` write is not sent yet."""
        self._waiting = DueLater(_START_AFTER, self._send_start)
        self._start_writes: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        return f"RedisStore({redact_url(self.url)!r}, prefix={self.prefix!r})"

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}{REDIS_JOB_KEY}{job_id}"

    def _kv(self, key: str) -> str:
        return f"{self.prefix}{REDIS_KV_KEY}{key}"

    def _cache_entry(self, key: str) -> str:
        return f"{self.prefix}{REDIS_CACHE_ENTRY_KEY}{key}"

    def _lock(self, key: str) -> str:
        return f"{self.prefix}{REDIS_LOCK_KEY}{key}"

    def _cache_inflight(self, key: str) -> str:
        return f"{self.prefix}{REDIS_CACHE_INFLIGHT_KEY}{key}"

    def _cache_by_age(self, channel: str) -> str:
        return f"{self.prefix}{REDIS_CACHE_BY_AGE_KEY}{channel}"

    def _cache_channel(self, channel: str) -> str:
        return f"{self.prefix}{REDIS_CACHE_CHANNEL_KEY}{channel}"

    # -- lifecycle -----------------------------------------------------------------------

    async def open(self) -> None:
        if self._client is not None:
            return
        try:
            # Blocking: a burst of concurrent handlers waits for a pooled connection
            # instead of failing with "Too many connections".
            packed = connection_class_for(self.url)
            pool = BlockingConnectionPool.from_url(
                self.url,
                max_connections=_MAX_CONNECTIONS,
                timeout=_POOL_TIMEOUT,
                **({} if packed is None else {"connection_class": packed}),
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
        self._waiting.clear()
        self._starting.clear()
        if self._start_writes:
            await asyncio.gather(*self._start_writes, return_exceptions=True)
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
            raise StoreUnavailableError(
                f"Cannot reach the Redis job store at {where} ({type(exc).__name__}: "
                f"{redact_url(str(exc))}). Check that Redis is running there and that the "
                "URL's host, port and password are right, or point MSGCORE_STORE_URL at "
                "another store."
            ) from None
        except RedisError as exc:
            raise StorageError(
                f"The Redis job store at {redact_url(self.url)} refused an operation: "
                f"{redact_url(_without_arguments(str(exc)))}"
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
        """``HGETALL`` of each job, one script call per chunk; ``{}`` for a missing job."""
        found: list[dict[bytes, bytes]] = []
        for chunk in _chunks(job_ids):
            keys = [self._job(job_id) for job_id in chunk]
            with self._errors():
                flats = await scripts.GET_JOBS(self._redis(), keys)
            found.extend(_pairs(flat) for flat in flats)
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
        *,
        fresh: bool = False,
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
        self,
        job_id: str,
        *,
        channel: str,
        attempt: int,
        worker_id: str,
        now: float,
        cache: CacheCheck | None = None,
    ) -> JobRecord:
        if cache is None and self._first_delivery_of(job_id, attempt):
            return self._start_deferred(job_id, channel, attempt, worker_id, now)
        if cache is None:
            script = scripts.START_ATTEMPT
            keys = [self._job(job_id), self._index]
            args: list[ScriptArg] = [job_id, channel, attempt, worker_id, repr(now)]
        else:
            script = scripts.START_ATTEMPT_CACHED
            keys = [
                self._job(job_id),
                self._index,
                self._feed,
                self._cache_entry(cache.key),
                self._cache_inflight(cache.key),
                self._cache_channel(channel),
                self._cache_channels,
            ]
            retention = cache.retention
            args = [
                job_id,
                channel,
                attempt,
                worker_id,
                repr(now),
                "1" if cache.read else "0",
                _ms(cache.lease),
                "" if retention is None else _ms(retention),
                "" if retention is None else repr(now + retention),
                REDIS_FEED_MAXLEN,
            ]
        client = self._redis()
        with self._errors():
            flat = await script(client, keys, args)
        return _from_hash(job_id, _pairs(flat))

    def _first_delivery_of(self, job_id: str, attempt: int) -> bool:
        """Is the entry being handled the first delivery of the message ``Client.submit``
        added with this job's record? Then no cancel can have taken it (a cancel
        deletes an entry no group has read, and refuses once one has) and no earlier
        attempt can have finished it: the record need not be read before running."""
        delivery = CURRENT_DELIVERY.get()
        return (
            self._with_transport
            and attempt == 1
            and delivery is not None
            and not delivery.retry_copy
            and delivery.attempt == 1
            and delivery.fields.get(_JOB_FIELD) == job_id.encode()
        )

    def _start_deferred(
        self, job_id: str, channel: str, attempt: int, worker_id: str, now: float
    ) -> JobRecord:
        """Run the attempt now; write ``running`` only if it lasts longer than
        ``_START_AFTER``. A shorter one records its start with its result, in its ack's
        round trip: one command per job at the worker, not two, and nothing to wait for
        before the handler runs."""
        self._starting[job_id] = [job_id, channel, attempt, worker_id, repr(now)]
        self._waiting.add(job_id)
        return new_record(
            job_id,
            channel,
            status=JobStatus.RUNNING,
            attempts=attempt,
            worker_id=worker_id,
            started_at=now,
        )

    def _send_start(self, job_id: str) -> None:
        pending = self._starting.pop(job_id, None)
        if pending is None or self._client is None:
            return
        task = asyncio.get_running_loop().create_task(self._write_start(job_id, pending))
        self._start_writes.add(task)
        task.add_done_callback(self._start_writes.discard)

    async def _write_start(self, job_id: str, args: list[ScriptArg]) -> None:
        try:
            with self._errors():
                # late: refused unless still pending (an outcome that landed first stays)
                await scripts.START_ATTEMPT(
                    self._redis(), [self._job(job_id), self._index], [*args, "1"]
                )
        except Exception as exc:  # the result write that follows records the attempt
            logger.warning(
                "job %s: recording its start failed: %s", job_id, exc, extra={"job_id": job_id}
            )

    async def finish_attempt(
        self, job_id: str, outcome: AttemptOutcome, *, alone: bool = False
    ) -> bool:
        keys, args = self._finish_call(job_id, outcome)
        client = self._redis()
        with self._errors():
            done = await scripts.FINISH_ATTEMPT(client, keys, args)
        return bool(done)

    @property
    def shares_transport_writer(self) -> bool:
        return self._with_transport

    def queue_finish_attempt(
        self, job_id: str, outcome: AttemptOutcome
    ) -> asyncio.Future[bool] | None:
        delivery = CURRENT_DELIVERY.get()
        if not self._with_transport or delivery is None or delivery.settled:
            return None
        keys, args = self._finish_call(job_id, outcome)
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
        self, job_id: str, outcome: AttemptOutcome
    ) -> tuple[list[str], list[ScriptArg]]:
        terminal, now = outcome.terminal, outcome.now
        # Only a terminal record expires; the others wait for their next attempt.
        retain = outcome.retention if terminal else None
        changes = {
            "status": outcome.status,
            "attempts": outcome.attempt,
            "finished_at": now if terminal else None,
            "result": outcome.result,
            "has_result": outcome.has_result,
            "error_type": outcome.error_type,
            "error_message": outcome.error_message,
            "cached": outcome.cached,
            "expires_at": None if retain is None else now + retain,
        }
        start = self._starting.pop(job_id, None)
        if start is not None:
            # ended before its running write was sent: this write records the start
            self._waiting.discard(job_id)
            changes["worker_id"], changes["started_at"] = start[3], start[4]
        encoded = {name: _encode(value) for name, value in changes.items()}
        pairs = [x for name, v in encoded.items() if v is not None for x in (name, v)]
        gone = [name for name, v in encoded.items() if v is None]
        keys = [self._job(job_id), self._index, self._feed]
        args: list[ScriptArg] = [
            job_id,
            outcome.status,
            repr(now),
            "" if retain is None else _ms(retain),
            REDIS_FEED_MAXLEN,
            len(pairs) // 2,
            len(gone),
            *pairs,
            *gone,
        ]
        if outcome.cache is not None and terminal:
            # a retry neither fills nor releases: the claim stays with the job
            fill_keys, fill_args = self._fill_call(
                outcome.cache,
                outcome.result,
                has_result=outcome.has_result,
                job_id=job_id,
                now=now,
            )
            keys += fill_keys
            args += fill_args
        return keys, args

    def _fill_call(
        self,
        fill: CacheFill,
        result: bytes | None,
        *,
        has_result: bool,
        job_id: str | None,
        now: float,
    ) -> tuple[list[str], list[ScriptArg]]:
        """The keys and ARGV of the scripts' ``fill()`` (``scripts.FILL_KEYS``/``FILL_ARGS``)."""
        ttl = fill.ttl
        capped = fill.max_entries is not None
        keys = [
            self._cache_entry(fill.key),
            self._cache_inflight(fill.key),
            self._cache_by_age(fill.channel),
            self._cache_channel(fill.channel),
            self._cache_channels,
        ]
        args: list[ScriptArg] = [
            fill.key,
            fill.channel,
            "1" if has_result and result is not None else "0",
            b"" if result is None else result,
            job_id or "",
            repr(now),
            "" if ttl is None else repr(now + ttl),
            "" if ttl is None else _ms(ttl),
            "" if fill.max_entries is None else fill.max_entries,
            "" if ttl is None or not capped else repr(now - ttl),
            f"{self.prefix}{REDIS_CACHE_ENTRY_KEY}",
        ]
        assert len(keys) == scripts.FILL_KEYS and len(args) == scripts.FILL_ARGS
        return keys, args

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

    # -- result cache --------------------------------------------------------------------

    async def cache_register(self, channel: str, policy: str) -> None:
        version = str(json.loads(policy)["version"])
        pipe = self._redis().pipeline(transaction=True)
        pipe.hset(self._cache_channel(channel), mapping={"policy": policy, "version": version})
        pipe.sadd(self._cache_channels, channel)
        with self._errors():
            await pipe.execute()

    async def cache_policy(self, channel: str) -> str | None:
        client = self._redis()
        with self._errors():
            value: Any = await client.hget(self._cache_channel(channel), "policy")
        return None if value is None else str(value.decode())

    async def cache_submit(self, items: Sequence[CacheSubmit], *, now: float) -> list[CacheClaim]:
        out: list[CacheClaim] = []
        for chunk in _chunks(items):
            keys = [self._index, self._feed, self._cache_channels]
            args: list[ScriptArg] = [f"{self.prefix}{REDIS_JOB_KEY}", repr(now), REDIS_FEED_MAXLEN]
            for item in chunk:
                r = item.record
                retention = item.retention
                hit = r.evolve(
                    status=JobStatus.COMPLETED,
                    attempts=0,
                    worker_id=None,
                    created_at=now,
                    started_at=now,
                    finished_at=now,
                    result=None,  # the entry's, set by the script
                    has_result=True,
                    error_type=None,
                    error_message=None,
                    cached=True,
                    expires_at=None if retention is None else now + retention,
                )
                keys += [
                    self._job(r.job_id),
                    self._cache_channel(r.channel),
                    self._cache_entry(item.key),
                    self._cache_inflight(item.key),
                ]
                args += [
                    r.job_id,
                    item.version,
                    repr(r.created_at),
                    "" if r.expires_at is None else math.ceil(r.expires_at * 1000),
                    _ms(item.lease),
                    "" if retention is None else _ms(retention),
                    *_flat(r),
                    *_flat(hit),
                ]
            client = self._redis()
            with self._errors():
                replies = await scripts.CACHE_SUBMIT(client, keys, args)
            for item, reply in zip(chunk, replies, strict=True):
                kind = ClaimKind(reply[0].decode())
                if kind is ClaimKind.STALE:
                    out.append(CacheClaim(kind, None))
                elif kind is ClaimKind.CLAIMED:
                    out.append(CacheClaim(kind, item.record))
                else:
                    job_id = reply[2].decode() if kind is ClaimKind.JOINED else item.record.job_id
                    out.append(CacheClaim(kind, _from_hash(job_id, _pairs(reply[1]))))
        return out

    async def cache_lookup(self, key: str, *, now: float, count: bool = True) -> CacheEntry | None:
        client = self._redis()
        with self._errors():
            flat = await scripts.CACHE_LOOKUP(
                client,
                [self._cache_entry(key)],
                [repr(now), "1" if count else "0", f"{self.prefix}{REDIS_CACHE_CHANNEL_KEY}"],
            )
        return None if flat is None else _entry(key, _pairs(flat))

    async def cache_fill(
        self, fill: CacheFill, result: bytes, *, job_id: str | None, now: float
    ) -> None:
        keys, args = self._fill_call(fill, result, has_result=True, job_id=job_id, now=now)
        client = self._redis()
        with self._errors():
            await scripts.CACHE_FILL(client, keys, args)

    async def cache_extend(self, key: str, job_id: str, *, lease: float, now: float) -> bool:
        client = self._redis()
        with self._errors():
            kept = await scripts.CACHE_EXTEND(
                client, [self._cache_inflight(key)], [job_id, _ms(lease)]
            )
        return bool(kept)

    async def cache_release(self, claims: Sequence[tuple[str, str]]) -> None:
        for chunk in _chunks(claims):
            client = self._redis()
            with self._errors():
                await scripts.CACHE_RELEASE(
                    client,
                    [self._cache_inflight(key) for key, _ in chunk],
                    [job_id for _, job_id in chunk],
                )

    async def _cache_channel_names(self, channel: str | None) -> list[str]:
        if channel is not None:
            return [channel]
        client = self._redis()
        with self._errors():
            members: Any = await client.smembers(self._cache_channels)
        return sorted(m.decode() for m in members)

    async def cache_stats(self, *, channel: str | None = None) -> list[CacheStats]:
        channels = await self._cache_channel_names(channel)
        if not channels:
            return []
        keys = [k for c in channels for k in (self._cache_channel(c), self._cache_by_age(c))]
        client = self._redis()
        with self._errors():
            replies = await scripts.CACHE_STATS(
                client, keys, [f"{self.prefix}{REDIS_CACHE_ENTRY_KEY}"]
            )
        out: list[CacheStats] = []
        for name, ((hits, misses, joined, version), entries, size) in zip(
            channels, replies, strict=True
        ):
            out.append(
                CacheStats(
                    channel=name,
                    hits=_count(hits),
                    misses=_count(misses),
                    joined=_count(joined),
                    entries=int(entries),
                    bytes=int(size),
                    version=None if version is None else version.decode(),
                )
            )
        return out

    async def cache_clear(self, *, channel: str | None = None) -> int:
        channels = await self._cache_channel_names(channel)
        if not channels:
            return 0
        keys = [k for c in channels for k in (self._cache_channel(c), self._cache_by_age(c))]
        client = self._redis()
        with self._errors():
            cleared = await scripts.CACHE_CLEAR(
                client, keys, [f"{self.prefix}{REDIS_CACHE_ENTRY_KEY}"]
            )
        return int(cleared)

    # -- per-key locks -------------------------------------------------------------------
    # The lease is the hash's TTL on the server's clock; ``now`` only dates what is
    # reported back.

    async def lock_acquire(
        self, key: str, token: str, *, holder: str, lease: float, now: float
    ) -> LockHolder | None:
        client = self._redis()
        with self._errors():
            held: Any = await scripts.LOCK_ACQUIRE(
                client, [self._lock(key)], [token, holder, _ms(lease)]
            )
        if held is None:
            return None
        who, left_ms = held
        return LockHolder(key, who.decode(), now + max(int(left_ms), 0) / 1000)

    async def lock_extend(self, key: str, token: str, *, lease: float, now: float) -> bool:
        client = self._redis()
        with self._errors():
            return bool(await scripts.LOCK_EXTEND(client, [self._lock(key)], [token, _ms(lease)]))

    async def lock_release(self, key: str, token: str) -> bool:
        client = self._redis()
        with self._errors():
            return bool(await scripts.LOCK_RELEASE(client, [self._lock(key)], [token]))

    async def list_locks(self, *, now: float, prefix: str = "") -> list[LockHolder]:
        start = self._lock("")
        match = f"{_glob_escape(start)}{_glob_escape(prefix)}*"
        client = self._redis()
        with self._errors():
            names = sorted({name async for name in client.scan_iter(match=match, count=1000)})
        found: list[LockHolder] = []
        for chunk in _chunks(names):
            pipe = self._redis().pipeline(transaction=False)
            for name in chunk:
                pipe.hget(name, "holder")
                pipe.pttl(name)
            with self._errors():
                replies = await pipe.execute()
            for name, who, left_ms in zip(chunk, replies[::2], replies[1::2], strict=True):
                if who is not None and int(left_ms) > 0:
                    key = name.decode()[len(start) :]
                    found.append(LockHolder(key, who.decode(), now + int(left_ms) / 1000))
        return found

    # -- subscriber registry -------------------------------------------------------------

    async def register_subscribers(self, entries: Sequence[tuple[str, str]]) -> None:
        if not entries:
            return
        now = repr(time.time())
        # JSON keeps the pair apart whatever characters channel and group contain
        fields = {json.dumps([channel, group]): now for channel, group in entries}
        client = self._redis()
        with self._errors():
            await client.hset(self._subscribers, mapping=fields)  # type: ignore[arg-type]

    async def registered_subscribers(self) -> list[tuple[str, str]]:
        client = self._redis()
        with self._errors():
            fields: Any = await client.hkeys(self._subscribers)
        pairs: set[tuple[str, str]] = set()
        for field in fields:
            try:
                channel, group = json.loads(field)
            except (ValueError, TypeError):  # not written by register_subscribers
                continue
            if isinstance(channel, str) and isinstance(group, str):
                pairs.add((channel, group))
        return sorted(pairs)

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

    @contextmanager
    def _kv_errors(self, key: str, *, wants: str) -> Iterator[None]:
        with self._errors():
            try:
                yield
            except ResponseError as exc:
                if "WRONGTYPE" not in str(exc):
                    raise
                raise wrong_kind(key, wants=wants) from None

    async def get(self, key: str) -> str | None:
        client = self._redis()
        with self._kv_errors(key_arg(key), wants="value"):
            value: Any = await client.get(self._kv(key))
        return None if value is None else str(value.decode())

    async def set(self, key: str, value: str, *, ttl: float | None = None) -> None:
        key = key_arg(key)
        text, seconds = value_arg(key, value), ttl_arg(ttl)
        # A plain SET also clears an earlier TTL, which is what ttl=None asks for.
        client = self._redis()
        with self._errors():
            await client.set(self._kv(key), text, px=None if seconds is None else _ms(seconds))

    async def delete(self, *keys: str) -> int:
        if not keys:
            return 0
        names = {self._kv(key_arg(k)) for k in keys}
        client = self._redis()
        with self._errors():
            return int(await client.delete(*names))

    async def hset(self, key: str, mapping: Mapping[str, str], *, ttl: float | None = None) -> None:
        key = key_arg(key)
        fields, seconds = mapping_arg(key, mapping), ttl_arg(ttl)
        if not fields:
            # Redis has no empty hashes: only the expiry can change.
            if seconds is not None:
                await self.expire(key, seconds)
            return
        pipe = self._redis().pipeline(transaction=True)
        pipe.hset(self._kv(key), mapping=cast(Any, fields))
        if seconds is not None:
            pipe.pexpire(self._kv(key), _ms(seconds))
        with self._kv_errors(key, wants="hash"):
            await pipe.execute()

    async def hgetall(self, key: str) -> dict[str, str]:
        client = self._redis()
        with self._kv_errors(key_arg(key), wants="hash"):
            raw: Any = await client.hgetall(self._kv(key))
        return {k.decode(): v.decode() for k, v in raw.items()}

    async def expire(self, key: str, ttl: float) -> bool:
        key, seconds = key_arg(key), ttl_arg(ttl, optional=False)
        assert seconds is not None
        client = self._redis()
        with self._errors():
            return bool(await client.pexpire(self._kv(key), _ms(seconds)))

    # -- housekeeping --------------------------------------------------------------------

    async def purge_expired(self, *, now: float) -> int:
        """Redis deletes expired records and cache entries itself; this only drops their
        index and by-age members."""
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
        await self._drop_expired_entries()
        return 0

    async def _drop_expired_entries(self) -> None:
        """Forget by-age members whose entry expired (``DROP_STALE`` on each channel's
        sorted set, rechecking each entry inside the script like for the jobs index)."""
        entry_prefix = f"{self.prefix}{REDIS_CACHE_ENTRY_KEY}"
        for channel in await self._cache_channel_names(None):
            by_age = self._cache_by_age(channel)
            stale: list[str] = []
            start = 0
            while True:
                client = self._redis()
                with self._errors():
                    raw: Any = await client.zrange(by_age, start, start + _SCAN - 1)
                if not raw:
                    break
                start += len(raw)
                members = [m.decode() for m in raw]
                pipe = self._redis().pipeline(transaction=False)
                for key in members:
                    pipe.exists(f"{entry_prefix}{key}")
                with self._errors():
                    exists = await pipe.execute()
                stale += [k for k, found in zip(members, exists, strict=True) if not found]
            for chunk in _chunks(stale):
                client = self._redis()
                with self._errors():
                    await scripts.DROP_STALE(
                        client, [by_age, *(f"{entry_prefix}{k}" for k in chunk)], chunk
                    )
