"""Jobs on every transport and both store backends: results, errors, waits, idempotency.

Each test runs on SQLite, Redis and RabbitMQ (in memory and real, or real only) with the
job store on a SQLite file and on Redis.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from msgcore import (
    CachePolicy,
    Client,
    ConfigurationError,
    JobCancelledError,
    JobFailed,
    JobNotFoundError,
    JobStatus,
    JobTimeoutError,
    PayloadError,
    ResultTypeError,
    RetryPolicy,
    Router,
    SyncClient,
    open_store,
)
from msgcore.store import store_url_for
from msgcore.store.redis import RedisStore
from msgcore.store.sqlite import SqliteStore

from .harness import Sink, Transport, running


class Render(BaseModel):
    doc: str
    pages: int


class Rendered(BaseModel):
    doc: str
    size: int


async def test_result_round_trip(transport: Transport, store_url: str | None, unique: str) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("render")
    async def render(job: Render) -> Rendered:
        return Rendered(doc=job.doc, size=job.pages * 10)

    async with running(transport, router, store_url) as client:
        # a store on the transport's own SQLite file or Redis server writes with the
        # transport (records commit with their messages and acks)
        shared = (
            transport.real
            and transport.name in ("sqlite", "redis")
            and store_url in (None, transport.url)
        )
        assert client.store.shares_transport_writer is shared
        job = await client.submit(f"{unique}.render", Render(doc="a.md", pages=3))
        assert await job.result(timeout=10) == {"doc": "a.md", "size": 30}
        assert await job.result(timeout=1, as_type=Rendered) == Rendered(doc="a.md", size=30)
        assert job.record.status is JobStatus.COMPLETED
        assert job.record.attempts == 1
        assert job.record.worker_id
        assert job.record.started_at is not None
        assert job.record.finished_at is not None
        assert job.record.finished_at >= job.record.started_at >= job.record.created_at

        # any other process (another store connection) reads the same record
        settings = transport.settings(store_url=client.settings.store_url)
        async with open_store(store_url_for(settings), settings=settings) as other:
            record = await other.get_job(job.id)
        assert record is not None
        assert record.status is JobStatus.COMPLETED


async def test_idempotent_submit(transport: Transport, store_url: str | None, unique: str) -> None:
    router = Router(prefix=f"{unique}.")
    calls = Sink()

    @router.subscriber("orders")
    async def handle(n: int) -> int:
        calls.add(n)
        return n * 2

    async with running(transport, router, store_url) as client:
        first = await client.submit(f"{unique}.orders", 21, job_id=f"{unique}-order-42")
        second = await client.submit(f"{unique}.orders", 99, job_id=f"{unique}-order-42")
        assert first.id == second.id == f"{unique}-order-42"
        assert await first.result(timeout=10) == 42
        third = await client.submit(f"{unique}.orders", 7, job_id=f"{unique}-order-42")
        assert third.record.status is JobStatus.COMPLETED
        assert await third.result(timeout=1) == 42
        await asyncio.sleep(0.3)  # a duplicate would have run by now
        assert calls.items == [21]


async def test_job_ids_are_non_empty_strings_of_at_most_255_bytes(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("orders")
    async def handle(n: int) -> int:
        return n + 1

    async with running(transport, router, store_url) as client:
        channel = f"{unique}.orders"
        # the longest id that every transport carries (RabbitMQ: the correlation id)
        longest = f"{unique}-" + "é" * ((255 - len(unique) - 1) // 2)
        assert len(longest.encode()) <= 255
        job = await client.submit(channel, 1, job_id=longest)
        assert job.id == longest
        assert await job.result(timeout=10) == 2
        assert (await client.get_job(longest)).record.status is JobStatus.COMPLETED
        # an empty id used to get a generated one: a second submit queued the job again
        for bad, match in (("", "non-empty str"), (7, "non-empty str"), ("x" * 256, "256 bytes")):
            with pytest.raises(ConfigurationError, match=match):
                await client.submit(channel, 1, job_id=bad)  # type: ignore[arg-type]
        assert [r.job_id for r in await client.store.list_jobs(channel=channel)] == [longest]


async def test_submit_many_and_wait(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("square", max_workers=4)
    async def square(n: int) -> int:
        return n * n

    async with running(transport, router, store_url) as client:
        jobs = await client.submit_many(f"{unique}.square", range(300), batch_size=64)
        assert len({j.id for j in jobs}) == 300
        done = await client.wait(jobs, timeout=30)
        assert not done.pending
        assert len(done.completed) == 300
        assert [j.outcome() for j in jobs] == [n * n for n in range(300)]
        assert done.counts() == {"completed": 300}
        for bad in (0, -1, 2.5):
            with pytest.raises(ConfigurationError, match="batch_size"):
                await client.submit_many(f"{unique}.square", [1], batch_size=bad)  # type: ignore[arg-type]
        assert len(await client.store.list_jobs(channel=f"{unique}.square", limit=1000)) == 300


async def test_a_submit_whose_publish_fails_leaves_no_record(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls = Sink()

    @router.subscriber("orders")
    async def handle(n: int) -> int:
        calls.add(n)
        return n

    async with running(transport, router, store_url) as client:
        channel = f"{unique}.orders"
        handle_ = client._publisher(channel)
        publish = handle_._publish  # the client's own, past its argument checks
        made: list[str] = []

        async def refused(*args: Any, **kwargs: Any) -> None:
            made.append(kwargs["correlation_id"])
            await asyncio.sleep(0)
            raise ConnectionError("broker gone")

        handle_._publish = refused  # type: ignore[method-assign]
        with pytest.raises(ConnectionError, match="broker gone"):
            await client.submit(channel, 1)
        with pytest.raises(ConnectionError, match="broker gone"):
            await client.submit_many(channel, [2, 3])
        assert len(made) == 3
        assert await client.store.get_jobs(made) == {}

        handle_._publish = publish  # type: ignore[method-assign]
        assert await (await client.submit(channel, 4)).result(timeout=10) == 4
        assert calls.items == [4]


@pytest.mark.parametrize("cached", [False, True], ids=["plain", "cached"])
async def test_a_payload_that_cannot_be_encoded_sends_and_stores_nothing(
    transport: Transport, store_url: str | None, unique: str, cached: bool
) -> None:
    """On a cached channel too: there the misses of a batch were claimed and sent one by
    one, so a bad payload stopped the batch after the good ones had gone out."""
    router = Router(prefix=f"{unique}.")
    calls = Sink()

    @router.subscriber("orders", cache=CachePolicy() if cached else None)
    async def handle(n: int) -> int:
        calls.add(n)
        return n

    async with running(transport, router, store_url) as client:
        channel = f"{unique}.orders"
        with pytest.raises(PayloadError, match=f"channel '{channel}'.*nothing was sent"):
            await client.submit(channel, object())
        # a batch is all or nothing: the good payloads before the bad one are not sent
        with pytest.raises(PayloadError, match="Unable to serialize"):
            await client.submit_many(channel, [1, 2, {"bad": object()}, 3])
        with pytest.raises(PayloadError):
            await client.request(channel, object(), timeout=1)
        with pytest.raises(PayloadError, match="can't encode"):  # was a bare UnicodeEncodeError
            await client.submit_many(channel, [5, "\ud800"])
        with pytest.raises(ConfigurationError, match="non-empty string"):
            await client.submit("", 1)
        assert await client.store.list_jobs(channel=channel) == []

        assert await (await client.submit(channel, 4)).result(timeout=10) == 4
        await asyncio.sleep(0.3)  # a message of the refused batch would have run by now
        assert calls.items == [4]


async def test_arguments_beside_the_payload_are_checked_alike_before_anything_is_stored(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    """Headers, delay, priority and timeout: one answer on every transport. Before, a
    text priority stored on SQLite headed every claim of its channel and blocked it for
    good; a caller's x-msgcore-job-id header made a request answer with that job's
    result; NaN and infinite delays were a storage error, "now" or a bare error."""
    router = Router(prefix=f"{unique}.")
    calls = Sink()

    @router.subscriber("orders")
    async def handle(n: int) -> int:
        calls.add(n)
        return n

    async with running(transport, router, store_url) as client:
        channel = f"{unique}.orders"
        done = await client.submit(channel, 1)
        assert await done.result(timeout=10) == 1
        refused: list[tuple[Any, type[Exception], str]] = [
            (client.submit(channel, 2, priority="high"), ConfigurationError, "priority="),
            (client.submit(channel, 2, priority=1.5), ConfigurationError, "priority="),
            (client.submit(channel, 2, priority=2**64), ConfigurationError, "priority="),
            (client.submit(channel, 2, delay=math.nan), ConfigurationError, "delay="),
            (client.submit(channel, 2, delay=math.inf), ConfigurationError, "delay="),
            (client.submit(channel, 2, delay="3"), ConfigurationError, "delay="),
            (
                client.submit(channel, 2, headers={"x-msgcore-job-id": done.id}),
                PayloadError,
                "msgcore's own",
            ),
            (client.submit(channel, 2, headers={"reply_to": "x"}), PayloadError, "msgcore's own"),
            (client.submit(channel, 2, headers={"h": object()}), PayloadError, "got object"),
            (client.submit(channel, 2, headers={"h": b"\xff"}), PayloadError, "got bytes"),
            (client.submit(channel, 2, headers={"h": [1]}), PayloadError, "got list"),
            (client.submit(channel, 2, headers={1: "v"}), PayloadError, "non-empty str"),
            (client.submit(channel, 2, headers=[("h", "v")]), PayloadError, "must be a dict"),
            (
                client.submit_many(channel, [2, 3], headers={"X-Msgcore-Attempt": "7"}),
                PayloadError,
                "msgcore's own",
            ),
            (
                client.request(channel, 2, headers={"x-msgcore-job-id": done.id}),
                PayloadError,
                "msgcore's own",
            ),
            (client.request(channel, 2, timeout=0), ConfigurationError, "timeout="),
            (client.request(channel, 2, timeout=-1), ConfigurationError, "timeout="),
            (client.request(channel, 2, timeout=math.nan), ConfigurationError, "timeout="),
        ]
        for call, error, match in refused:
            with pytest.raises(error, match=match):
                await call
        assert [r.job_id for r in await client.store.list_jobs(channel=channel)] == [done.id]
        # what every transport takes: priority 0, scalar headers, a past delay
        ok = await client.submit(
            channel, 4, priority=0, delay=-1, headers={"s": "v", "i": 1, "f": 1.5, "b": True}
        )
        assert await ok.result(timeout=10) == 4
        assert await client.request(channel, 5, timeout=10) == 5
        await asyncio.sleep(0.3)  # a refused message would have run by now
        assert calls.items == [1, 4, 5]


async def test_a_submit_publishes_before_other_ready_work(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    """The publish is what a submit waits for (a round trip to the broker): it starts
    before anything else the loop had ready, not a loop iteration later. Started by
    ``gather()`` it waited behind a worker's work in the same process (~0.35 ms per
    submit on RabbitMQ; docs/benchmarks.md, "Job tracking")."""
    router = Router(prefix=f"{unique}.")

    @router.subscriber("orders")
    async def handle(n: int) -> int:
        return n

    async with running(transport, router, store_url) as client:
        channel = f"{unique}.orders"
        await (await client.submit(channel, 0)).result(timeout=10)
        handle_ = client._publisher(channel)
        publish = handle_._publish
        order: list[str] = []

        async def watched(*args: Any, **kwargs: Any) -> None:
            order.append("publish")
            await publish(*args, **kwargs)

        handle_._publish = watched  # type: ignore[method-assign]
        asyncio.get_running_loop().call_soon(order.append, "other")
        job = await client.submit(channel, 1)
        assert order[:2] == ["publish", "other"]
        assert await job.result(timeout=10) == 1


async def test_a_worker_with_one_slot_records_each_result_at_once(
    transport: Transport, store_url: str | None, unique: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one handler slot no other job's result can join a commit, so the worker
    tells the store to write it at once (``alone``); with more slots the results of
    the jobs running together are left to commit together. Either way every result
    is recorded."""
    router = Router(prefix=f"{unique}.")

    @router.subscriber("one", max_workers=1)
    async def one(n: int) -> int:
        return n

    @router.subscriber("many", max_workers=3)
    async def many(n: int) -> int:
        await asyncio.sleep(0.01)
        return n + 100

    alone_of: dict[str, bool] = {}
    for cls in (SqliteStore, RedisStore):
        finish = cls.finish_attempt

        async def spy(
            self: Any,
            job_id: str,
            outcome: Any,
            *,
            alone: bool = False,
            _finish: Any = finish,
        ) -> bool:
            alone_of[job_id] = alone
            return bool(await _finish(self, job_id, outcome, alone=alone))

        monkeypatch.setattr(cls, "finish_attempt", spy)

    async with running(transport, router, store_url) as client:
        ones = []
        for n in range(4):  # one job under way at a time
            ones.append(job := await client.submit(f"{unique}.one", n))
            assert await job.result(timeout=10) == n
        manys = await client.submit_many(f"{unique}.many", range(6))
        done = await client.wait(manys, timeout=20)
        assert len(done.completed) == 6
        assert [await j.result(timeout=5) for j in manys] == list(range(100, 106))
        shared = client.store.shares_transport_writer
    if shared:  # the results commit with the acks instead
        assert alone_of == {}
    else:
        assert [alone_of[j.id] for j in ones] == [True] * 4
        assert [alone_of[j.id] for j in manys] == [False] * 6


