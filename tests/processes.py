"""Test processes: ``faststream run`` workers and helper scripts as real child processes
(``Stack``), how they are stopped, and the environment and server cleanup every
multi-process test of a transport shares.

Used by the acceptance suites (``tests/acceptance``) and the CLI tests (``tests/cli``).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import psutil
import pytest

from msgcore import RabbitSettings, RedisSettings, Settings
from msgcore.store import FeedEvent, Store
from tests.contract.harness import delete_rabbit_names, delete_redis_keys

__all__ = [
    "READY",
    "REPO",
    "Proc",
    "Stack",
    "clean_servers",
    "jobs_service_env",
    "kill_tree",
    "read_feed_from",
    "terminate",
    "transport_env",
    "transport_settings",
    "wait_exit",
]

REPO = Path(__file__).resolve().parents[1]
READY = "FastStream app started successfully"


def transport_env(url: str, unique: str) -> dict[str, str]:
    """``MSGCORE_*`` of a case: its transport, names prefixed with ``unique`` (so that
    cases never share a stream, queue or exchange), per-message logs off."""
    return {
        "MSGCORE_URL": url,
        "MSGCORE_LOG_MESSAGES": "false",
        "MSGCORE_REDIS__STREAM_PREFIX": f"{unique}:",
        "MSGCORE_RABBIT__EXCHANGE": unique,
    }


def jobs_service_env(url: str, unique: str, store_url: str | None = None) -> dict[str, str]:
    """``transport_env`` plus what ``services.jobs`` reads: its channel prefixed with
    ``unique``, and its defaults pinned against a developer's shell."""
    env = {
        **transport_env(url, unique),
        "MSGCORE_JOBS_PREFIX": f"{unique}.",
        "MSGCORE_JOBS_MAX_WORKERS": "8",
        "MSGCORE_JOBS_LEASE": "30",
    }
    if store_url:
        env["MSGCORE_STORE_URL"] = store_url
    return env


async def read_feed_from(store: Store, position: str) -> list[FeedEvent]:
    """Every completion-feed event after ``position`` (until the feed is quiet)."""
    events: list[FeedEvent] = []
    while True:
        position, batch = await store.read_feed(position, timeout=0.5)
        if not batch:
            return events
        events += batch


def transport_settings(url: str, unique: str, store_url: str | None = None) -> Settings:
    """The ``Settings`` that ``transport_env`` (plus ``MSGCORE_STORE_URL``) describes, for
    a client in the test process."""
    return Settings(
        url=url,
        store_url=store_url,
        log_messages=False,
        redis=RedisSettings(stream_prefix=f"{unique}:"),
        rabbit=RabbitSettings(exchange=unique),
    )


async def clean_servers(
    name: str,
    url: str,
    unique: str,
    groups: set[tuple[str, str | None]],
    channels: set[str],
) -> None:
    """Delete what a case left on its server: Redis keys naming ``unique``; RabbitMQ
    queues of ``groups`` and exchanges of ``channels`` (quorum queues never expire)."""
    if name == "redis":
        await delete_redis_keys(url, f"*{unique}*")
    elif name == "rabbit":
        await delete_rabbit_names(url, unique, groups, channels)


@dataclass
class Proc:
    name: str
    popen: subprocess.Popen[bytes]
    log: Path

    @property
    def pid(self) -> int:
        return self.popen.pid

    def output(self) -> str:
        try:
            return self.log.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, chars: int = 3000) -> str:
        return f"--- {self.name} (pid {self.pid}) output tail ---\n{self.output()[-chars:]}"


@dataclass
class Stack:
    """The processes of one case; none outlives the test."""

    tmp_path: Path
    env: dict[str, str]
    procs: list[Proc] = field(default_factory=list)

    def spawn(self, name: str, args: list[str], **env: str) -> Proc:
        log = self.tmp_path / f"{name}.log"
        with log.open("wb") as out:
            popen = subprocess.Popen(
                [sys.executable, *args],
                cwd=REPO,
                env={**os.environ, "PYTHONUNBUFFERED": "1", **self.env, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def worker(self, name: str, form: list[str]) -> Proc:
        return self.spawn(name, ["-m", "faststream", "run", *form])

    def publisher(self, count: int) -> Proc:
        return self.spawn("publisher", ["-m", "tests.acceptance.publish", str(count)])

    async def wait_ready(self, *procs: Proc, within: float = 30.0) -> None:
        deadline = time.monotonic() + within
        for p in procs:
            while READY not in p.output():
                if p.popen.poll() is not None:
                    pytest.fail(f"{p.name} exited with {p.popen.returncode} at startup\n{p.tail()}")
                if time.monotonic() > deadline:
                    pytest.fail(f"{p.name} not ready after {within}s\n{p.tail()}")
                await asyncio.sleep(0.05)

    def cleanup(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                kill_tree(p)
            with contextlib.suppress(Exception):
                p.popen.wait(timeout=10)


def kill_tree(proc: Proc) -> None:
    with contextlib.suppress(psutil.Error):
        root = psutil.Process(proc.pid)
        for p in [*root.children(recursive=True), root]:
            with contextlib.suppress(psutil.Error):
                p.kill()  # SIGKILL


async def wait_exit(proc: Proc, within: float, why: str = "") -> int:
    """``proc``'s exit code once it exits; the test fails after ``within`` seconds."""
    deadline = time.monotonic() + within
    while (code := proc.popen.poll()) is None:
        if time.monotonic() > deadline:
            pytest.fail(f"{proc.name} did not exit within {within}s{why}\n{proc.tail()}")
        await asyncio.sleep(0.05)
    return code


async def terminate(proc: Proc, within: float = 20.0) -> int:
    """SIGTERM: ``faststream run``'s graceful shutdown."""
    if proc.popen.poll() is None:
        proc.popen.send_signal(signal.SIGTERM)
    return await wait_exit(proc, within, " of SIGTERM")
