"""Reliability of the SQLite broker across real processes.

Every test starts real ``faststream run tests.sqlite.apps.pipeline:app`` worker
processes on a database file of its own, drives them with real signals (SIGKILL,
SIGTERM, SIGSTOP/SIGCONT) and then checks the database directly with ``sqlite3``.

The worker handler publishes ``{"id", "pid", "attempt", "at"}`` onward to the
``done`` queue; with transactional publish that onward row commits in the same
transaction as the ack, so "every id exactly once in ``done``" is the end-to-end
exactly-once property under test.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import psutil
import pytest

from msgcore.constants import DEAD_LETTERS_TABLE, MESSAGES_TABLE
from msgcore.sqlite import SqliteBroker

pytestmark = [pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
APP = "tests.sqlite.apps.pipeline:app"
WORK = "work"
DONE = "done"
GROUP = "pipeline"

T = TypeVar("T")

# uvloop timers have millisecond resolution and may fire a hair early, and event times
# are wall-clock while asyncio sleeps on the monotonic clock.
TIMER_SLACK = 0.05


# -- processes ----------------------------------------------------------------------


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    out: Path
    err: Path
    started: float = field(default_factory=time.monotonic)

    @property
    def pid(self) -> int:
        return self.popen.pid

    @property
    def worker_id(self) -> str:
        """The ``leased_by`` value the broker writes for this process."""
        return f"{socket.gethostname()}:{self.pid}"

    def output(self) -> str:
        text = ""
        for path in (self.out, self.err):
            with contextlib.suppress(FileNotFoundError):
                text += path.read_text(errors="replace")
        return text

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} (pid {self.pid}) output tail ---\n{self.output()[-chars:]}"


class Processes:
    """Starts worker/publisher processes and guarantees none survives the test."""

    def __init__(self, tmp_path: Path, db_path: Path) -> None:
        self.tmp_path = tmp_path
        self.db_path = db_path
        self.url = f"sqlite:///{db_path}"
        self.events = tmp_path / "events.log"
        self.procs: list[Proc] = []

    def _spawn(self, name: str, args: list[str], env: dict[str, str]) -> Proc:
        out, err = self.tmp_path / f"{name}.out", self.tmp_path / f"{name}.err"
        full_env = {**os.environ, "PYTHONUNBUFFERED": "1", **env}
        with out.open("wb") as fo, err.open("wb") as fe:
            popen = subprocess.Popen(
                [sys.executable, *args], cwd=REPO, env=full_env, stdout=fo, stderr=fe
            )
        proc = Proc(name, popen, out, err)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, **settings: Any) -> Proc:
        """``faststream run`` the pipeline app; ``settings`` become MSGCORE_PIPELINE_* vars."""
        env = {
            "MSGCORE_PIPELINE_URL": self.url,
            "MSGCORE_PIPELINE_QUEUE": WORK,
            "MSGCORE_PIPELINE_DONE": DONE,
            "MSGCORE_PIPELINE_GROUP": GROUP,
            "MSGCORE_PIPELINE_EVENTS": str(self.events),
        }
        env.update({f"MSGCORE_PIPELINE_{k.upper()}": str(v) for k, v in settings.items()})
        return self._spawn(name, ["-m", "faststream", "run", APP], env)

    def publisher(self, name: str, first: int, count: int, batch: int) -> Proc:
        args = [str(first), str(count), str(batch)]
        return self._spawn(name, ["-m", "tests.sqlite.apps.publish", self.url, WORK, *args], {})

    def wait_ready(self, *procs: Proc, timeout: float = 20.0) -> None:
        """Wait until every process ran the app's after_startup hook (group registered)."""
        pids = {p.pid for p in procs}

        def ready() -> bool:
            for p in procs:
                if p.popen.poll() is not None:
                    pytest.fail(f"{p.name} exited with {p.popen.returncode} at startup\n{p.tail()}")
            return pids <= {int(e[1]) for e in self.read_events() if e[0] == "ready"}

        wait_for(ready, timeout, f"workers {sorted(pids)} ready")

    def read_events(self) -> list[list[str]]:
        try:
            lines = self.events.read_text().splitlines()
        except FileNotFoundError:
            return []
        return [line.split() for line in lines if line.strip()]

    def event_time(self, kind: str, mid: int, pid: int, attempt: int | None = None) -> float | None:
        for e in self.read_events():
            # "start|end|fail <id> <pid> <attempt> <time>" lines ("ready" lines are shorter)
            matches = e[0] == kind and (int(e[1]), int(e[2])) == (mid, pid)
            if matches and (attempt is None or int(e[3]) == attempt):
                return float(e[-1])
        return None

    def cleanup(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                with contextlib.suppress(psutil.Error):
                    ps = psutil.Process(p.pid)
                    for proc in [*ps.children(recursive=True), ps]:
                        with contextlib.suppress(psutil.Error):
                            proc.send_signal(signal.SIGCONT)
                            proc.kill()
            with contextlib.suppress(Exception):
                p.popen.wait(timeout=10)


@pytest.fixture
def procs(tmp_path: Path, db_path: Path) -> Iterator[Processes]:
    ps = Processes(tmp_path, db_path)
    try:
        yield ps
    finally:
        ps.cleanup()


def wait_for(predicate: Callable[[], T], timeout: float, what: str, interval: float = 0.05) -> T:
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:g}s waiting for {what}")
        time.sleep(interval)


