"""Acceptance: ``services.jobs`` as real processes, with job tracking, on every transport.

For each transport (a SQLite file, Redis, RabbitMQ) worker processes run
``python -m faststream run services.jobs:app`` with ``MSGCORE_URL`` set, and jobs are
submitted and read through ``msgcore.SyncClient``/``Client`` from other processes:

- 10,000 jobs submitted by a script (``tests/acceptance/submit_jobs.py``) complete on two
  workers, each with its own correct result, as the script and this process both read
  from the store;
- a worker killed with SIGKILL mid-job: a new worker runs the interrupted jobs again and
  each ends ``completed`` exactly once, on the new worker, with its attempts counted;
- a job's status and result are readable from a process that did not submit it
  (``tests/acceptance/read_job.py``).

Job state lives where ``Settings`` put it by default: in the SQLite transport's file, on
the Redis server; RabbitMQ stores nothing, so its cases set ``MSGCORE_STORE_URL`` to a
SQLite file of the test's own (the default, ``./msgcore-store.db``, would land in the
repository).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from services.jobs import Task

from msgcore import (
    Client,
    JobStatus,
    Settings,
    Store,
    open_store,
)
from tests.processes import (
    Proc,
    Stack,
    clean_servers,
    jobs_service_env,
    kill_tree,
    read_feed_from,
    terminate,
    transport_settings,
    wait_exit,
)

pytestmark = [pytest.mark.slow]

TOTAL = 10_000
WORKER = ["services.jobs:app"]
GROUP = "workers"
# Seconds the submitting script waits for its jobs: a case takes well under it (see the
# "jobs acceptance" summary), and a failing case still ends within about a minute.
WAIT = 45.0
LEASE = 3.0
"""Lease of the kill test's workers: how soon a dead worker's jobs go to another."""


# -- transports ----------------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    store_url: str
    """Where the workers' job state is expected (the test reads it directly)."""
    unique: str
    explicit_store: bool
    """Whether ``MSGCORE_STORE_URL`` is set, or the store is the default beside the
    transport (which the test then checks by reading ``store_url`` itself)."""

    @property
    def channel(self) -> str:
        return f"{self.unique}.jobs.square"

    @property
    def env(self) -> dict[str, str]:
        """What every process of the case reads (msgcore Settings + the service)."""
        return jobs_service_env(
            self.url, self.unique, self.store_url if self.explicit_store else None
        )

    def settings(self) -> Settings:
        """The same settings as ``env``, for a client in this process."""
        return transport_settings(
            self.url, self.unique, self.store_url if self.explicit_store else None
        )

    def store(self) -> Store:
        """The store at ``store_url``, opened by URL rather than by ``store_for``: if
        the workers' default pick were elsewhere, this would find no jobs."""
        return open_store(self.store_url, settings=self.settings())

    async def cleanup(self) -> None:
        groups: set[tuple[str, str | None]] = {(self.channel, GROUP)}
        await clean_servers(self.name, self.url, self.unique, groups, {self.channel})


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def target(
    request: pytest.FixtureRequest,
    tmp_path: Path,
    unique: str,
    monkeypatch: pytest.MonkeyPatch,
) -> AsyncIterator[Target]:
    # The child processes inherit this environment: a MSGCORE_STORE_URL of the shell
    # would move the SQLite and Redis cases' job state away from its default place.
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    name = request.param
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.db'}"
        t = Target(name, url, url, unique, explicit_store=False)
    elif name == "redis":
        url = str(request.getfixturevalue("redis_url"))
        t = Target(name, url, url, unique, explicit_store=False)
    else:
        url = str(request.getfixturevalue("rabbit_url"))
        t = Target(name, url, f"sqlite:///{tmp_path / 'store.db'}", unique, explicit_store=True)
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


# -- timings, printed at the end of the run --------------------------------------------------


class _Timings:
    """A terminal-summary section of its own (the pipeline's printer has another shape)."""

    name = "msgcore-jobs-acceptance"

    def __init__(self) -> None:
        self.lines: list[str] = []

    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        if self.lines:
            terminalreporter.section("jobs acceptance")
            for line in self.lines:
                terminalreporter.write_line(line)


