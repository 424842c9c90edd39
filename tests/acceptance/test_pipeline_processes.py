"""Acceptance: ``services.pipeline`` as real processes, on every transport.

For each transport (a SQLite file, Redis, RabbitMQ) two worker processes run
``python -m faststream run services.pipeline:app`` (or ``make_app --factory``) with
``MSGCORE_URL`` set; a publisher process (``tests/acceptance/publish.py``) sends 5,000
work messages through msgcore's neutral API; a collector in the test process consumes
``pipeline.out``. Every id must arrive downstream, also when a worker is killed with
SIGKILL mid-run and restarted. Duplicates downstream are counted: none are allowed on
SQLite (its onward publish commits with the ack); Redis and RabbitMQ deliver at least
once, so duplicates after a crash are reported, not failed.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from msgcore import RabbitSettings, RedisSettings, Router, Settings, create_broker
from tests.processes import Proc, Stack, clean_servers, kill_tree, terminate, transport_env

pytestmark = [pytest.mark.slow]

TOTAL = 5_000
APP_FORM = ["services.pipeline:app"]
FACTORY_FORM = ["services.pipeline:make_app", "--factory"]
# How long a case may take from the first publish until every id has arrived.
DEADLINE = 45.0


# -- transports ----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    unique: str

    @property
    def env(self) -> dict[str, str]:
        """What the worker and publisher processes read (msgcore Settings + the service)."""
        return {
            **transport_env(self.url, self.unique),
            "MSGCORE_PIPELINE_PREFIX": f"{self.unique}.",
        }

    def settings(self) -> Settings:
        return Settings(
            url=self.url,
            log_messages=False,
            redis=RedisSettings(stream_prefix=f"{self.unique}:"),
            rabbit=RabbitSettings(exchange=self.unique),
        )

    async def cleanup(self) -> None:
        channels = {f"{self.unique}.pipeline.in", f"{self.unique}.pipeline.out"}
        groups: set[tuple[str, str | None]] = {
            (f"{self.unique}.pipeline.in", "workers"),
            (f"{self.unique}.pipeline.out", "collector"),
        }
        await clean_servers(self.name, self.url, self.unique, groups, channels)


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Target]:
    name = request.param
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'pipeline.db'}"
    else:
        url = str(request.getfixturevalue("redis_url" if name == "redis" else "rabbit_url"))
    t = Target(name, url, unique)
    try:
        yield t
    finally:
        await t.cleanup()


@pytest.fixture
def stack(tmp_path: Path, target: Target) -> Iterator[Stack]:
    s = Stack(tmp_path, target.env)
    try:
        yield s
    finally:
        s.cleanup()


# -- the collector -------------------------------------------------------------------------


class Collector:
    """Consumes ``pipeline.out`` in this process (its own consumer group)."""

    def __init__(self, target: Target) -> None:
        self.ids: Counter[int] = Counter()
        self.pids: Counter[int] = Counter()
        self.attempts: Counter[int] = Counter()
        self.message_ids: dict[str, set[int]] = defaultdict(set)
        router = Router(prefix=f"{target.unique}.")

        @router.subscriber("pipeline.out", group="collector", max_workers=8)
        async def collect(done: dict[str, Any]) -> None:
            self.ids[done["id"]] += 1
            self.pids[done["pid"]] += 1
            self.attempts[done["attempt"]] += 1
            self.message_ids[done["message_id"]].add(done["id"])

        self.broker = create_broker(router, settings=target.settings())

    @property
    def duplicates(self) -> int:
        return sum(self.ids.values()) - len(self.ids)

    async def wait_for(self, n: int, within: float, stack: Stack) -> None:
        deadline = time.monotonic() + within
        while len(self.ids) < n:
            if time.monotonic() > deadline:
                tails = "\n".join(p.tail(1500) for p in stack.procs)
                pytest.fail(
                    f"{len(self.ids)} of {n} ids downstream after {within}s "
                    f"(per worker: {dict(self.pids)})\n{tails}"
                )
            await asyncio.sleep(0.05)


# -- the scenario ---------------------------------------------------------------------------

FORMS = {
    "app": (APP_FORM, APP_FORM),
    "factory": (FACTORY_FORM, FACTORY_FORM),
    # the killed worker runs the app form, its surviving peer the factory form
    "sigkill": (APP_FORM, FACTORY_FORM),
}


@pytest.mark.parametrize("mode", list(FORMS))
async def test_pipeline_delivers_every_id(
    target: Target, stack: Stack, mode: str, acceptance_results: list[dict[str, Any]]
) -> None:
    if mode == "sigkill":
        # A killed worker's messages go back to the group once its lease runs out
        # (SQLite, Redis); RabbitMQ requeues them when the connection drops.
        stack.env["MSGCORE_PIPELINE_LEASE"] = "3"
    collector = Collector(target)
    killed: Proc | None = None
    killed_after = 0
    async with collector.broker:
        await collector.broker.start()
        form_a, form_b = FORMS[mode]
        a, b = stack.worker("worker-a", form_a), stack.worker("worker-b", form_b)
        await stack.wait_ready(a, b)

        start = time.monotonic()
        publisher = stack.publisher(TOTAL)
        if mode == "sigkill":
            await collector.wait_for(TOTAL // 5, DEADLINE, stack)
            killed_after = len(collector.ids)
            kill_tree(a)
            a.popen.wait(timeout=10)
            killed = a
            assert killed_after < TOTAL, "the run ended before the kill: nothing was tested"
            assert collector.pids[a.pid] > 0, "the killed worker had not handled anything yet"
            restarted = stack.worker("worker-a-restarted", form_a)
            await stack.wait_ready(restarted)
        await collector.wait_for(TOTAL, DEADLINE - (time.monotonic() - start), stack)
        elapsed = time.monotonic() - start

        code = publisher.popen.wait(timeout=30)
        assert code == 0, publisher.tail()
        published = re.search(r"published 5000 in ([0-9.]+)s", publisher.output())
        assert published, publisher.tail()
        # Late duplicates (a redelivery racing the end of the run) would arrive by now.
        await asyncio.sleep(1.0)
        workers = [p for p in stack.procs if p.name.startswith("worker") and p is not killed]
        codes = {p.name: await terminate(p) for p in workers}

    duplicates = collector.duplicates
    redelivered = sum(n for attempt, n in collector.attempts.items() if attempt > 1)
    per_worker = {
        p.name: collector.pids.get(p.pid, 0) for p in stack.procs if p.name.startswith("worker")
    }
    acceptance_results.append(
        {
            "transport": target.name,
            "mode": mode,
            "seconds": round(elapsed, 1),
            "publish_seconds": float(published.group(1)),
            "ids": len(collector.ids),
            "duplicates": duplicates,
            "redelivered": redelivered,
            "per_worker": per_worker,
            "killed_after": killed_after if killed else None,
        }
    )

    assert set(collector.ids) == set(range(TOTAL))
    # Each result names the work message it came from: one message id per work item.
    assert None not in collector.message_ids, "a result without the work message's id"
    shared = {m: ids for m, ids in collector.message_ids.items() if len(ids) > 1}
    assert not shared, f"message ids shared by different work items: {list(shared.items())[:5]}"
    assert codes == dict.fromkeys(codes, 0), "\n".join(p.tail() for p in workers)
    for p in workers:
        assert "Traceback" not in p.output(), p.tail(6000)
    if mode == "sigkill":
        # The kill caught messages in flight, and they were handled again elsewhere.
        assert redelivered > 0, "no message was redelivered: the kill tested no recovery"
    else:
        # Both workers of the group took a share.
        assert all(per_worker[p.name] > 0 for p in (a, b)), per_worker
    if target.name == "sqlite":
        # The onward publish commits with the ack: exactly once downstream, even across
        # a SIGKILL.
        assert duplicates == 0, f"{duplicates} duplicates downstream"
    elif mode != "sigkill":
        # No crash, no redelivery: nothing should arrive twice on any transport.
        assert duplicates == 0, f"{duplicates} duplicates downstream without a crash"