def terminate(proc: Proc, timeout: float = 20.0) -> int:
    """SIGTERM and wait: the graceful shutdown path of ``faststream run``."""
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
    try:
        return proc.popen.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{proc.name} did not exit within {timeout}s of SIGTERM\n{proc.tail()}")


def assert_clean_exit(proc: Proc, code: int, *, handler_errors: bool = False) -> None:
    assert code == 0, f"{proc.name} exited with {code}\n{proc.tail()}"
    # Tracebacks in a worker's output mean something broke even if the exit was clean
    # (unless the test's handler raises on purpose).
    if not handler_errors:
        assert "Traceback" not in proc.output(), proc.tail(6000)


# -- database -----------------------------------------------------------------------


@contextlib.contextmanager
def db(path: Path) -> Iterator[sqlite3.Connection]:
    conn = sqlite3.connect(path, timeout=10)
    try:
        yield conn
    finally:
        conn.close()


def done_rows(path: Path) -> list[dict[str, Any]]:
    with db(path) as c:
        rows = c.execute(
            f"SELECT body FROM {MESSAGES_TABLE} WHERE queue = ? ORDER BY id", (DONE,)
        ).fetchall()
    return [json.loads(bytes(b)) for (b,) in rows]


def done_count(path: Path) -> int:
    # OperationalError: the table is not created yet
    with contextlib.suppress(sqlite3.OperationalError), db(path) as c:
        row = c.execute(f"SELECT COUNT(*) FROM {MESSAGES_TABLE} WHERE queue = ?", (DONE,))
        return int(row.fetchone()[0])
    return 0


def done_per_pid(path: Path) -> Counter[int]:
    with db(path) as c:
        rows = c.execute(
            f"SELECT json_extract(CAST(body AS TEXT), '$.pid'), COUNT(*) FROM {MESSAGES_TABLE} "
            "WHERE queue = ? GROUP BY 1",
            (DONE,),
        ).fetchall()
    return Counter({int(pid): n for pid, n in rows})


def work_rows(path: Path) -> list[dict[str, Any]]:
    with db(path) as c:
        c.row_factory = sqlite3.Row
        rows = c.execute(
            f"SELECT * FROM {MESSAGES_TABLE} WHERE queue = ? ORDER BY id", (WORK,)
        ).fetchall()
    return [{**dict(r), "body": json.loads(bytes(r["body"]))} for r in rows]


def dead_letters(path: Path) -> list[dict[str, Any]]:
    with db(path) as c:
        c.row_factory = sqlite3.Row
        rows = c.execute(f"SELECT * FROM {DEAD_LETTERS_TABLE} ORDER BY id").fetchall()
    return [dict(r) for r in rows]


