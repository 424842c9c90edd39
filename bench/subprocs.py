"""Starting the suite's helper programs (bench/apps) as subprocesses.

A helper prints ``READY`` on stdout once its broker has started, and stops cleanly on
SIGTERM. Its stderr goes to a file in the run's work directory, quoted on failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import uuid
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

from bench.results import BenchError

ROOT = Path(__file__).resolve().parents[1]


class AppProcess:
    def __init__(self, module: str, proc: asyncio.subprocess.Process, stderr_path: Path) -> None:
        self.module = module
        self.proc = proc
        self.stderr_path = stderr_path

    @property
    def pid(self) -> int:
        return self.proc.pid

    def stderr_tail(self, lines: int = 3) -> str:
        """The last lines of the helper's stderr (a traceback's last lines name the error)."""
        try:
            text = self.stderr_path.read_text(errors="replace")
        except OSError:
            return ""
        kept = [line.strip() for line in text.splitlines() if line.strip()][-lines:]
        return " | ".join(kept)

    async def wait_ready(self, within: float) -> None:
        assert self.proc.stdout is not None
        try:
            line = await asyncio.wait_for(self.proc.stdout.readline(), within)
        except TimeoutError:
            raise BenchError(
                f"{self.module} did not report READY within {within:.0f} s; stderr: "
                f"{self.stderr_tail() or '(empty)'}"
            ) from None
        if line.strip() != b"READY":
            await self.proc.wait()
            raise BenchError(
                f"{self.module} exited with code {self.proc.returncode} before READY; "
                f"stderr: {self.stderr_tail() or '(empty)'}"
            )

    async def stop(self, grace: float = 20.0) -> int | None:
        if self.proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), grace)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    self.proc.kill()
                await self.proc.wait()
                raise BenchError(
                    f"{self.module} (pid {self.pid}) ignored SIGTERM for {grace:.0f} s and "
                    "was killed (broker.stop() hung?)"
                ) from None
        return self.proc.returncode


@contextlib.asynccontextmanager
async def spawn_app(
    module: str, args: Sequence[str], *, workdir: Path, ready_timeout: float = 60.0
) -> AsyncIterator[AppProcess]:
    """Run ``python -m module args...`` from the repository root until the block ends."""
    stderr_path = workdir / f"{module.rsplit('.', 1)[-1]}-{uuid.uuid4().hex[:8]}.stderr"
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH", "")) if p)
    with stderr_path.open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            module,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
            cwd=ROOT,
            env=env,
        )
    app = AppProcess(module, proc, stderr_path)
    try:
        await app.wait_ready(ready_timeout)
        yield app
    finally:
        await app.stop()
