"""Acceptance: the result cache with four ``faststream run`` workers, every transport
and store backend.

``services.render`` (a handler declared ``cache=CachePolicy(...)``) runs as four worker
processes. This process submits 1,000 jobs carrying 100 distinct pages through
``msgcore.Client`` (half one by one and concurrently, half with ``submit_many``), waits
for them, and counts the handler's runs in the file the workers append to:

- the first run renders each distinct page exactly once (100 runs), every job completes
  with the right result;
- a second run of the same 1,000 submits runs the handler 0 times and publishes nothing
  (every submit is answered from the store: counted by wrapping ``publish``);
- a worker killed with SIGKILL mid-render does not leave its page "in flight": a duplicate
  submitted meanwhile joins the interrupted job, a new worker completes it, and the page
  is cached afterwards.

Cases: SQLite transport with its store beside it and on Redis; Redis with its store
beside it and on a SQLite file; RabbitMQ with a SQLite file and Redis.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from services.render import Page, expected

from msgcore import Client, Settings
from msgcore.router import PublisherHandle
from tests.contract.harness import delete_rabbit_names, delete_redis_keys
from tests.processes import Stack, kill_tree, terminate, transport_settings

pytestmark = [pytest.mark.slow]

SUBMITS = 1000
DISTINCT = 100
WORKERS = 4
GROUP = "renderers"
WORKER = ["services.render:app"]


@dataclass
class Case:
    transport: str
    url: str
    store_url: str | None
    """None: the store's default place beside the transport."""
    unique: str
    redis_url: str | None

    @property
    def channel(self) -> str:
        return f"{self.unique}.render.page"

    def env(self, calls: Path) -> dict[str, str]:
        env = {
            "MSGCORE_URL": self.url,
            "MSGCORE_LOG_MESSAGES": "false",
            "MSGCORE_REDIS__STREAM_PREFIX": f"{self.unique}:",
            "MSGCORE_RABBIT__EXCHANGE": self.unique,
            "MSGCORE_RENDER_PREFIX": f"{self.unique}.",
            "MSGCORE_RENDER_CALLS": str(calls),
            "MSGCORE_RENDER_SECONDS": "0.05",
        }
        if self.store_url is not None:
            env["MSGCORE_STORE_URL"] = self.store_url
        return env

    def settings(self) -> Settings:
        return transport_settings(self.url, self.unique, self.store_url)

    async def cleanup(self) -> None:
        if self.redis_url is not None:
            await delete_redis_keys(self.redis_url, f"{self.unique}:*")
        if self.transport == "rabbit":
            await delete_rabbit_names(
                self.url, self.unique, {(self.channel, GROUP)}, {self.channel}
            )


CASES = [
    ("sqlite", "beside"),
    ("sqlite", "redis"),
    ("redis", "beside"),
    ("redis", "sqlite"),
    ("rabbit", "sqlite"),
    ("rabbit", "redis"),
]


@pytest.fixture(params=CASES, ids=[f"{t}-{s}-store" for t, s in CASES])
async def case(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Case]:
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    transport, store = request.param
    needs_redis = transport == "redis" or store == "redis"
    redis_url = str(request.getfixturevalue("redis_url")) if needs_redis else None
    if transport == "sqlite":
        url = f"sqlite:///{tmp_path / 'render.db'}"
    elif transport == "redis":
        assert redis_url is not None
        url = redis_url
    else:
        url = str(request.getfixturevalue("rabbit_url"))
    if store == "redis":
        store_url: str | None = redis_url
    elif store == "sqlite":
        store_url = f"sqlite:///{tmp_path / 'store.db'}"
    else:
        store_url = None
    c = Case(transport, url, store_url, unique, redis_url)
    try:
        yield c
    finally:
        await c.cleanup()


@pytest.fixture
def calls_file(tmp_path: Path) -> Path:
    return tmp_path / "render-calls.txt"


@pytest.fixture
def stack(tmp_path: Path, case: Case, calls_file: Path) -> Iterator[Stack]:
    s = Stack(tmp_path, case.env(calls_file))
    try:
        yield s
    finally:
        s.cleanup()


def runs(calls_file: Path) -> list[str]:
    return calls_file.read_text().splitlines() if calls_file.exists() else []