def write_lock_free(path: Path) -> bool:
    """True when nobody holds the write lock right now (a stopped holder would keep it)."""
    conn = sqlite3.connect(path, timeout=0.2, isolation_level=None)
    try:
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("ROLLBACK")
        return True
    except sqlite3.OperationalError:
        return False
    finally:
        conn.close()


def publish(url: str, bodies: list[dict[str, Any]], headers: dict[str, Any] | None = None) -> None:
    """Publish from the test process, all rows in one transaction."""

    async def run() -> None:
        async with SqliteBroker(url, logger=None) as broker:
            if len(bodies) == 1:
                await broker.publish(bodies[0], WORK, headers=headers)
            else:
                await broker.publish_batch(*bodies, queue=WORK, headers=headers)

    asyncio.run(run())


def assert_exactly_once(rows: list[dict[str, Any]], expected: set[int]) -> None:
    counts = Counter(r["id"] for r in rows)
    duplicated = {i: n for i, n in counts.items() if n > 1}
    lost = expected - counts.keys()
    unexpected = counts.keys() - expected
    assert not lost, f"{len(lost)} messages lost, e.g. {sorted(lost)[:10]}"
    assert not duplicated, (
        f"{len(duplicated)} messages completed twice, e.g. {list(duplicated.items())[:10]}"
    )
    assert not unexpected, f"unexpected ids downstream: {sorted(unexpected)[:10]}"
    assert len(rows) == len(expected)


# -- tests --------------------------------------------------------------------------

N_BULK = 20_000
BULK_WORKER = {"max_workers": 8, "prefetch": 64, "quiet": 1}


@pytest.mark.timeout(90)
def test_three_processes_move_20k_messages_exactly_once(procs: Processes, db_path: Path) -> None:
    """2 workers + 1 publisher process: 20,000 messages, none lost, none twice, both work."""
    t0 = time.monotonic()
    w1 = procs.worker("w1", **BULK_WORKER)
    w2 = procs.worker("w2", **BULK_WORKER)
    procs.wait_ready(w1, w2)

    pub = procs.publisher("publisher", 0, N_BULK, 200)
    wait_for(lambda: done_count(db_path) >= N_BULK, 60, "20,000 onward messages")
    assert pub.popen.wait(timeout=10) == 0, pub.tail()
    assert "published 20000" in pub.output()
    elapsed = time.monotonic() - t0

    # Stop the workers cleanly before the final count, so nothing is still in flight.
    for w in (w1, w2):
        assert_clean_exit(w, terminate(w))

    rows = done_rows(db_path)
    assert_exactly_once(rows, set(range(N_BULK)))
    per_pid = Counter(r["pid"] for r in rows)
    assert set(per_pid) == {w1.pid, w2.pid}, per_pid
    # Both did a real share of the work, not a token message or two.
    assert min(per_pid.values()) >= N_BULK // 20, per_pid
    # No lease expired with 30 s leases: every message was handled on its first delivery.
    assert Counter(r["attempt"] for r in rows) == {1: N_BULK}
    assert work_rows(db_path) == []
    assert dead_letters(db_path) == []
    print(f"\n20k pipeline: {elapsed:.1f}s, per worker {dict(per_pid)}")