@pytest.fixture
def timings(request: pytest.FixtureRequest) -> list[str]:
    # Registered on first use, so the section appears only in runs that include it.
    manager = request.config.pluginmanager
    plugin = manager.get_plugin(_Timings.name)
    if plugin is None:
        plugin = _Timings()
        manager.register(plugin, _Timings.name)
    lines: list[str] = plugin.lines
    return lines


# -- helpers ---------------------------------------------------------------------------------


def worker_id_of(proc: Proc) -> str:
    """The tail of the ``host:pid`` job records name their worker by."""
    return f":{proc.pid}"


def last_json(proc: Proc) -> dict[str, Any]:
    lines = [line for line in proc.output().splitlines() if line.startswith("{")]
    assert lines, f"{proc.name} printed no JSON line\n{proc.tail()}"
    report: dict[str, Any] = json.loads(lines[-1])
    return report


async def stop_workers(stack: Stack, *, skip: Proc | None = None) -> dict[str, int]:
    """SIGTERM the live workers; their exit codes (0: a clean shutdown)."""
    workers = [p for p in stack.procs if p.name.startswith("worker") and p is not skip]
    return {p.name: await terminate(p) for p in workers}


def assert_clean(stack: Stack, codes: dict[str, int]) -> None:
    workers = [p for p in stack.procs if p.name in codes]
    assert codes == dict.fromkeys(codes, 0), "\n".join(p.tail() for p in workers)
    for p in workers:
        assert "Traceback" not in p.output(), p.tail(6000)


# -- the scenarios ---------------------------------------------------------------------------


async def test_ten_thousand_jobs(target: Target, stack: Stack, timings: list[str]) -> None:
    a, b = stack.worker("worker-a", WORKER), stack.worker("worker-b", WORKER)
    await stack.wait_ready(a, b)

    start = time.monotonic()
    submitter = stack.spawn(
        "submitter", ["-m", "tests.acceptance.submit_jobs", str(TOTAL), str(WAIT)]
    )
    code = await wait_exit(submitter, WAIT + 30)
    elapsed = time.monotonic() - start
    report = last_json(submitter)

    async with target.store() as store:
        counts = await store.count_jobs(channel=target.channel)
    codes = await stop_workers(stack)

    per_worker = {p.name: report["per_pid"].get(str(p.pid), 0) for p in (a, b)}
    summary = (
        f"{target.name:<7} {TOTAL} jobs in {report['elapsed']}s "
        f"(submit {report['submit_seconds']}s, process {elapsed:.1f}s)  "
        f"counts={report['counts']}  per_worker={per_worker}  "
        f"wait: {report['wait_queries']} store queries in {report['wait_seconds']}s = "
        f"{report['wait_queries_per_job_per_second']:.5f}/job/s"
    )
    timings.append(summary)
    assert code == 0, f"{summary}\n{submitter.tail()}"
    assert report["submitted"] == TOTAL, summary
    assert report["counts"] == {"completed": TOTAL}, summary
    assert report["matched"] == TOTAL, summary
    # Waiting reads the completion feed, not each job: far below 1 query/job/second.
    assert report["wait_queries_per_job_per_second"] < 1, summary
    # The store as another process sees it: every job of the channel completed.
    assert counts[JobStatus.COMPLETED] == TOTAL, f"{counts} ({summary})"
    assert sum(counts.values()) == TOTAL, f"{counts} ({summary})"
    # Both workers of the group took a share, and no other process answered.
    assert all(per_worker.values()), summary
    assert sum(per_worker.values()) == TOTAL, summary
    assert_clean(stack, codes)


