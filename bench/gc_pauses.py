"""Garbage collection pauses in a worker process, with ``Settings.gc_freeze`` on and off.

    python bench/gc_pauses.py [--n 10000] [--rounds 2] [--only sqlite,redis,rabbit]
                              [--loop uvloop|asyncio]

Each side runs in a fresh process of its own (``gc.freeze`` is once per process): a
``create_app`` worker run as ``faststream run`` runs it (``app.run()``; its after-startup
hook freezes the heap unless ``gc_freeze`` is off) and a ``Client`` in the same process that
submits N jobs in batches of 500 and waits for them. Timed from the first submit to the
last result; every collection in that window is timed through ``gc.callbacks``. The table
gives the full (generation 2) collections, their longest and total pause, the young ones'
total, and the jobs/s. Per-message logs off; the sides alternate, and which one runs first
alternates too.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "src", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from rich.console import Console  # noqa: E402
from rich.table import Table  # noqa: E402

from bench.runs import cleanup, run_loop, settings_for  # noqa: E402
from msgcore import Client, Router, create_app  # noqa: E402

BATCH = 500


class _Pauses:
    """Collections timed by generation while ``on``."""

    def __init__(self) -> None:
        self.on = False
        self.started = 0.0
        self.full: list[float] = []
        self.young = 0.0
        gc.callbacks.append(self._seen)

    def _seen(self, phase: str, info: dict[str, Any]) -> None:
        if not self.on:
            return
        if phase == "start":
            self.started = time.perf_counter()
            return
        took = time.perf_counter() - self.started
        if info["generation"] == 2:
            self.full.append(took)
        else:
            self.young += took


async def side(args: argparse.Namespace) -> dict[str, Any]:
    """One side, in this process: what the parent tabulates."""
    tag = f"bg{uuid.uuid4().hex[:6]}"
    tmp = Path(args.workdir)
    settings = settings_for(args.transport, tmp, tag).model_copy(
        update={"gc_freeze": args.side == "freeze"}
    )
    router = Router()
    channel = f"bench.{tag}"

    @router.subscriber(channel, group="bench")
    async def handle(n: int) -> dict[str, int]:
        return {"n": n, "square": n * n}

    app = create_app(router, settings=settings)
    pauses = _Pauses()
    try:
        running = asyncio.create_task(app.run())  # as `faststream run` runs it
        while not getattr(app, "running", False):
            if running.done():
                await running  # its start-up error
                raise SystemExit("the app stopped before it started")
            await asyncio.sleep(0.01)
        try:
            async with Client(settings=settings) as client:
                await (await client.submit(channel, -1)).result(timeout=60)  # warm-up
                pauses.on = True
                started = time.perf_counter()
                handles = await client.submit_many(channel, range(args.n), batch_size=BATCH)
                result = await client.wait(handles, timeout=600)
                elapsed = time.perf_counter() - started
                pauses.on = False
                assert len(result.completed) == args.n, result.counts()
        finally:
            app.exit()
            await running
    finally:
        await cleanup(settings, tag, {channel}, group="bench")
    return {
        "rate": args.n / elapsed,
        "full": pauses.full,
        "young": pauses.young,
        "frozen": gc.get_freeze_count(),
    }


def _run_side(args: argparse.Namespace, transport: str, which: str, tmp: str) -> dict[str, Any]:
    command = [
        sys.executable,
        __file__,
        *("--side", which, "--transport", transport, "--workdir", tmp),
        *("--n", str(args.n), "--loop", args.loop),
    ]
    done = subprocess.run(command, capture_output=True, text=True, check=False, timeout=900)
    if done.returncode != 0:
        raise SystemExit(f"{transport} {which} failed:\n{done.stderr[-3000:]}")
    found: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return found


def main(args: argparse.Namespace) -> None:
    console = Console(width=max(Console().width, 150))
    table = Table(
        title=f"garbage collection pauses in a worker (N={args.n} jobs in batches of {BATCH}, "
        f"{args.rounds} rounds, loop={args.loop}, client in the worker's process, "
        "per-message logs off; medians over the rounds)"
    )
    for col in (
        "transport",
        "gc_freeze",
        "objects frozen",
        "jobs/s",
        "full collections",
        "longest pause ms",
        "full collections ms",
        "young collections ms",
    ):
        table.add_column(col, justify="right")
    with tempfile.TemporaryDirectory() as tmp:
        for transport in args.only.split(","):
            runs: dict[str, list[dict[str, Any]]] = {"freeze": [], "off": []}
            for round_ in range(args.rounds):
                order = ("freeze", "off") if round_ % 2 == 0 else ("off", "freeze")
                for which in order:
                    runs[which].append(_run_side(args, transport, which, tmp))
            for which in ("freeze", "off"):
                got = runs[which]
                console.print(
                    f"{transport} gc_freeze={which == 'freeze'}: "
                    + "; ".join(
                        f"{r['rate']:,.0f} jobs/s, full {[round(p * 1e3, 1) for p in r['full']]} ms"
                        for r in got
                    )
                )
                table.add_row(
                    transport,
                    "on" if which == "freeze" else "off",
                    f"{statistics.median(r['frozen'] for r in got):,.0f}",
                    f"{statistics.median(r['rate'] for r in got):,.0f}",
                    f"{statistics.median(len(r['full']) for r in got):g}",
                    f"{statistics.median(max(r['full'], default=0.0) for r in got) * 1e3:.1f}",
                    f"{statistics.median(sum(r['full']) for r in got) * 1e3:.1f}",
                    f"{statistics.median(r['young'] for r in got) * 1e3:.1f}",
                )
    console.print(table)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=10_000)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--only", default="sqlite,redis,rabbit")
    parser.add_argument("--loop", choices=("uvloop", "asyncio"), default="uvloop")
    parser.add_argument("--side", choices=("freeze", "off"), help=argparse.SUPPRESS)
    parser.add_argument("--transport", help=argparse.SUPPRESS)
    parser.add_argument("--workdir", help=argparse.SUPPRESS)
    parsed = parser.parse_args()
    if parsed.side is None:
        main(parsed)
    else:

        async def _one(args: argparse.Namespace) -> None:
            print(json.dumps(await side(args)))

        run_loop(_one, parsed)