@pytest.mark.timeout(120)
def test_sigkill_mid_run_loses_nothing_and_duplicates_nothing(
    procs: Processes, db_path: Path
) -> None:
    """SIGKILL one worker mid-run; its leased rows come back after the lease expires."""
    lease = 2.0
    t0 = time.monotonic()
    victim = procs.worker("victim", lease=lease, **BULK_WORKER)
    survivor = procs.worker("survivor", lease=lease, **BULK_WORKER)
    procs.wait_ready(victim, survivor)
    pub = procs.publisher("publisher", 0, N_BULK, 100)

    # Kill mid-run: after the victim completed a fair amount, long before the end.
    per_pid = wait_for(
        lambda: (c := done_per_pid(db_path))[victim.pid] >= 2000 and c,
        60,
        "the victim to complete 2000 messages",
        interval=0.02,
    )
    victim.popen.send_signal(signal.SIGKILL)
    assert victim.popen.wait(timeout=10) == -signal.SIGKILL
    killed_at = time.time()
    done_at_kill = sum(done_per_pid(db_path).values())
    assert done_at_kill < N_BULK * 0.8, f"killed too late to be mid-run: {done_at_kill} done"

    # The rows the dead worker held: unacked, leased to it, and now nobody renews them.
    orphans = {
        r["body"]["id"]: r["visible_at"]
        for r in work_rows(db_path)
        if r["leased_by"] == victim.worker_id and r["lease_token"] is not None
    }
    assert orphans, "the victim held no leased rows when killed: the kill proved nothing"
    assert max(orphans.values()) <= killed_at + lease + 0.5

    # Restart a worker in the victim's place, as a supervisor would.
    restarted = procs.worker("restarted", lease=lease, **BULK_WORKER)
    procs.wait_ready(restarted)

    wait_for(lambda: done_count(db_path) >= N_BULK, 60, "all 20,000 onward messages")
    assert pub.popen.wait(timeout=10) == 0, pub.tail()
    elapsed = time.monotonic() - t0
    for w in (survivor, restarted):
        assert_clean_exit(w, terminate(w))

    rows = done_rows(db_path)
    assert_exactly_once(rows, set(range(N_BULK)))
    by_id = {r["id"]: r for r in rows}
    for mid, lease_deadline in orphans.items():
        redone = by_id[mid]
        # Redelivered to a live worker, as a new attempt, only after the dead lease expired.
        assert redone["pid"] in {survivor.pid, restarted.pid}, redone
        assert redone["attempt"] >= 2, redone
        assert redone["at"] >= lease_deadline, (redone, lease_deadline)
    redelivered = [r for r in rows if r["attempt"] > 1]
    assert {r["id"] for r in redelivered} >= orphans.keys()
    assert work_rows(db_path) == []
    assert dead_letters(db_path) == []
    final = Counter(r["pid"] for r in rows)
    print(
        f"\nkill -9 run: {elapsed:.1f}s; victim completed {per_pid[victim.pid]}+ before the "
        f"kill ({final[victim.pid]} in total), held {len(orphans)} leased rows; "
        f"{len(redelivered)} redeliveries in total; per worker {dict(final)}"
    )


@pytest.mark.timeout(90)
def test_sigterm_waits_for_running_handler_and_hands_back_prefetched_rows(
    procs: Processes, db_path: Path
) -> None:
    """SIGTERM 0.5 s into a 3 s handler: it finishes and acks, the prefetch goes back."""
    t0 = time.monotonic()
    worker = procs.worker("worker", max_workers=1, prefetch=16, lease=30)
    procs.wait_ready(worker)

    # One transaction: the worker's first claim takes all 11 rows (prefetch 16).
    slow = {"id": 0, "sleep": 3.0, "trace": True}
    publish(procs.url, [slow, *({"id": i} for i in range(1, 11))])

    started = wait_for(
        lambda: procs.event_time("start", 0, worker.pid), 15, "the slow handler to start"
    )
    rows = work_rows(db_path)
    assert len(rows) == 11 and all(r["leased_by"] == worker.worker_id for r in rows), rows
    time.sleep(max(0.0, started + 0.5 - time.time()))
    worker.popen.send_signal(signal.SIGTERM)
    sigterm_at = time.time()

    code = worker.popen.wait(timeout=25)
    exited_at = time.time()
    assert_clean_exit(worker, code)
    finished = procs.event_time("end", 0, worker.pid)
    assert finished is not None, "the running handler was not allowed to finish"
    assert finished >= started + 3.0 - TIMER_SLACK
    assert exited_at >= finished, "the process exited before its running handler finished"
    assert exited_at - sigterm_at >= 2.0

    # The slow message was acked together with its onward message.
    done = done_rows(db_path)
    assert [(r["id"], r["pid"], r["attempt"]) for r in done] == [(0, worker.pid, 1)]
    rows = work_rows(db_path)
    assert sorted(r["body"]["id"] for r in rows) == list(range(1, 11))
    # Handed back unstarted: no attempt charged, no lease, claimable right now.
    now = time.time()
    for r in rows:
        assert r["attempts"] == 0, r
        assert r["lease_token"] is None and r["leased_by"] is None, r
        assert r["visible_at"] <= now, r

    # Another worker takes them at once -- far sooner than the 30 s lease would allow.
    other = procs.worker("other", max_workers=1, prefetch=16, lease=30)
    procs.wait_ready(other)
    wait_for(lambda: done_count(db_path) == 11, 10, "the handed-back rows to be handled")
    assert_clean_exit(other, terminate(other))
    done = done_rows(db_path)
    assert_exactly_once(done, set(range(11)))
    assert all(r["pid"] == other.pid and r["attempt"] == 1 for r in done if r["id"] != 0)
    assert work_rows(db_path) == []
    print(
        f"\nSIGTERM: exited {exited_at - sigterm_at:.2f}s after SIGTERM, "
        f"{exited_at - finished:.3f}s after the handler finished; test {time.monotonic() - t0:.1f}s"
    )