async def test_killed_worker_job_retried_once_completed(
    target: Target, stack: Stack, timings: list[str]
) -> None:
    # SQLite and Redis hand a dead worker's jobs to another once its lease runs out;
    # RabbitMQ requeues them as soon as the killed worker's connection drops.
    stack.env["MSGCORE_JOBS_LEASE"] = str(LEASE)
    first = stack.worker("worker-first", WORKER)
    await stack.wait_ready(first)

    async with Client(settings=target.settings()) as client:
        store = client.store
        position = await store.feed_position()
        jobs = [await client.submit(target.channel, Task(n=n, sleep=2.0)) for n in range(4)]
        ids = [j.id for j in jobs]

        deadline = time.monotonic() + 15
        while not any(r.status is JobStatus.RUNNING for r in (await store.get_jobs(ids)).values()):
            if time.monotonic() > deadline:
                pytest.fail(f"no job started within 15s\n{first.tail()}")
            await asyncio.sleep(0.02)
        kill_tree(first)
        first.popen.wait(timeout=10)
        killed_at = time.monotonic()
        # The worker is gone: whatever is `running` now was interrupted mid-job.
        before = await store.get_jobs(ids)
        interrupted = {i for i, r in before.items() if r.status is JobStatus.RUNNING}
        assert interrupted, f"no job was running at the kill: {before}"
        for i in interrupted:
            assert before[i].worker_id and before[i].worker_id.endswith(worker_id_of(first))

        second = stack.worker("worker-second", WORKER)
        await stack.wait_ready(second)
        waited = await client.wait(jobs, timeout=LEASE + 30)
        recovered = time.monotonic() - killed_at
        assert not waited.pending, (
            f"{len(waited.pending)} job(s) unfinished {recovered:.1f}s after the kill: "
            f"{[j.record for j in waited.pending]}\n{second.tail()}"
        )
        # Give a late duplicate (a second delivery of the same job) time to show up.
        await asyncio.sleep(1.0)
        after = await store.get_jobs(ids)
        events = await read_feed_from(store, position)
        counts = await store.count_jobs(channel=target.channel)

    codes = await stop_workers(stack, skip=first)
    timings.append(
        f"{target.name:<7} kill: {len(interrupted)} of {len(ids)} jobs interrupted, "
        f"all completed {recovered:.1f}s after the SIGKILL (lease {LEASE}s)"
    )
    for job in jobs:
        record = after[job.id]
        assert record.status is JobStatus.COMPLETED, record
        result = job.outcome()
        assert result["n"] ** 2 == result["square"], record
        if job.id in interrupted:
            # Run again on the new worker, and the attempt the kill cut short counted.
            assert record.attempts >= 2, record
            assert result["pid"] == second.pid, (record, first.pid, second.pid)
            assert record.worker_id and record.worker_id.endswith(worker_id_of(second)), record
    # Each job finished exactly once: one terminal event per job on the feed.
    per_job = Counter(e.job_id for e in events if e.job_id in after)
    assert per_job == dict.fromkeys(ids, 1), events
    assert {e.status for e in events if e.job_id in after} == {JobStatus.COMPLETED}, events
    # No record is left running (or pending, or retrying) after the run.
    assert counts[JobStatus.COMPLETED] == len(ids), counts
    assert sum(counts.values()) == len(ids), counts
    assert "already settled" not in second.output(), second.tail()
    assert_clean(stack, codes)


async def test_status_from_second_process(target: Target, stack: Stack) -> None:
    reads = 0

    async def read_job(job_id: str) -> tuple[int, dict[str, Any]]:
        """``read_job.py`` in a process of its own, with the workers' environment."""
        nonlocal reads
        reads += 1
        reader = stack.spawn(f"read-job-{reads}", ["-m", "tests.acceptance.read_job", job_id])
        code = await wait_exit(reader, 30)
        return code, last_json(reader)

    async with Client(settings=target.settings()) as client:
        # Submitted before any worker runs: the second process sees it pending.
        job = await client.submit(target.channel, Task(n=7))
        code, pending = await read_job(job.id)
        assert code == 0, pending
        assert pending["status"] == "pending", pending
        assert pending["result"] is None, pending
        assert pending["channel"] == target.channel, pending

        worker = stack.worker("worker", WORKER)
        await stack.wait_ready(worker)
        assert await job.result(timeout=30) == {"n": 7, "square": 49, "pid": worker.pid}

    code, done = await read_job(job.id)
    assert code == 0, done
    assert done["status"] == "completed", done
    assert done["result"] == {"n": 7, "square": 49, "pid": worker.pid}, done
    assert done["attempts"] == 1, done
    assert done["worker_id"].endswith(worker_id_of(worker)), done
    assert done["finished_at"] >= done["started_at"] >= done["created_at"], done

    code, missing = await read_job(f"{target.unique}-no-such-job")
    assert code == 2, missing
    assert missing["error"] == "not found", missing
    assert_clean(stack, await stop_workers(stack))