@pytest.mark.real_only
async def test_wait_times_out_cleanly(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("busy")
    async def busy(n: int) -> None: ...

    async with running(transport, router, store_url) as client:
        # nobody consumes this channel: the job stays pending
        job = await client.submit(transport.uses(f"{unique}.nobody"), 1)
        started = time.monotonic()
        result = await client.wait([job], timeout=0.5)
        assert 0.45 <= time.monotonic() - started < 3
        assert result.done == []
        assert [j.id for j in result.pending] == [job.id]
        assert job.record.status is JobStatus.PENDING
        with pytest.raises(JobTimeoutError) as caught:
            await job.result(timeout=0.3)
        assert isinstance(caught.value, TimeoutError)
        assert caught.value.job_id == job.id
        assert await job.status() is JobStatus.PENDING


async def test_request_reply_through_client(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("echo")
    async def echo(text: str) -> str:
        return text.upper()

    async with running(transport, router, store_url) as client:
        assert await client.request(f"{unique}.echo", "hi", timeout=10) == "HI"


# In memory a publish runs its handler inline (and TestRabbitBroker refuses a channel
# without subscribers), so no job stays pending there.
async def test_wait_get_job_and_cancel_check_their_arguments(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    """Bare ValueError, TypeError and AttributeError before; cancel(None) was a storage
    error on Redis and "no such job" on SQLite."""
    router = Router(prefix=f"{unique}.")

    @router.subscriber("orders")
    async def handle(n: int) -> int:
        return n

    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.orders", 1)
        calls: list[Any] = [
            client.wait([job], return_when="any"),
            client.wait([job], timeout="1"),
            client.wait([job], timeout=math.nan),
            client.wait([job], timeout=-1),
            client.wait(job),
            client.wait(None),
            client.wait([job.id]),
            client.get_job(None),
            client.get_job(123),
            client.cancel(None),
        ]
        for call in calls:
            with pytest.raises(ConfigurationError):
                await call
        done = await client.wait([job], timeout=10, return_when="first")
        assert done.completed == [job]


# In memory a publish runs its handler inline (and TestRabbitBroker refuses a channel
# without subscribers), so no job stays pending there.
@pytest.mark.real_only
async def test_wait_first(transport: Transport, store_url: str | None, unique: str) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("fast")
    async def fast(n: int) -> int:
        return n

    async with running(transport, router, store_url) as client:
        quick = await client.submit(f"{unique}.fast", 1)
        never = await client.submit(transport.uses(f"{unique}.nobody"), 2)
        result = await client.wait([never, quick], timeout=10, return_when="first")
        assert [j.id for j in result.done] == [quick.id]
        assert [j.id for j in result.pending] == [never.id]


@pytest.mark.real_only
async def test_failure_retries_then_job_failed(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    attempts: Counter[int] = Counter()

    @router.subscriber("fragile", retry=RetryPolicy(max_attempts=3, backoff=0.05, jitter=0))
    async def fragile(n: int) -> int:
        attempts[n] += 1
        raise ValueError(f"cannot render {n}: the template is missing")

    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.fragile", 5)
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=20)
        assert caught.value.job_id == job.id
        assert caught.value.error_type == "ValueError"
        assert caught.value.error_message == "cannot render 5: the template is missing"
        assert caught.value.attempts == 3
        assert "cannot render 5" in str(caught.value)
        assert attempts[5] == 3
        assert job.record.status is JobStatus.DEAD
        dead = await transport.wait_dead_letters(client._broker, f"{unique}.fragile", 1)
        assert len(dead) == 1


@pytest.mark.real_only
async def test_retry_then_success_records_attempts(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    seen: list[int] = []

    @router.subscriber("flaky", retry=RetryPolicy(max_attempts=4, backoff=0.05, jitter=0))
    async def flaky(n: int) -> str:
        seen.append(n)
        if len(seen) < 3:
            raise ConnectionError("upstream hiccup")
        return "ok"

    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.flaky", 1)
        assert await job.result(timeout=20) == "ok"
        assert job.record.attempts == 3
        assert job.record.status is JobStatus.COMPLETED
        # the error of the failed attempts does not stick to the completed record
        assert job.record.error_type is None


@pytest.mark.real_only
async def test_invalid_payload_is_dead_at_once(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("render")
    async def render(job: Render) -> None: ...

    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.render", {"doc": "x"})  # no pages
        with pytest.raises(JobFailed) as caught:
            await job.result(timeout=15)
        assert caught.value.error_type == "ValidationError"
        assert caught.value.attempts == 1


@pytest.mark.real_only
async def test_cancel_before_start(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    ran = Sink()

    @router.subscriber("later")
    async def later(n: int) -> None:
        ran.add(n)

    async with running(transport, router, store_url) as client:
        job = await client.submit(f"{unique}.later", 1, delay=1.0)
        assert await client.cancel(job.id) is True
        assert await client.cancel(job.id) is False  # terminal already
        # a mistyped id is not "too late": the caller is told there is no such job
        with pytest.raises(JobNotFoundError, match="never submitted"):
            await client.cancel(f"{job.id}-typo")
        with pytest.raises(JobCancelledError):
            await job.result(timeout=1)
        # the message still arrives; the worker acknowledges it without running it
        control = await client.submit(f"{unique}.later", 2, delay=1.0)
        await control.result(timeout=15)
        assert ran.items == [2]
        assert await job.status() is JobStatus.CANCELLED


@pytest.mark.real_only
async def test_cancel_before_any_worker_has_it(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    """A job submitted at once (no delay) and cancelled before a worker has read it
    never runs, when workers start later (on Redis its message is deleted)."""
    ran = Sink()
    idle = Router(prefix=f"{unique}.")

    @idle.subscriber("other")
    async def other(n: int) -> None: ...

    async with running(transport, idle, store_url) as client:
        job = await client.submit(f"{unique}.later", 1)
        assert await client.cancel(job.id) is True
        assert await client.cancel(job.id) is False  # terminal already

    router = Router(prefix=f"{unique}.")

    @router.subscriber("later")
    async def later(n: int) -> None:
        ran.add(n)

    async with running(transport, router, store_url) as client:
        control = await client.submit(f"{unique}.later", 2)
        await control.result(timeout=15)
        await asyncio.sleep(0.3)  # a job cancelled but delivered would run by now
        assert ran.items == [2]
        assert (await client.get_job(job.id)).record.status is JobStatus.CANCELLED


async def test_handler_result_types(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("kinds")
    async def kinds(kind: str) -> Any:
        return {"none": None, "list": [1, "a"], "text": "é", "model": Rendered(doc="d", size=1)}[
            kind
        ]

    async with running(transport, router, store_url) as client:
        jobs = {k: await client.submit(f"{unique}.kinds", k) for k in ("none", "list", "text")}
        jobs["model"] = await client.submit(f"{unique}.kinds", "model")
        await client.wait(jobs.values(), timeout=15)
        assert jobs["none"].outcome() is None
        assert jobs["none"].record.has_result
        assert jobs["list"].outcome() == [1, "a"]
        assert jobs["text"].outcome() == "é"
        assert jobs["model"].outcome(Rendered) == Rendered(doc="d", size=1)
        # a result that does not fit the type asked for: a typed error, the record as it was
        with pytest.raises(ResultTypeError, match="does not fit int: Input should be a valid"):
            await jobs["text"].result(as_type=int)
        assert jobs["text"].outcome() == "é"


async def test_a_nested_async_with_leaves_the_client_connected(tmp_path: Path) -> None:
    """The inner block's exit closed the client for the outer one."""
    client = Client(f"sqlite:///{tmp_path / 'nested.db'}")
    async with client:
        async with client:
            await client.store.list_jobs()
        await client.store.list_jobs()  # still connected
    with pytest.raises(ConfigurationError, match="not connected"):
        client.store  # noqa: B018
    with SyncClient(f"sqlite:///{tmp_path / 'nested.db'}") as sync:
        with sync:
            sync.get_job  # noqa: B018
        assert sync.cancel(sync.submit("nested", 1).id) is True
    with pytest.raises(ConfigurationError, match="not connected"):
        sync.cancel("x")