@pytest.mark.timeout(90)
def test_sigstop_lease_fencing_refuses_the_late_ack(procs: Processes, db_path: Path) -> None:
    """A frozen worker loses its lease; its late ack after SIGCONT is refused."""
    t0 = time.monotonic()
    lease = 1.5
    a = procs.worker("a", max_workers=1, lease=lease)
    procs.wait_ready(a)
    # Slow only on the first attempt: the worker that takes over finishes at once.
    publish(procs.url, [{"id": 0, "sleep": 3.0, "slow_attempt": 1, "trace": True}])
    a_started = wait_for(lambda: procs.event_time("start", 0, a.pid, 1), 15, "A to start")

    # Freeze A, making sure it is not frozen while holding the write lock.
    while True:
        os.kill(a.pid, signal.SIGSTOP)
        if write_lock_free(db_path):
            break
        os.kill(a.pid, signal.SIGCONT)
        time.sleep(0.01)
    stopped_at = time.time()
    lease_deadline = work_rows(db_path)[0]["visible_at"]
    assert lease_deadline <= stopped_at + lease + 0.1

    b = procs.worker("b", max_workers=1, lease=lease)
    procs.wait_ready(b)
    wait_for(lambda: done_count(db_path) == 1, 15, "B to complete the message")
    assert a.popen.poll() is None
    assert work_rows(db_path) == [], "B's ack should have removed the row"
    b_started = procs.event_time("start", 0, b.pid, 2)
    assert b_started is not None and b_started >= lease_deadline

    os.kill(a.pid, signal.SIGCONT)
    a_finished = wait_for(lambda: procs.event_time("end", 0, a.pid, 1), 10, "A's handler to end")
    assert a_finished >= a_started + 3.0 - TIMER_SLACK
    wait_for(lambda: "refused" in a.output(), 10, "A to log that its ack was refused")

    for w in (a, b):
        assert_clean_exit(w, terminate(w))
    refusal = [line for line in a.output().splitlines() if "refused" in line]
    assert len(refusal) == 1, refusal
    # The wording comes from settlement.py: the ack, refused, because the lease expired.
    assert re.search(r"\back\b.*\brefused\b.*\blease expired\b", refusal[0]), refusal
    assert "refused" not in b.output()

    done = done_rows(db_path)
    assert [(r["id"], r["pid"], r["attempt"]) for r in done] == [(0, b.pid, 2)]
    assert work_rows(db_path) == []
    assert dead_letters(db_path) == []
    print(f"\nlease fencing: {time.monotonic() - t0:.1f}s; A's refusal: {refusal[0].strip()}")