async def submit_all(client: Client, channel: str, pages: list[Page]) -> list[Any]:
    half = len(pages) // 2
    one_by_one = await asyncio.gather(*(client.submit(channel, p) for p in pages[:half]))
    batched = await client.submit_many(channel, pages[half:], batch_size=250)
    return [*one_by_one, *batched]


async def test_repeated_pages_render_once(
    case: Case,
    stack: Stack,
    calls_file: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    workers = [stack.worker(f"worker-{i}", WORKER) for i in range(WORKERS)]
    await stack.wait_ready(*workers)

    published = Counter[str]()
    original = PublisherHandle._publish  # the client's publishes

    async def counting(self: PublisherHandle, *args: Any, **kwargs: Any) -> None:
        published[self.channel] += 1
        await original(self, *args, **kwargs)

    monkeypatch.setattr(PublisherHandle, "_publish", counting)

    pages = [Page(doc=f"doc-{i % DISTINCT}.md", width=800) for i in range(SUBMITS)]
    async with Client(settings=case.settings()) as client:
        started = time.monotonic()
        jobs = await submit_all(client, case.channel, pages)
        done = await client.wait(jobs, timeout=120)
        first_run = time.monotonic() - started
        assert len(done.completed) == SUBMITS, done.counts()
        results = [Page.model_validate(p) for p in pages]
        assert [await j.result() for j in jobs] == [expected(p).model_dump() for p in results]
        rendered = runs(calls_file)
        # each distinct page rendered exactly once, whichever worker took it
        assert len(rendered) == DISTINCT, Counter(line.split()[1] for line in rendered)
        assert len({line.split()[1] for line in rendered}) == DISTINCT
        assert published[case.channel] == DISTINCT
        # the work was spread over the workers' processes
        assert len({line.split()[0] for line in rendered}) >= 2

        published.clear()
        started = time.monotonic()
        again = await submit_all(client, case.channel, pages)
        second_run = time.monotonic() - started
        assert all(j.done and j.cached for j in again)
        assert [await j.result() for j in again] == [expected(p).model_dump() for p in results]
        assert published[case.channel] == 0  # nothing was published
        assert len(runs(calls_file)) == DISTINCT  # and nothing ran

        [stats] = await client.cache_stats(case.channel)
        assert stats.misses == DISTINCT
        assert stats.entries == DISTINCT
        assert stats.hits >= SUBMITS  # the whole second run, plus first-run hits
        assert stats.hits + stats.joined == 2 * SUBMITS - DISTINCT

    codes = {p.name: await terminate(p) for p in workers}
    assert codes == dict.fromkeys(codes, 0), "\n".join(p.tail() for p in workers)
    print(
        f"\n{case.transport}/{(case.store_url and case.store_url.split(':')[0]) or 'beside'}: "
        f"first run {first_run:.2f}s, second run {second_run:.3f}s "
        f"({first_run / max(second_run, 1e-6):.0f}x)"
    )


KILL_CASES = [("sqlite", "beside"), ("redis", "beside"), ("rabbit", "sqlite")]


@pytest.mark.parametrize(
    "case", KILL_CASES, ids=[f"{t}-{s}-store" for t, s in KILL_CASES], indirect=True
)
async def test_killed_worker_leaves_no_key_in_flight(
    case: Case, stack: Stack, calls_file: Path
) -> None:
    stack.env.update({"MSGCORE_RENDER_SECONDS": "2.0", "MSGCORE_RENDER_LEASE": "3"})
    first = stack.worker("worker-first", WORKER)
    await stack.wait_ready(first)
    page = Page(doc="slow.md")
    async with Client(settings=case.settings()) as client:
        job = await client.submit(case.channel, page)
        deadline = time.monotonic() + 15
        while not runs(calls_file):
            if time.monotonic() > deadline:
                pytest.fail(f"the render did not start\n{first.tail()}")
            await asyncio.sleep(0.02)
        kill_tree(first)
        first.popen.wait(timeout=10)

        # the interrupted job still holds the page: a duplicate joins it
        duplicate = await client.submit(case.channel, page)
        assert duplicate.id == job.id
        second = stack.worker("worker-second", WORKER)
        await stack.wait_ready(second)
        assert await job.result(timeout=60) == expected(page).model_dump()
        assert job.record.attempts >= 2
        after = await client.submit(case.channel, page)
        assert after.cached and after.done
        assert await after.result() == expected(page).model_dump()
        # the killed render and the one that finished; nothing else
        assert len(runs(calls_file)) == 2
        await terminate(second)
