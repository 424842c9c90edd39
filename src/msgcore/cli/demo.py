"""``msgcore demo``: two worker processes and a publisher on one SQLite file."""

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
from typing import Annotated

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TimeElapsedColumn
from rich.table import Table

from msgcore.demo.app import JOBS_QUEUE, RESULTS_QUEUE, PrimeJob, PrimeResult
from msgcore.sqlite import SqliteBroker

console = Console()


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


def _start_worker(url: str) -> subprocess.Popen[bytes]:
    env = {**os.environ, "MSGCORE_DEMO_URL": url}
    return subprocess.Popen(
        [sys.executable, "-m", "faststream", "run", "msgcore.demo.app:app"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
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


async def _run(
    url: str, jobs: int, span: int, wait_seconds: float
) -> tuple[list[PrimeResult], float]:
    broker = SqliteBroker(url, logger=None)
    results: dict[int, PrimeResult] = {}
    finished = asyncio.Event()

    with Progress(
        "[progress.description]{task.description}",
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task("jobs done", total=jobs)

        @broker.subscriber(RESULTS_QUEUE)
        async def collect(result: PrimeResult) -> None:
            if result.job not in results:
                results[result.job] = result
                progress.update(task, completed=len(results))
            if len(results) == jobs:
                finished.set()

        async with broker:
            await broker.start()
            started = time.perf_counter()
            batch = [
                PrimeJob(job=i, start=i * span, stop=(i + 1) * span).model_dump()
                for i in range(jobs)
            ]
            for i in range(0, jobs, 500):
                await broker.publish_batch(*batch[i : i + 500], queue=JOBS_QUEUE)
            await asyncio.wait_for(finished.wait(), wait_seconds)
            elapsed = time.perf_counter() - started
    return [results[i] for i in range(jobs)], elapsed


def demo(
    jobs: Annotated[int, typer.Option(help="How many jobs to submit.")] = 2000,
    span: Annotated[int, typer.Option(help="Numbers scanned for primes per job.")] = 1000,
    workers: Annotated[int, typer.Option(help="Worker processes to start.")] = 2,
    db: Annotated[
        Path | None, typer.Option(help="Database file (default: a new temporary one).")
    ] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for all results.")] = 120.0,
) -> None:
    """Start workers on a SQLite file, submit a batch of real work, show the results."""
    tmp = None
    if db is None:
        tmp = tempfile.TemporaryDirectory(prefix="msgcore-demo-")
        db = Path(tmp.name) / "msgcore.db"
    url = f"sqlite:///{db.resolve()}"
    console.print(f"[bold]msgcore demo[/]: {workers} worker processes on [cyan]{db}[/]")

    procs = [_start_worker(url) for _ in range(workers)]
    try:
        results, elapsed = asyncio.run(_run(url, jobs, span, timeout))
    except TimeoutError:
        console.print(f"[red]Not all results arrived within {timeout:g}s.[/]")
        raise typer.Exit(1) from None
    finally:
        codes = [_stop(p) for p in procs]

    per_worker = Counter(r.worker for r in results)
    total = sum(r.primes for r in results)
    expected = _primes_below(jobs * span)

    table = Table(title="What happened")
    table.add_column("")
    table.add_column("value", justify="right")
    table.add_row("jobs submitted (publish_batch)", f"{jobs:,}")
    table.add_row("results received", f"{len(results):,}")
    for pid, n in sorted(per_worker.items()):
        table.add_row(f"  handled by worker pid {pid}", f"{n:,}")
    table.add_row(f"primes below {jobs * span:,} (from the workers)", f"{total:,}")
    table.add_row("same, computed here to check", f"{expected:,}")
    table.add_row("wall time", f"{elapsed:.2f} s")
    table.add_row("throughput", f"{len(results) / elapsed:,.0f} jobs/s")
    table.add_row("worker exit codes (SIGTERM, graceful)", ", ".join(map(str, codes)))
    console.print(table)
    if total != expected or len(results) != jobs:
        console.print("[red]Results do not match.[/]")
        raise typer.Exit(1)
    console.print("[green]All results arrived exactly once and match.[/]")
    if tmp is not None:
        tmp.cleanup()