@pytest.mark.timeout(90)
def test_always_failing_handler_is_retried_then_dead_lettered(
    procs: Processes, db_path: Path
) -> None:
    """Retried with backoff in a real worker, then dead-lettered with error and headers."""
    t0 = time.monotonic()
    backoff, max_attempts = 0.4, 3
    worker = procs.worker("worker", max_attempts=max_attempts, backoff=backoff, lease=30)
    procs.wait_ready(worker)
    headers = {"x-tenant": "acme", "x-trace-id": "trace-42"}
    publish(procs.url, [{"id": 7, "fail": True, "trace": True}], headers=headers)

    letters = wait_for(lambda: dead_letters(db_path), 20, "the dead letter")
    assert len(letters) == 1, letters
    dl = letters[0]
    assert dl["queue"] == WORK and dl["grp"] == GROUP
    assert dl["attempts"] == max_attempts
    assert dl["reason"] == f"failed {max_attempts} of {max_attempts} attempts"
    assert dl["error"] == (
        f"builtins.RuntimeError: handler always fails for message 7 (attempt {max_attempts})"
    )
    assert json.loads(bytes(dl["body"])) == {"id": 7, "fail": True, "trace": True}
    stored_headers = json.loads(dl["headers"])
    assert {k: stored_headers.get(k) for k in headers} == headers, stored_headers
    assert work_rows(db_path) == []
    assert done_count(db_path) == 0

    # Each attempt ran in the worker, with exponential backoff between them.
    fails = sorted(
        (int(e[3]), float(e[-1]))
        for e in procs.read_events()
        if e[0] == "fail" and int(e[2]) == worker.pid
    )
    assert [a for a, _ in fails] == list(range(1, max_attempts + 1)), fails
    gaps = [later - earlier for (_, earlier), (_, later) in itertools.pairwise(fails)]
    assert gaps[0] >= backoff and gaps[1] >= 2 * backoff, gaps

    # The same data through the broker's own API, and the worker is still healthy.
    async def via_api() -> list[Any]:
        async with SqliteBroker(procs.url, logger=None) as broker:
            return await broker.dead_letters(WORK)

    [api_dl] = asyncio.run(via_api())
    assert api_dl.attempts == max_attempts and api_dl.headers.get("x-trace-id") == "trace-42"
    publish(procs.url, [{"id": 8}])
    wait_for(lambda: done_count(db_path) == 1, 10, "a healthy message after the failures")
    assert "moved to the dead-letter table" in worker.output()
    assert_clean_exit(worker, terminate(worker), handler_errors=True)
    rounded = [round(g, 2) for g in gaps]
    print(f"\ndead letter: {time.monotonic() - t0:.1f}s, attempt gaps {rounded}")


@pytest.mark.timeout(90)
def test_sigterm_hands_back_prefetched_rows_while_a_handler_still_runs(
    procs: Processes, db_path: Path
) -> None:
    """Rows claimed but not started are handed back at SIGTERM, not after the grace period.

    While the stopping worker waits for its slow handler, a second worker must be able to
    take the prefetched rows instead of their sitting leased (and heartbeat-renewed) until
    the handler finishes.
    """
    worker = procs.worker("worker", max_workers=1, prefetch=16, lease=30)
    procs.wait_ready(worker)
    slow = {"id": 0, "sleep": 4.0, "trace": True}
    publish(procs.url, [slow, *({"id": i} for i in range(1, 11))])
    started = wait_for(
        lambda: procs.event_time("start", 0, worker.pid), 15, "the slow handler to start"
    )
    time.sleep(max(0.0, started + 0.5 - time.time()))
    worker.popen.send_signal(signal.SIGTERM)

    # The handler still has ~3.5 s to run; the unstarted rows should be free well before.
    def handed_back() -> bool:
        rows = [r for r in work_rows(db_path) if r["body"]["id"] != 0]
        return len(rows) == 10 and all(r["lease_token"] is None for r in rows)

    deadline = started + 2.5
    released = False
    while time.time() < deadline:
        if handed_back():
            released = True
            break
        time.sleep(0.05)
    still_running = procs.event_time("end", 0, worker.pid) is None
    state = [(r["body"]["id"], r["attempts"], r["lease_token"]) for r in work_rows(db_path)]
    code = worker.popen.wait(timeout=25)
    assert_clean_exit(worker, code)
    assert still_running, "the slow handler ended early: the check above proved nothing"
    assert released, (
        "rows prefetched but not started stayed leased to the stopping worker while its "
        f"running handler finished (state 2 s after SIGTERM: {state})"
    )
