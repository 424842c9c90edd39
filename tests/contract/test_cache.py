"""The result cache on every transport and both store backends.

Each test runs on SQLite, Redis and RabbitMQ (in memory and real, or real only) with the
store on a SQLite file, on Redis and beside the transport.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import pytest
from pydantic import BaseModel

from msgcore import CachePolicy, Client, JobFailed, JobStatus, RetryPolicy, Router

from .harness import Transport, running


class Page(BaseModel):
    doc: str
    width: int


def by_doc(payload: Any) -> Any:
    """A cache key function: only the document matters, not the requested width."""
    return payload["doc"]


async def test_repeated_payloads_run_the_handler_once_per_payload(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: Counter[int] = Counter()

    @router.subscriber("square", max_workers=4, cache=True)
    async def square(n: int) -> int:
        calls[n] += 1
        await asyncio.sleep(0.001)
        return n * n

    channel = f"{unique}.square"
    payloads = [i % 20 for i in range(200)]
    async with running(transport, router, store_url) as client:
        # one by one, concurrently, and in batches: every duplicate joins or hits
        half = await asyncio.gather(*(client.submit(channel, n) for n in payloads[:100]))
        rest = await client.submit_many(channel, payloads[100:], batch_size=50)
        jobs = [*half, *rest]
        done = await client.wait(jobs, timeout=60)
        assert len(done.completed) == 200, done.counts()
        assert [await j.result() for j in jobs] == [n * n for n in payloads]
        assert sum(calls.values()) == 20
        assert set(calls.values()) == {1}

        # a second run of the same payloads: answered at submit, nothing runs
        again = await client.submit_many(channel, payloads)
        assert all(j.done and j.cached for j in again)
        assert [j.record.status for j in again] == [JobStatus.COMPLETED] * 200
        assert [await j.result() for j in again] == [n * n for n in payloads]
        assert sum(calls.values()) == 20
        [stats] = await client.cache_stats(channel)
        assert (stats.misses, stats.entries) == (20, 20)
        assert stats.hits + stats.joined == 380
        assert stats.hits >= 200


async def test_equivalent_json_hits_and_other_payloads_miss(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: list[Any] = []

    @router.subscriber("layout", cache=True)
    async def layout(page: dict[str, Any]) -> str:
        calls.append(page)
        return f"{page['doc']}@{page['width']}"

    channel = f"{unique}.layout"
    async with running(transport, router, store_url) as client:
        first = await client.submit(channel, {"doc": "a.md", "width": 80})
        assert await first.result(timeout=10) == "a.md@80"
        assert not first.cached
        for same in (
            {"width": 80, "doc": "a.md"},  # field order
            {"doc": "a.md", "width": 80.0},  # 80 and 80.0 are one JSON number
            Page(doc="a.md", width=80),  # a model of the same fields
            b'{ "width" : 80, "doc": "a\\u002emd" }',  # spacing and escapes
        ):
            job = await client.submit(channel, same)
            assert job.cached and job.done, same
            assert await job.result() == "a.md@80"
        other = await client.submit(channel, {"doc": "a.md", "width": 81})
        assert not other.cached
        assert await other.result(timeout=10) == "a.md@81"
        assert len(calls) == 2


async def test_a_new_handler_version_misses(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    def router_of(version: str, calls: list[str]) -> Router:
        router = Router(prefix=f"{unique}.")

        @router.subscriber("convert", cache=CachePolicy(version=version))
        async def convert(doc: str) -> str:
            calls.append(version)
            return f"{doc} v{version}"

        return router

    channel = f"{unique}.convert"
    calls: list[str] = []
    client_settings = transport.settings(store_url=store_url)
    async with running(transport, router_of("1", calls), store_url) as client:
        assert await (await client.submit(channel, "x.svg")).result(timeout=10) == "x.svg v1"
        assert (await client.submit(channel, "x.svg")).cached
    # the workers are redeployed with version 2; a long-lived client keeps working
    async with running(transport, router_of("2", calls), store_url) as client:
        assert client.settings.store_url == client_settings.store_url
        job = await client.submit(channel, "x.svg")
        assert not job.cached
        assert await job.result(timeout=10) == "x.svg v2"
        assert (await client.submit(channel, "x.svg")).cached
    assert calls == ["1", "2"]


async def test_a_key_function_picks_the_fields_that_matter(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: list[Any] = []

    @router.subscriber("thumb", cache=CachePolicy(key=by_doc))
    async def thumb(page: Page) -> str:
        calls.append(page)
        return f"thumb of {page.doc}"

    channel = f"{unique}.thumb"
    async with running(transport, router, store_url) as client:
        first = await client.submit(channel, Page(doc="a.md", width=80))
        assert await first.result(timeout=10) == "thumb of a.md"
        second = await client.submit(channel, Page(doc="a.md", width=640))
        assert second.cached
        third = await client.submit(channel, Page(doc="b.md", width=80))
        assert await third.result(timeout=10) == "thumb of b.md"
        assert len(calls) == 2


async def test_single_flight_joins_the_running_job(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    release = asyncio.Event()
    calls: list[str] = []

    @router.subscriber("slow", cache=True, max_workers=2)
    async def slow(doc: str) -> str:
        calls.append(doc)
        await release.wait()
        return doc.upper()

    channel = f"{unique}.slow"
    async with running(transport, router, store_url) as client:
        if not transport.real:
            # in memory the publish runs the handler inline: release it up front
            release.set()
        first = await client.submit(channel, "abc")
        second = await client.submit(channel, "abc")
        if transport.real:
            assert second.id == first.id  # joined, not queued twice
            assert not second.done
            release.set()
        assert await first.result(timeout=10) == "ABC"
        assert await second.result(timeout=10) == "ABC"
        assert calls == ["abc"]
        [stats] = await client.cache_stats(channel)
        assert stats.joined + stats.hits == 1


async def test_a_worker_answers_a_message_cached_after_it_was_queued(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: list[str] = []
    onward: list[Any] = []
    results = router.publisher("results")

    @router.subscriber("render", cache=True)
    @results
    async def render(doc: str) -> str:
        calls.append(doc)
        return f"<{doc}>"

    @router.subscriber("results")
    async def collect(value: str) -> None:
        onward.append(value)

    channel = f"{unique}.render"
    async with running(transport, router, store_url) as client:
        assert await (await client.submit(channel, "a")).result(timeout=10) == "<a>"
        # a client that does not look at the cache (or sent before the key was filled):
        # the message reaches a worker, which completes it from the cache
        blind = Client(
            settings=transport.settings(store_url=store_url, cache={"enabled": False}),
            broker=client._given_broker,
        )
        async with blind:
            # (not `assert not job.done`: under the in-memory broker the handler runs
            # inside the publish and may record the hit before submit returns; the
            # onward result below proves a worker, not the client, answered)
            job = await blind.submit(channel, "a")
            assert await job.result(timeout=10) == "<a>"
            assert job.record.cached
        assert calls == ["a"]
        # the cached result still flows to the handler's publishers
        for _ in range(200):
            if len(onward) >= 2:
                break
            await asyncio.sleep(0.05)
        assert onward == ["<a>", "<a>"]


@pytest.mark.real_only
async def test_failures_are_never_cached(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: list[int] = []

    @router.subscriber("flaky", cache=True, retry=RetryPolicy(max_attempts=1))
    async def flaky(n: int) -> int:
        calls.append(n)
        if len(calls) == 1:
            raise RuntimeError("first call fails")
        return n + 1

    channel = f"{unique}.flaky"
    async with running(transport, router, store_url) as client:
        with pytest.raises(JobFailed):
            await (await client.submit(channel, 1)).result(timeout=20)
        second = await client.submit(channel, 1)
        assert not second.cached
        assert await second.result(timeout=20) == 2
        assert (await client.submit(channel, 1)).cached
        assert calls == [1, 1]


async def test_request_is_answered_from_the_cache(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: list[int] = []

    @router.subscriber("price", cache=True)
    async def price(n: int) -> dict[str, int]:
        calls.append(n)
        return {"n": n, "cents": n * 100}

    channel = f"{unique}.price"
    async with running(transport, router, store_url) as client:
        assert await client.request(channel, 3, timeout=10) == {"n": 3, "cents": 300}
        assert await client.request(channel, 3, timeout=10) == {"n": 3, "cents": 300}
        assert calls == [3]
        # a job of the same payload is answered from the request's entry, and back
        assert (await client.submit(channel, 3)).cached
        assert await client.request(channel, 3, timeout=10, cache=False) == {
            "n": 3,
            "cents": 300,
        }
        assert calls == [3, 3]


async def test_cache_false_runs_again_and_refreshes_the_entry(
    transport: Transport, store_url: str | None, unique: str
) -> None:
    router = Router(prefix=f"{unique}.")
    calls: list[str] = []

    @router.subscriber("clock", cache=True)
    async def clock(doc: str) -> int:
        calls.append(doc)
        return len(calls)

    channel = f"{unique}.clock"
    async with running(transport, router, store_url) as client:
        assert await (await client.submit(channel, "t")).result(timeout=10) == 1
        forced = await client.submit(channel, "t", cache=False)
        assert not forced.cached
        assert await forced.result(timeout=10) == 2
        again = await client.submit(channel, "t")
        assert again.cached
        assert await again.result() == 2
        assert calls == ["t", "t"]


async def test_stats_and_clear(transport: Transport, store_url: str | None, unique: str) -> None:
    router = Router(prefix=f"{unique}.")

    @router.subscriber("echo", cache=CachePolicy(version="7"))
    async def echo(doc: str) -> str:
        return doc

    channel = f"{unique}.echo"
    async with running(transport, router, store_url) as client:
        for doc in ("a", "bb", "a"):
            await (await client.submit(channel, doc)).result(timeout=10)
        [stats] = await client.cache_stats(channel)
        assert (stats.hits, stats.misses, stats.entries, stats.version) == (1, 2, 2, "7")
        assert stats.bytes == len(b'"a"') + len(b'"bb"')
        assert stats.hit_ratio == pytest.approx(1 / 3)
        assert await client.cache_clear(channel) == 2
        [cleared] = await client.cache_stats(channel)
        assert (cleared.hits, cleared.misses, cleared.entries) == (0, 0, 0)
        job = await client.submit(channel, "a")
        assert not job.cached
        assert await job.result(timeout=10) == "a"
