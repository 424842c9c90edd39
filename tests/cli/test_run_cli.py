"""``msgcore run MODULE:APP`` end to end: real ``faststream run`` workers started through
it on a SQLite file, Redis and RabbitMQ, jobs submitted to them through the CLI; it
becomes faststream (exec), so signals reach faststream and its exit code is the
command's."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import psutil
import pytest

from msgcore.urls import redact_url
from tests.cli.failing_service import EXIT_CODE
from tests.cli.test_jobs_cli import msgcore, one_error_line, parallel
from tests.contract.harness import delete_rabbit_names, delete_redis_keys
from tests.processes import REPO

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX signals")

READY = "waiting for messages"
"""What each worker process logs once its subscriber runs, also with --workers N (where
"FastStream app started successfully" is not logged). The broker logs it at INFO: not
with MSGCORE_LOG_MESSAGES=false."""


class Runner:
    """One ``msgcore run`` process, its output in a file; never outlives the test."""

    def __init__(self, tmp_path: Path, unique: str, url: str | None = None) -> None:
        self.tmp_path = tmp_path
        self.unique = unique
        self.url = url or f"sqlite:///{tmp_path / 'run.db'}"
        self.log = tmp_path / "run.log"
        self.popen: subprocess.Popen[bytes] | None = None

    @property
    def settings_env(self) -> dict[str, str]:
        """What the workers and the CLI calls share besides the URL: this test's names."""
        env = {
            "MSGCORE_REDIS__STREAM_PREFIX": f"{self.unique}:",
            "MSGCORE_RABBIT__EXCHANGE": self.unique,
        }
        if self.url.startswith("amqp"):  # RabbitMQ keeps no state: a store file of its own
            env["MSGCORE_STORE_URL"] = f"sqlite:///{self.tmp_path / 'store.db'}"
        return env

    @property
    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
        # MSGCORE_URL comes from --url; the rest of the settings from the environment
        return {
            **clean,
            "PYTHONUNBUFFERED": "1",
            "MSGCORE_JOBS_PREFIX": f"{self.unique}.",
            **self.settings_env,
        }

    def start(self, *args: str) -> subprocess.Popen[bytes]:
        with self.log.open("wb") as out:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "msgcore.cli", "run", *args],
                cwd=REPO,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        return self.popen

    def output(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def wait_ready(self, workers: int, within: float = 30.0) -> None:
        assert self.popen is not None
        deadline = time.monotonic() + within
        while self.output().count(READY) < workers:
            if self.popen.poll() is not None:
                pytest.fail(f"msgcore run exited with {self.popen.returncode}\n{self.output()}")
            if time.monotonic() > deadline:
                pytest.fail(f"not ready after {within}s\n{self.output()}")
            time.sleep(0.05)

    def exit_code(self, within: float = 20.0) -> int:
        assert self.popen is not None
        try:
            return self.popen.wait(timeout=within)
        except subprocess.TimeoutExpired:
            pytest.fail(f"msgcore run still running {within}s later\n{self.output()}")

    def descendants(self) -> list[psutil.Process]:
        assert self.popen is not None
        return psutil.Process(self.popen.pid).children(recursive=True)

    def cleanup(self) -> None:
        if self.popen is None:
            return
        if self.popen.poll() is None:
            with contextlib.suppress(psutil.Error):  # it may exit meanwhile
                for p in [*self.descendants(), psutil.Process(self.popen.pid)]:
                    with contextlib.suppress(psutil.Error):
                        p.kill()
        self.popen.wait(timeout=10)


@pytest.fixture
def runner(tmp_path: Path, unique: str) -> Iterator[Runner]:
    r = Runner(tmp_path, unique)
    try:
        yield r
    finally:
        r.cleanup()


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def any_runner(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Runner]:
    url = None
    if request.param == "redis":
        url = str(request.getfixturevalue("redis_url"))
    elif request.param == "rabbit":
        url = str(request.getfixturevalue("rabbit_url"))
    r = Runner(tmp_path, unique, url)
    try:
        yield r
    finally:
        r.cleanup()
        if request.param == "redis":
            await delete_redis_keys(r.url, f"{unique}:*")
        elif request.param == "rabbit":
            channel = f"{unique}.jobs.square"
            await delete_rabbit_names(r.url, unique, {(channel, "workers")}, {channel})


def test_workers_get_the_url_and_stop_on_sigterm(any_runner: Runner) -> None:
    runner = any_runner
    proc = runner.start("services.jobs:app", "--workers", "2", "--url", runner.url)
    runner.wait_ready(workers=2)
    # msgcore run became faststream (exec): signals and the exit code are faststream's
    assert "faststream" in psutil.Process(proc.pid).cmdline()
    workers = runner.descendants()
    assert len(workers) >= 2  # faststream's worker processes

    done = msgcore(
        "submit",
        f"{runner.unique}.jobs.square",
        '{"n": 6}',
        "--wait",
        "--timeout",
        "20",
        "--json",
        env={"MSGCORE_URL": runner.url, **runner.settings_env},
    )
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)["result"]
    assert result["square"] == 36
    assert result["pid"] in {p.pid for p in workers}  # run by a worker msgcore run started

    proc.send_signal(signal.SIGTERM)
    assert runner.exit_code() == 0, runner.output()
    # faststream's main process may return while a worker is still finishing its exit
    _, alive = psutil.wait_procs(workers, timeout=15)
    assert not [p for p in alive if p.is_running() and p.status() != psutil.STATUS_ZOMBIE]
    out = runner.output()
    assert f"msgcore run: services.jobs:app with 2 worker(s) on {redact_url(runner.url)}" in out
    assert "Stopping child process" in out  # faststream's graceful shutdown of workers


def test_sigint_and_extra_arguments_reach_faststream(runner: Runner) -> None:
    # --factory is faststream's option, not msgcore run's: it is passed on
    proc = runner.start("services.jobs:make_app", "--url", runner.url, "--factory")
    runner.wait_ready(workers=1)
    proc.send_signal(signal.SIGINT)
    assert runner.exit_code() == 0, runner.output()
    out = runner.output()
    assert "shut down gracefully" in out  # one SIGINT: graceful, not "stop now"
    assert "Traceback" not in out


def test_exit_codes_are_faststreams_and_bad_input_is_refused(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    exiting, bad_level, not_an_app, no_workers, bad_url = parallel(
        lambda: msgcore("run", "tests.cli.failing_service:exiting_app", "--factory"),
        lambda: msgcore("run", "services.jobs:app", "--url", url, "--", "--log-level", "loud"),
        lambda: msgcore("run", "services.jobs"),
        lambda: msgcore("run", "services.jobs:app", "--workers", "0"),
        lambda: msgcore("run", "services.jobs:app", "--url", "mysql://root:hunter2@db/x"),
    )
    # the app's own exit code, and faststream's usage error for an argument passed on
    assert exiting.returncode == EXIT_CODE, exiting.stderr
    assert bad_level.returncode == 2, bad_level.stderr
    assert "loud" in bad_level.stderr and "--log-level" in bad_level.stderr
    assert not (tmp_path / "x.db").exists()

    for done in (not_an_app, no_workers, bad_url):
        assert done.returncode == 1, done.stderr
        one_error_line(done)
    assert "MODULE:APP" in not_an_app.stderr
    assert "--workers" in no_workers.stderr
    assert "hunter2" not in bad_url.stderr and "Cannot pick a transport" in bad_url.stderr
