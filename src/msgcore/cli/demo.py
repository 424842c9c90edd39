"""``msgcore demo``: worker processes on one SQLite file, a batch of real jobs, the cache.

What it does, in order: starts ``faststream run msgcore.demo.app:app`` workers on a
fresh SQLite file (no server), submits a batch of prime-counting jobs with
``Client.submit_many`` and waits for them with a progress bar, checks the total against
a sieve computed here, then submits the same batch again: every job is answered from
the result cache without being published or run, and the timing shows it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.table import Table

from msgcore.cli.common import console
from msgcore.demo.work import CHANNEL, PrimeJob, PrimeResult
from msgcore.jobs.client import Client
from msgcore.settings import Settings

_READY_SECONDS = 30.0


def _primes_below(n: int) -> int:
    """Sieve of Eratosthenes: checks the workers' total independently and quickly."""
    if n < 3:
        return 0
    sieve = bytearray([1]) * n
    sieve[0] = sieve[1] = 0
    for i in range(2, int(n**0.5) + 1):
        if sieve[i]:
            sieve[i * i :: i] = bytes(len(range(i * i, n, i)))
    return sum(sieve)


def _start_worker(url: str, log: IO[bytes]) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MSGCORE_URL": url, "MSGCORE_LOG_MESSAGES": "false"}
    env.pop("MSGCORE_STORE_URL", None)  # the demo's state lives in its own file
    return subprocess.Popen(
        [sys.executable, "-m", "faststream", "run", "msgcore.demo.app:app"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,  # a file, not a pipe: a pipe nobody reads fills up
    )


def _stop(worker: subprocess.Popen[bytes]) -> int:
    if worker.poll() is None:
        if sys.platform == "win32":
            worker.terminate()
        else:
            worker.send_signal(signal.SIGTERM)  # graceful: in-flight jobs finish
        try:
            worker.wait(timeout=20)
        except subprocess.TimeoutExpired:
            worker.kill()
            worker.wait()
    return worker.returncode if worker.returncode is not None else -1


async def _workers_ready(client: Client, procs: list[subprocess.Popen[bytes]]) -> None:
    """Workers register the channel's cache policy when they start consuming."""
    deadline = time.monotonic() + _READY_SECONDS
    while await client.store.cache_policy(CHANNEL) is None:
        if any(p.poll() is not None for p in procs):
            raise RuntimeError("a worker process exited during startup")
        if time.monotonic() > deadline:
            raise TimeoutError(f"the workers did not start within {_READY_SECONDS:g}s")
        await asyncio.sleep(0.1)


class _Rounds:
    def __init__(self) -> None:
        self.results: list[PrimeResult] = []
        self.first = self.second = 0.0
        self.cached = 0


async def _run(url: str, jobs: int, span: int, timeout: float, procs: list[Any]) -> _Rounds:
    rounds = _Rounds()
    batch = [PrimeJob(job=i, start=i * span, stop=(i + 1) * span) for i in range(jobs)]
    async with Client(settings=Settings(url=url, log_messages=False)) as client:
        await _workers_ready(client, procs)
        console.print(f"Submitting {jobs:,} jobs to [cyan]{CHANNEL}[/] ...")
        started = time.perf_counter()
        submitted = await client.submit_many(CHANNEL, batch)
        done = await client.wait(submitted, timeout=timeout, progress=True, raise_on_timeout=True)
        rounds.first = time.perf_counter() - started
        rounds.results = [PrimeResult.model_validate(j.outcome()) for j in submitted]
        assert len(done.completed) == jobs

        console.print("Submitting the same jobs again (the result cache answers) ...")
        started = time.perf_counter()
        again = await client.submit_many(CHANNEL, batch)
        await client.wait(again, timeout=timeout, raise_on_timeout=True)
        rounds.second = time.perf_counter() - started
        rounds.cached = sum(j.cached for j in again)
    return rounds


def demo(
    jobs: Annotated[int, typer.Option(help="How many jobs to submit.")] = 2000,
    span: Annotated[int, typer.Option(help="Numbers scanned for primes per job.")] = 1000,
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 2,
    db: Annotated[
        Path | None, typer.Option(help="Database file (default: a new temporary one).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 120.0,
) -> None:
    """Workers on a SQLite file, a batch of real jobs, then the cache answering it again."""
    tmp = tempfile.TemporaryDirectory(prefix="msgcore-demo-")
    if db is None:
        db = Path(tmp.name) / "msgcore.db"
    url = f"sqlite:///{db.resolve()}"
    console.print(f"[bold]msgcore demo[/]: {workers} worker processes on [cyan]{db}[/]")

    with open(Path(tmp.name) / "workers.log", "wb") as log:
        procs = [_start_worker(url, log) for _ in range(workers)]
        try:
            rounds = asyncio.run(_run(url, jobs, span, timeout, procs))
        except (TimeoutError, RuntimeError) as exc:
            console.print(f"[red]{exc}[/]")
            raise typer.Exit(1) from None
        finally:
            codes = [_stop(p) for p in procs]

    per_worker = Counter(r.worker for r in rounds.results)
    total = sum(r.primes for r in rounds.results)
    expected = _primes_below(jobs * span)
    first, second = rounds.first, rounds.second

    table = Table(title="What happened")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("jobs submitted (Client.submit_many)", f"{jobs:,}")
    table.add_row("jobs completed", f"{len(rounds.results):,}")
    for pid, n in sorted(per_worker.items()):
        table.add_row(f"  computed by worker pid {pid}", f"{n:,}")
    table.add_row(f"primes below {jobs * span:,} (from the workers)", f"{total:,}")
    table.add_row("same, computed here to check", f"{expected:,}")
    table.add_row("first run: submit + wait", f"{first:.2f} s ({jobs / first:,.0f} jobs/s)")
    table.add_row("second run: answered from the cache", f"{rounds.cached:,} of {jobs:,}")
    table.add_row("second run: submit + wait", f"{second:.3f} s ({first / second:,.0f}x faster)")
    table.add_row("worker exit codes (SIGTERM, graceful)", ", ".join(map(str, codes)))
    console.print(table)
    tmp.cleanup()
    if total != expected or len(rounds.results) != jobs or rounds.cached != jobs:
        console.print("[red]Results do not match.[/]")
        raise typer.Exit(1)
    console.print(
        "[green]Every job ran once, the results match, and the second run was answered "
        "from the cache without running anything.[/]"
    )
