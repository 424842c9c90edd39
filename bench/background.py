"""CPU used by everything else on the machine while a measurement runs.

The suite's numbers are only as good as the machine is quiet. ``CpuWatch`` reads
system-wide busy CPU time and subtracts the benchmark's own process, its
subprocesses and the broker servers (Redis, RabbitMQ): what is left is background
load from other programs. ``wait_for_quiet`` holds a measurement back (for a
bounded time) while that background is high.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import threading
import time
from dataclasses import dataclass

import psutil

SERVER_NAMES: dict[str, tuple[str, ...]] = {
    "redis": ("redis-server",),
    "rabbit": ("beam.smp", "epmd", "erl_child_setup", "inet_gethost"),
}
SERVER_USERS: dict[str, tuple[str, ...]] = {"redis": ("redis",), "rabbit": ("rabbitmq",)}


def server_pids() -> dict[str, set[int]]:
    """Local Redis / RabbitMQ server processes by server kind (by name or service user)."""
    pids: dict[str, set[int]] = {kind: set() for kind in SERVER_NAMES}
    for proc in psutil.process_iter(["name", "username"]):
        info = proc.info
        for kind, names in SERVER_NAMES.items():
            if info.get("name") in names or info.get("username") in SERVER_USERS[kind]:
                pids[kind].add(proc.pid)
    return pids


def _proc_cpu(pid: int) -> float:
    with contextlib.suppress(psutil.Error):
        t = psutil.Process(pid).cpu_times()
        return float(t.user + t.system)
    return 0.0


def _own_cpu(me: psutil.Process) -> float:
    t = me.cpu_times()
    total = float(t.user + t.system + t.children_user + t.children_system)
    with contextlib.suppress(psutil.Error):
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.Error):
                c = child.cpu_times()
                total += c.user + c.system
    return total


def _busy_cpu() -> float:
    t = psutil.cpu_times()
    # On Linux guest time is already part of user time: drop it, like idle and iowait.
    idle = t.idle + getattr(t, "iowait", 0.0)
    guest = getattr(t, "guest", 0.0) + getattr(t, "guest_nice", 0.0)
    return float(sum(t) - idle - guest)


@dataclass(frozen=True)
class CpuSample:
    """Cumulative CPU seconds: this process, its event-loop (main) thread, the servers."""

    process: float
    main_thread: float
    servers: float

    def __sub__(self, other: CpuSample) -> CpuSample:
        return CpuSample(
            self.process - other.process,
            self.main_thread - other.main_thread,
            self.servers - other.servers,
        )


def cpu_sample(servers: set[int]) -> CpuSample:
    me = psutil.Process()
    t = me.cpu_times()
    main_id = threading.main_thread().native_id
    main = next(
        (th.user_time + th.system_time for th in me.threads() if th.id == main_id), math.nan
    )
    return CpuSample(float(t.user + t.system), float(main), sum(_proc_cpu(pid) for pid in servers))


class CpuWatch:
    """Background CPU (percent of one core) between ``start()`` and ``stop()``."""

    def __init__(self, servers: set[int]) -> None:
        self.servers = servers
        self.me = psutil.Process()
        self._start: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def _sample(self) -> tuple[float, float, float, float]:
        servers = sum(_proc_cpu(pid) for pid in self.servers)
        return time.perf_counter(), _busy_cpu(), _own_cpu(self.me), servers

    def start(self) -> None:
        self._start = self._sample()

    def stop(self) -> float:
        end = self._sample()
        wall = end[0] - self._start[0]
        if wall <= 0:
            return 0.0
        other = (end[1] - self._start[1]) - (end[2] - self._start[2]) - (end[3] - self._start[3])
        return max(other, 0.0) / wall * 100.0


async def wait_for_quiet(
    watch: CpuWatch, *, threshold_pct: float, max_wait: float, step: float = 0.5
) -> tuple[float, float]:
    """Sample background CPU until it is under ``threshold_pct`` or ``max_wait`` passes.

    Returns (seconds waited, last background percent).
    """
    started = time.perf_counter()
    while True:
        watch.start()
        await asyncio.sleep(step)
        pct = watch.stop()
        waited = time.perf_counter() - started
        if pct < threshold_pct or waited >= max_wait:
            return waited, pct
