"""What job tracking costs: submit + completion against bare publish, per transport.

    python bench/jobs.py [--n 2000] [--rounds 3] [--only sqlite,redis,rabbit]
                         [--loop uvloop|asyncio] [--max-workers 1] [--prefetch N]
                         [--worker same|process] [--client own|broker]

Both sides run the same ``msgcore.Router`` handler in one worker (same process, one
consumer group, per-message logs off) and send N messages one by one from one task:

- *bare publish*: ``handle.publish(n)``, job tracking off; timed until the handler has
  seen all N.
- *jobs*: ``client.submit(channel, n)`` (a pending record, then the publish), the worker
  records running/completed with the result; timed until ``client.wait(jobs)`` returns
  all N completed.

The same again in batches of 500 (``asyncio.gather`` of 500 publishes against
``submit_many(batch_size=500)``), and the store queries the waiting client made per job
per second of waiting. The time ratio is jobs time over bare time (1.00x: free).

The client connects a broker of its own (a second SQLite connection, AMQP connection or
Redis pool, as a separate process would have), or with ``--client broker`` submits
through the worker's, as the bare publishes do (``Client(broker=...)`` inside a service;
on SQLite it then shares the worker's connection). ``--worker process`` runs the worker
in a process of its own.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):  # the package, and tests' RabbitMQ cleanup helper
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.runs import cleanup, per_round, run_loop, settings_for  # noqa: E402
from bench.subprocs import spawn_app  # noqa: E402
from msgcore import (  # noqa: E402
    Client,
    Router,
    Settings,
    create_broker,
)


class _Seen:
    def __init__(self, n: int) -> None:
        self.n, self.count = n, 0
        self.first, self.done = asyncio.Event(), asyncio.Event()

    def hit(self) -> None:
        self.count += 1
        self.first.set()
        if self.count >= self.n:
            self.done.set()


RUN: dict[str, Any] = {
    "max_workers": 1,
    "prefetch": None,
    "loop": "uvloop",
    "process": False,
    "client": "own",
}
"""Handlers at once in the worker (``--max-workers``) and its read-ahead (``--prefetch``),
the same on both sides; the loop; whether the worker runs in a process of its own
(``--worker process``); whether the client connects a broker of its own or submits
through the worker's (``--client broker``, as bare publishes do)."""


@asynccontextmanager
async def _worker(
    settings: Settings, seen: _Seen | None, channel: str
) -> AsyncIterator[tuple[Any, str, Any]]:
    """(publisher of the channel, channel, the broker it publishes through)."""
    if RUN["process"]:
        async with _worker_process(settings, seen, channel) as running:
            yield running
        return
    router = Router()

    @router.subscriber(
        channel, group="bench", max_workers=RUN["max_workers"], prefetch=RUN["prefetch"]
    )
    async def handle(n: int) -> int:
        if seen is not None:
            seen.hit()
        return n * n

    publisher = router.publisher(channel)
    broker = create_broker(router, settings=settings)
    async with broker:
        await broker.start()
        yield publisher, channel, broker


@asynccontextmanager
async def _worker_process(
    settings: Settings, seen: _Seen | None, channel: str
) -> AsyncIterator[tuple[Any, str, Any]]:
    """The worker in a process of its own (bench/apps/jobs_worker.py), as deployed: the
    client's and the worker's Python then run on separate cores. Bare publishes go
    through a broker of this process that only publishes."""
    tag, tmp, transport = channel.removeprefix("bench."), RUN["tmp"], settings.transport
    args = [
        *("--transport", transport, "--workdir", str(tmp), "--tag", tag, "--channel", channel),
        *("--max-workers", str(RUN["max_workers"]), "--loop", RUN["loop"]),
    ]
    if RUN["prefetch"] is not None:
        args += ["--prefetch", str(RUN["prefetch"])]
    if seen is None:
        args.append("--track")
    else:
        args += ["--expect", str(seen.n)]
    async with spawn_app("bench.apps.jobs_worker", args, workdir=tmp) as app:
        watcher = asyncio.create_task(_watch(app, seen)) if seen is not None else None
        try:
            router = Router()
            publisher = router.publisher(channel)
            broker = create_broker(router, settings=settings)
            async with broker:
                await broker.start()
                yield publisher, channel, broker
        finally:
            if watcher is not None:
                watcher.cancel()


async def _watch(app: Any, seen: _Seen) -> None:
    """FIRST and DONE from the worker process's stdout, as ``seen`` events."""
    assert app.proc.stdout is not None
    while line := (await app.proc.stdout.readline()).strip():
        if line == b"FIRST":
            seen.first.set()
        elif line == b"DONE":
            seen.count = seen.n
            seen.done.set()


BATCH = 500


