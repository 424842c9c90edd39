"""Per-key locks across real worker processes, on every transport.

Two ``faststream run`` workers (``tests/acceptance/locked_worker.py``) share a locked
handler (``lock="account"``):

- entries of three accounts, submitted at once, never overlap per account across the
  two processes (every handler run logs its interval while holding the lock);
- a worker killed with SIGKILL while it holds an account's lock: its lock outlives it
  until its lease runs out (nobody runs that account meanwhile), then the surviving
  worker runs the interrupted job again and the next one; each completes exactly once
  and no lock is left.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time
from collections import defaultdict
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from msgcore import Client, JobStatus, Settings
from tests.processes import (
    Stack,
    clean_servers,
    kill_tree,
    terminate,
    transport_env,
    transport_settings,
)

pytestmark = [pytest.mark.slow]

WORKER = ["tests.acceptance.locked_worker:app"]
LOCK_LEASE = 4.0
"""Lease of the workers' locks: how long a killed holder's lock outlives it."""
MESSAGE_LEASE = 2.0
"""Lease of the workers' messages: how soon a killed worker's job goes to another."""


@dataclass
class Case:
    name: str
    url: str
    store_url: str | None
    unique: str
    log: Path

    @property
    def channel(self) -> str:
        return f"{self.unique}.accounts"

    @property
    def env(self) -> dict[str, str]:
        env = {
            **transport_env(self.url, self.unique),
            "LOCK_TEST_PREFIX": f"{self.unique}.",
            "LOCK_TEST_LOG": str(self.log),
            "LOCK_TEST_MESSAGE_LEASE": str(MESSAGE_LEASE),
            "MSGCORE_LOCKS__LEASE": str(LOCK_LEASE),
            "MSGCORE_LOCKS__WAIT": "30",
        }
        if self.store_url:
            env["MSGCORE_STORE_URL"] = self.store_url
        return env

    def settings(self) -> Settings:
        return transport_settings(self.url, self.unique, self.store_url)

    def runs(self) -> list[dict[str, Any]]:
        """Every finished handler run the workers logged."""
        if not self.log.exists():
            return []
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def case(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Case]:
    monkeypatch.delenv("MSGCORE_STORE_URL", raising=False)
    log = tmp_path / "runs.jsonl"
    if request.param == "sqlite":
        c = Case("sqlite", f"sqlite:///{tmp_path / 'locks.db'}", None, unique, log)
    elif request.param == "redis":
        c = Case("redis", str(request.getfixturevalue("redis_url")), None, unique, log)
    else:
        url = str(request.getfixturevalue("rabbit_url"))
        c = Case("rabbit", url, f"sqlite:///{tmp_path / 'store.db'}", unique, log)
    try:
        yield c
    finally:
        await clean_servers(c.name, c.url, unique, {(c.channel, "workers")}, {c.channel})


@pytest.fixture
def stack(tmp_path: Path, case: Case) -> Iterator[Stack]:
    s = Stack(tmp_path, case.env)
    try:
        yield s
    finally:
        s.cleanup()


def overlaps(runs: list[dict[str, Any]]) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """Pairs of runs of one account whose intervals overlap."""
    by_account: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for run in runs:
        by_account[run["account"]].append(run)
    found = []
    for account_runs in by_account.values():
        account_runs.sort(key=lambda r: r["start"])
        for before, after in itertools.pairwise(account_runs):
            if after["start"] < before["end"]:
                found.append((before, after))
    return found


async def test_locks_hold_across_processes_and_outlive_a_killed_holder(
    case: Case, stack: Stack
) -> None:
    workers = [stack.worker("worker-a", WORKER), stack.worker("worker-b", WORKER)]
    await stack.wait_ready(*workers)
    by_pid = {p.pid: p for p in workers}

    async with Client(settings=case.settings()) as client:
        # 1. three accounts, two processes: one entry per account at a time
        entries = [{"account": "abc"[n % 3], "n": n, "sleep": 0.02} for n in range(30)]
        jobs = await client.submit_many(case.channel, entries)
        waited = await client.wait(jobs, timeout=60)
        assert not waited.pending, [j.record for j in waited.pending]
        runs = case.runs()
        assert len(runs) == 30
        assert overlaps(runs) == []
        assert await client.locks(f"{case.channel}:") == []

        # 2. kill the worker holding account z's lock in the middle of its job
        first = await client.submit(case.channel, {"account": "z", "hold_first": 60})
        deadline = time.monotonic() + 15
        while not (held := await client.locks(f"{case.channel}:z")):
            if time.monotonic() > deadline:
                pytest.fail("no worker took account z's lock\n" + stack.procs[0].tail())
            await asyncio.sleep(0.02)
        [lock] = held
        assert first.id in lock.holder
        holder = next(p for pid, p in by_pid.items() if lock.holder.endswith(f":{pid}"))
        survivor = next(p for p in workers if p is not holder)
        # the lock's expiry as last seen (a refresh after this reading only delays it)
        expires_seen = (await client.locks(f"{case.channel}:z"))[0].expires_at
        kill_tree(holder)
        holder.popen.wait(timeout=10)
        killed_at = time.time()
        second = await client.submit(case.channel, {"account": "z"})
        waited = await client.wait([first, second], timeout=LOCK_LEASE + 40)
        assert not waited.pending, (
            [j.record for j in waited.pending],
            survivor.tail(),
        )
        await asyncio.sleep(1.0)  # a late duplicate would show up by now
        z_runs = [r for r in case.runs() if r["account"] == "z"]
        assert await client.locks(f"{case.channel}:") == []
        records = {j.id: await client.get_job(j.id) for j in (first, second)}

    for job in records.values():
        assert job.record.status is JobStatus.COMPLETED, job.record
        assert job.outcome()["pid"] == survivor.pid, (job.record, survivor.tail())
    assert records[first.id].record.attempts >= 2
    # each ran once to the end, on the survivor, and only once the dead holder's lease
    # had run out: nobody ran account z while the killed process still held it
    assert sorted(r["job"] for r in z_runs) == sorted([first.id, second.id]), z_runs
    assert all(r["pid"] == survivor.pid for r in z_runs), z_runs
    assert min(r["start"] for r in z_runs) >= expires_seen - 0.05, (z_runs, expires_seen)
    assert overlaps(case.runs()) == []
    print(
        f"{case.name}: z's lock freed {min(r['start'] for r in z_runs) - killed_at:.1f}s "
        f"after the SIGKILL (lease {LOCK_LEASE}s)"
    )
    assert await terminate(survivor) == 0, survivor.tail()
    assert "Traceback" not in survivor.output(), survivor.tail(6000)
