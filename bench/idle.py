"""Scenario D: CPU used by an idle worker process (one subscriber, no traffic).

Each worker is ``bench.apps.idle_worker`` in its own process; after it reports READY
and a settling second, its CPU time (user + system, all threads) is read with psutil
over the measuring window. Several targets are measured side by side in one window.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Sequence
from pathlib import Path

import psutil

from bench.subprocs import AppProcess, spawn_app
from bench.targets import Target


def _snapshot(proc: psutil.Process) -> tuple[float, int]:
    times = proc.cpu_times()
    return times.user + times.system, proc.num_ctx_switches().voluntary


async def idle_cpu(
    targets: Sequence[Target], *, seconds: float, loop: str, workdir: Path, settle: float = 1.0
) -> dict[str, dict[str, float]]:
    async with contextlib.AsyncExitStack() as stack:
        apps: dict[str, AppProcess] = {}
        for target in targets:
            args = [
                "--target", target.key,
                "--endpoint", target.endpoint,
                "--workdir", str(workdir),
                "--loop", loop,
            ]  # fmt: skip
            apps[target.key] = await stack.enter_async_context(
                spawn_app("bench.apps.idle_worker", args, workdir=workdir)
            )
        await asyncio.sleep(settle)
        procs = {key: psutil.Process(app.pid) for key, app in apps.items()}
        before = {key: _snapshot(p) for key, p in procs.items()}
        start = time.perf_counter()
        await asyncio.sleep(seconds)
        wall = time.perf_counter() - start
        after = {key: _snapshot(p) for key, p in procs.items()}
        threads = {key: p.num_threads() for key, p in procs.items()}

    out: dict[str, dict[str, float]] = {}
    for key in apps:
        cpu = after[key][0] - before[key][0]
        out[key] = {
            "window_s": wall,
            "cpu_s": cpu,
            "cpu_pct_of_core": 100.0 * cpu / wall,
            "wakeups_per_s": (after[key][1] - before[key][1]) / wall,
            "threads": float(threads[key]),
        }
    return out