async def bare(transport: str, n: int, tmp: Path, *, many: bool = False) -> float:
    tag = f"bj{uuid.uuid4().hex[:6]}"
    settings = settings_for(transport, tmp, tag, track=False)
    seen = _Seen(n + 1)
    try:
        async with _worker(settings, seen, f"bench.{tag}") as (publisher, _, _):
            await publisher.publish(-1)  # warm-up
            await asyncio.wait_for(seen.first.wait(), 60)
            started = time.perf_counter()
            if many:  # as submit_many does: BATCH publishes at once
                for first in range(0, n, BATCH):
                    await asyncio.gather(
                        *(publisher.publish(i) for i in range(first, min(first + BATCH, n)))
                    )
            else:
                for i in range(n):
                    await publisher.publish(i)
            await asyncio.wait_for(seen.done.wait(), 300)
            return n / (time.perf_counter() - started)
    finally:
        await cleanup(settings, tag, {f"bench.{tag}"}, group="bench")


async def jobs(transport: str, n: int, tmp: Path, *, many: bool = False) -> tuple[float, float]:
    """(jobs/s, store queries per job per second of waiting)."""
    tag = f"bj{uuid.uuid4().hex[:6]}"
    settings = settings_for(transport, tmp, tag, track=True)
    try:
        async with _worker(settings, None, f"bench.{tag}") as (_, channel, broker):
            given = broker if RUN["client"] == "broker" else None
            async with Client(settings=settings, broker=given) as client:
                return await _submit_and_wait(client, channel, n, many=many)
    finally:
        await cleanup(settings, tag, {f"bench.{tag}"}, group="bench")


async def _submit_and_wait(
    client: Client, channel: str, n: int, *, many: bool
) -> tuple[float, float]:
    await (await client.submit(channel, -1)).result(timeout=60)  # warm-up
    started = time.perf_counter()
    if many:
        handles = await client.submit_many(channel, range(n), batch_size=BATCH)
    else:
        handles = [await client.submit(channel, i) for i in range(n)]
    queries_before, waited_from = client.store.queries, time.perf_counter()
    result = await client.wait(handles, timeout=300)
    elapsed = time.perf_counter() - started
    waited = max(time.perf_counter() - waited_from, 1e-3)
    queries = client.store.queries - queries_before
    assert len(result.completed) == n, result.counts()
    return n / elapsed, queries / n / waited


async def main(args: argparse.Namespace) -> None:
    RUN.update(
        max_workers=args.max_workers,
        prefetch=args.prefetch,
        loop=args.loop,
        process=args.worker == "process",
        client=args.client,
    )
    console = Console(width=max(Console().width, 150))  # the ranges fit a log too
    table = Table(
        title=f"job tracking cost (N={args.n}, {args.rounds} rounds, loop={args.loop}, "
        f"max_workers={args.max_workers}, prefetch={args.prefetch}, worker in {args.worker}, "
        f"client on {'the worker' if args.client == 'broker' else 'its own'} broker, "
        "per-message logs off)"
    )
    for col in (
        "transport",
        "one by one: bare publish msg/s",
        "submit+wait jobs/s",
        "time ratio (per round: median, range)",
        "batches of 500: bare publish msg/s",
        "submit_many+wait jobs/s",
        "time ratio (per round: median, range) ",
        "wait: store queries/job/s",
    ):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        RUN["tmp"] = Path(tmp)
        for transport in args.only.split(","):
            b: list[float] = []
            j: list[float] = []
            bm: list[float] = []
            m: list[float] = []
            q: list[float] = []
            for round_ in range(args.rounds):
                # which side runs first alternates: drift within a round hits both
                for many in (False, True):
                    sides = [("bare", bm if many else b), ("jobs", m if many else j)]
                    for side, out in sides if round_ % 2 == 0 else sides[::-1]:
                        if side == "bare":
                            out.append(await bare(transport, args.n, Path(tmp), many=many))
                        else:
                            rate, qps = await jobs(transport, args.n, Path(tmp), many=many)
                            out.append(rate)
                            q.append(qps)
            rb, rj = statistics.median(b), statistics.median(j)
            rbm, rm = statistics.median(bm), statistics.median(m)
            table.add_row(
                transport,
                f"{rb:,.0f}",
                f"{rj:,.0f}",
                f"{rb / rj:.2f}x (per round {per_round(b, j)})",
                f"{rbm:,.0f}",
                f"{rm:,.0f}",
                f"{rbm / rm:.2f}x (per round {per_round(bm, m)})",
                f"{max(q):.4f}",
            )
            console.print(
                f"{transport}: bare {[round(x) for x in b]}  jobs {[round(x) for x in j]}  "
                f"bare batches {[round(x) for x in bm]}  submit_many {[round(x) for x in m]}  "
                f"queries/job/s {[round(x, 4) for x in q]}  per-round ratios: one by one "
                f"{per_round(b, j)}, batches {per_round(bm, m)}"
            )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--max-workers", type=int, default=1)
    parser.add_argument(
        "--prefetch", type=int, default=None, help="Router.subscriber(prefetch=...)"
    )
    parser.add_argument(
        "--worker",
        choices=("same", "process"),
        default="same",
        help="the worker in the benchmark's process (default) or a process of its own",
    )
    parser.add_argument(
        "--client",
        choices=("own", "broker"),
        default="own",
        help="the client connects its own broker (default) or submits through the worker's "
        "(Client(broker=...), as the bare publishes go)",
    )
    parsed = parser.parse_args()
    run_loop(main, parsed)
