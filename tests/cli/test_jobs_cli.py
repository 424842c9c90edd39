"""``msgcore submit|request|jobs|job|wait`` end to end: subprocesses of the CLI against a
worker process (``faststream run tests.cli.failing_service:app``: services.jobs plus a
failing and a cached channel) on a SQLite file, Redis and RabbitMQ, with the error paths
and their exit codes.

Independent CLI calls run in parallel (each is a Python start-up of about a second).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from msgcore.cli.common import print_json
from tests.processes import REPO, Stack, clean_servers, terminate, transport_env

GROUP = "workers"
WORKER = ["-m", "faststream", "run", "tests.cli.failing_service:app"]
# Generous for a loaded machine; a healthy run finishes each wait in milliseconds.
WAIT = "20"

Result = subprocess.CompletedProcess[str]


def msgcore(
    *args: str,
    env: dict[str, str] | None = None,
    stdin: str | None = None,
    cwd: Path = REPO,
) -> Result:
    """``msgcore ARGS...`` in a subprocess, with no ``MSGCORE_*`` of the caller's shell."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    return subprocess.run(
        [sys.executable, "-m", "msgcore.cli", *args],
        check=False,
        cwd=cwd,
        env={**clean, "COLUMNS": "200", **(env or {})},
        input=stdin,
        capture_output=True,
        text=True,
        timeout=60,
    )


def parallel(*calls: Callable[[], Result]) -> list[Result]:
    with ThreadPoolExecutor(max_workers=len(calls)) as pool:
        return list(pool.map(lambda call: call(), calls))


def one_error_line(done: Result) -> None:
    """What every failing command prints: a single ``error:`` message, no traceback."""
    assert "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: "), done.stderr
    assert len(done.stderr.strip().splitlines()) == 1, done.stderr


# -- the transports ----------------------------------------------------------------------


@dataclass
class Target:
    name: str
    url: str
    unique: str
    store_url: str | None = None

    def channel(self, name: str) -> str:
        return f"{self.unique}.{name}"

    @property
    def env(self) -> dict[str, str]:
        """What the worker and every CLI call read: this test's names only."""
        env = {
            **transport_env(self.url, self.unique),
            "MSGCORE_JOBS_PREFIX": f"{self.unique}.",
        }
        if self.store_url is not None:
            env["MSGCORE_STORE_URL"] = self.store_url
        return env

    def cli(self, *args: str, stdin: str | None = None) -> Callable[[], Result]:
        return lambda: msgcore(*args, env=self.env, stdin=stdin)

    async def cleanup(self) -> None:
        served = {self.channel(c) for c in ("jobs.square", "cli.fail", "cli.cached")}
        groups: set[tuple[str, str | None]] = {(c, GROUP) for c in served}
        await clean_servers(
            self.name, self.url, self.unique, groups, {*served, self.channel("nobody")}
        )


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str
) -> AsyncIterator[Target]:
    name = request.param
    if name == "sqlite":
        t = Target(name, f"sqlite:///{tmp_path / 'cli.db'}", unique)
    elif name == "redis":
        t = Target(name, str(request.getfixturevalue("redis_url")), unique)
    else:
        # RabbitMQ keeps no state: the store is a file of this test's own (the default,
        # ./msgcore-store.db, would land in the repository)
        url = str(request.getfixturevalue("rabbit_url"))
        t = Target(name, url, unique, store_url=f"sqlite:///{tmp_path / 'store.db'}")
    try:
        yield t
    finally:
        await t.cleanup()


# -- every command against a worker, on each transport ---------------------------------------


async def test_commands_against_a_worker(target: Target, tmp_path: Path) -> None:
    square, failing, cached = (target.channel(c) for c in ("jobs.square", "cli.fail", "cli.cached"))
    stack = Stack(tmp_path, target.env)
    try:
        worker = stack.spawn("worker", WORKER)
        await stack.wait_ready(worker)

        waited, queued, failed, replied, first_cached = parallel(
            target.cli("submit", square, '{"n": 7}', "--wait", "--timeout", WAIT, "--json"),
            target.cli("submit", square, '{"n": 3}', "--job-id", f"{target.unique}-3"),
            target.cli("submit", failing, '{"x": 1}', "--wait", "--timeout", WAIT),
            target.cli("request", square, '{"n": 5}', "--timeout", WAIT, "--json"),
            target.cli("submit", cached, "-", "--wait", "--timeout", WAIT, stdin='{"n": 4}\n'),
        )

        # submit --wait --json: the whole record, the result as JSON data
        assert waited.returncode == 0, waited.stderr
        record = json.loads(waited.stdout)
        assert record["status"] == "completed" and record["channel"] == square
        assert record["result"]["square"] == 49 and record["attempts"] == 1
        assert record["worker_id"] and record["duration"] is not None

        # submit without --wait: the id and the status, exit 0
        job_id = f"{target.unique}-3"
        assert queued.returncode == 0, queued.stderr
        assert queued.stdout.startswith(f"job {job_id}: ")
        assert f"channel {square}" in queued.stdout

        # a job that fails: exit 2, the worker's error type and text
        assert failed.returncode == 2, failed.stdout + failed.stderr
        assert ": dead " in failed.stdout
        one_error_line(failed)
        assert "failed after 1 attempt(s): Refused: cannot handle 1" in failed.stderr
        dead_id = failed.stdout.split()[1].rstrip(":")

        # request: the reply itself, nothing stored
        assert replied.returncode == 0, replied.stderr
        assert json.loads(replied.stdout)["square"] == 25

        # the payload from stdin; the first submit of a cached channel runs the handler
        assert first_cached.returncode == 0, first_cached.stderr
        assert "completed (channel" in first_cached.stdout
        assert '"square": 16' in first_cached.stdout

        waited_both, shown, listed, dead_only, second_cached = parallel(
            target.cli("wait", job_id, dead_id, "--timeout", WAIT, "--json"),
            target.cli("job", job_id),
            target.cli("jobs", "--json"),
            target.cli("jobs", "--status", "dead", "--channel", failing),
            target.cli("submit", cached, '{"n": 4}', "--json"),
        )

        # wait: one completed and one failed job -> exit 2, both records as JSON
        assert waited_both.returncode == 2, waited_both.stderr
        by_id = {r["job_id"]: r for r in json.loads(waited_both.stdout)}
        assert by_id[job_id]["status"] == "completed"
        assert by_id[job_id]["result"]["square"] == 9
        assert by_id[dead_id]["status"] == "dead"
        assert by_id[dead_id]["error_type"] == "Refused"
        assert "Refused: cannot handle 1" in waited_both.stderr

        # job: the record for people, the result pretty-printed
        assert shown.returncode == 0, shown.stderr
        assert job_id in shown.stdout and "completed" in shown.stdout
        assert '"square": 9' in shown.stdout

        # jobs --json: newest first, every job of this test (the store is the test's own,
        # or its Redis keys are under the test's prefix)
        assert listed.returncode == 0, listed.stderr
        rows = json.loads(listed.stdout)
        assert {r["job_id"] for r in rows} >= {record["job_id"], job_id, dead_id}
        created = [r["created_at"] for r in rows]
        assert created == sorted(created, reverse=True)

        # jobs --status dead --channel: the table shows the failed job only
        assert dead_only.returncode == 0, dead_only.stderr
        assert dead_id in dead_only.stdout and job_id not in dead_only.stdout
        assert "Refused: cannot handle 1" in dead_only.stdout

        # the same payload again: answered from the cache, shown as such
        assert second_cached.returncode == 0, second_cached.stderr
        hit = json.loads(second_cached.stdout)
        assert hit["cached"] is True and hit["status"] == "completed"
        assert hit["result"]["square"] == 16

        # cancel: a job nobody has started is cancelled; a finished one is not (exit 2)
        queued_nobody = target.cli("submit", target.channel("nobody"), "1", "--json")()
        assert queued_nobody.returncode == 0, queued_nobody.stderr
        idle_id = json.loads(queued_nobody.stdout)["job_id"]
        cancelled = target.cli("cancel", idle_id, job_id, "--json")()
        assert cancelled.returncode == 2, cancelled.stderr
        one_error_line(cancelled)
        assert "1 job(s) had started or finished already" in cancelled.stderr
        assert [
            (r["job_id"], r["cancelled"], r["outcome"]) for r in json.loads(cancelled.stdout)
        ] == [
            (idle_id, True, "cancelled"),
            (job_id, False, "not cancelled: completed"),
        ]
        again = target.cli("cancel", idle_id)()
        assert again.returncode == 0, again.stderr
        assert "cancelled already" in again.stdout

        assert await terminate(worker) == 0, worker.tail()
    finally:
        stack.cleanup()


# -- error paths -----------------------------------------------------------------------------


def test_bad_input_unknown_ids_and_timeouts(tmp_path: Path, unique: str) -> None:
    """No worker: a SQLite file with a job no one handles."""
    env = {"MSGCORE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "MSGCORE_LOG_MESSAGES": "false"}
    nobody = f"{unique}.nobody"

    def cli(*args: str) -> Callable[[], Result]:
        return lambda: msgcore(*args, env=env)

    submitted = msgcore("submit", nobody, "--text", "hello", "--json", env=env)
    assert submitted.returncode == 0, submitted.stderr
    pending = json.loads(submitted.stdout)
    assert pending["status"] == "pending" and pending["channel"] == nobody

    (
        bad_json,
        no_job,
        no_wait,
        bad_status,
        timed_out,
        wait_timeout,
        no_reply,
        listed,
        no_store_job,
        no_store_list,
        no_cancel,
    ) = parallel(
        cli("submit", nobody, "{not json"),
        cli("job", "no-such-job"),
        cli("wait", pending["job_id"], "no-such-job", "--timeout", "5"),
        cli("jobs", "--status", "finished"),
        cli("submit", nobody, "[1, 2]", "--wait", "--timeout", "0.5"),
        cli("wait", pending["job_id"], "--timeout", "0.3", "--json", "--progress"),
        cli("request", nobody, '"ping"', "--timeout", "0.5"),
        cli("jobs", "--status", "pending", "--json"),
        lambda: msgcore("job", "x", env={"MSGCORE_URL": f"sqlite:///{tmp_path / 'none.db'}"}),
        lambda: msgcore("jobs", "--json", env={"MSGCORE_URL": f"sqlite:///{tmp_path / 'none.db'}"}),
        cli("cancel", "no-such-job", "--json"),
    )

    assert bad_json.returncode == 1
    one_error_line(bad_json)
    assert "PAYLOAD is not JSON" in bad_json.stderr and "--text" in bad_json.stderr

    assert no_job.returncode == 1
    one_error_line(no_job)
    assert no_job.stderr.startswith("error: No job 'no-such-job'")

    # an unknown id is not "too late to cancel": exit 1, named
    assert no_cancel.returncode == 1, no_cancel.stderr
    one_error_line(no_cancel)
    assert no_cancel.stderr.startswith("error: No job 'no-such-job'")
    assert json.loads(no_cancel.stdout)[0]["outcome"] == "no such job"

    assert no_wait.returncode == 1  # checked before waiting: it returns at once
    assert "No job 'no-such-job'" in no_wait.stderr

    assert bad_status.returncode == 1
    one_error_line(bad_status)
    assert "pending, running, completed, retrying, dead, cancelled" in bad_status.stderr

    # still queued at the timeout: exit 4, the job goes on
    assert timed_out.returncode == 4, timed_out.stderr
    assert ": pending (channel" in timed_out.stdout
    one_error_line(timed_out)
    assert "still pending after 0.5s" in timed_out.stderr

    # the progress bar goes to stderr: stdout stays one JSON document
    assert wait_timeout.returncode == 4, wait_timeout.stderr
    assert [r["status"] for r in json.loads(wait_timeout.stdout)] == ["pending"]
    assert "0/1" in wait_timeout.stderr and "not finished" in wait_timeout.stderr

    assert no_reply.returncode == 4, no_reply.stderr
    one_error_line(no_reply)
    assert "No reply" in no_reply.stderr

    # the unfinished submits are listed as pending, the --text one with its string payload
    assert listed.returncode == 0
    assert {r["job_id"] for r in json.loads(listed.stdout)} >= {pending["job_id"]}

    # Ctrl-C while waiting: one line and the shell's code for SIGINT, not "Aborted!"
    # (A shell without job control starts background commands with SIGINT ignored, and
    # Python keeps it so: the child installs the usual KeyboardInterrupt handler first.)
    main = (
        "import runpy, signal, sys; signal.signal(signal.SIGINT, signal.default_int_handler); "
        f"sys.argv = ['msgcore', 'wait', {pending['job_id']!r}]; "
        "runpy.run_module('msgcore.cli', run_name='__main__')"
    )
    waiting = subprocess.Popen(
        [sys.executable, "-c", main],
        cwd=REPO,
        env={**{k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    _until_store_open(waiting.pid, tmp_path / "cli.db")
    waiting.send_signal(signal.SIGINT)
    _, interrupted = waiting.communicate(timeout=30)
    assert waiting.returncode == 130, interrupted
    assert interrupted == "error: interrupted; the jobs go on: wait for them again\n"

    # a SQLite store that does not exist: no job, and the file is not created by a read;
    # the line names the file, which is most often a mistyped URL or another directory
    assert no_store_job.returncode == 1
    one_error_line(no_store_job)
    assert no_store_job.stderr.startswith("error: No job 'x': there is no store file at ")
    assert str(tmp_path / "none.db") in no_store_job.stderr
    assert no_store_list.returncode == 0  # listing nothing is not an error
    assert json.loads(no_store_list.stdout) == []
    assert no_store_list.stderr.startswith("note: No jobs: there is no store file at ")
    assert not (tmp_path / "none.db").exists()


def test_a_bad_setting_in_the_environment_is_one_line_naming_it(tmp_path: Path) -> None:
    db = f"sqlite:///{tmp_path / 'cli.db'}"
    bad_ttl, bad_url, help_, slashes = parallel(
        lambda: msgcore("jobs", env={"MSGCORE_URL": db, "MSGCORE_JOBS__RESULT_TTL": "-1"}),
        lambda: msgcore("stats", env={"MSGCORE_URL": "sqlite://relative.db"}),
        # every command imports the demo's module: a bad setting must not break --help
        lambda: msgcore("--help", env={"MSGCORE_URL": "sqlite://relative.db"}),
        lambda: msgcore("jobs", "--url", "sqlite:x.db"),
    )
    assert bad_ttl.returncode == 1
    one_error_line(bad_ttl)
    assert "jobs.result_ttl (MSGCORE_JOBS__RESULT_TTL): Input should be greater than 0" in (
        bad_ttl.stderr
    )
    assert bad_url.returncode == 1
    one_error_line(bad_url)
    assert "has a host part" in bad_url.stderr
    assert help_.returncode == 0, help_.stderr
    assert "Usage" in help_.stdout
    assert slashes.returncode == 1
    one_error_line(slashes)
    assert "is not a SQLite URL of either form" in slashes.stderr
    assert not (tmp_path / "cli.db").exists()


def test_options_are_checked_before_connecting(tmp_path: Path) -> None:
    env = {"MSGCORE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    huge = "99999999999999999999"  # an OverflowError in SQLite, refused by Redis
    calls = {
        "bare timeout": ("submit", "c", "1", "--timeout", "3"),
        "zero timeout": ("wait", "x", "--timeout", "0"),
        # NaN passed `timeout <= 0`; request then ended in a traceback
        "nan timeout": ("wait", "x", "--timeout", "nan"),
        "inf timeout": ("submit", "c", "1", "--wait", "--timeout", "inf"),
        "nan request": ("request", "c", "1", "--timeout", "nan"),
        "zero limit": ("jobs", "--limit", "0"),
        "huge limit": ("jobs", "-n", huge),
        # "No dead letters." and exit 0 while there were some
        "zero dlq limit": ("dlq", "list", "--limit", "0"),
        "huge dlq limit": ("dlq", "list", "--limit", huge),
        "nan older-than": ("dlq", "purge", "--older-than", "nan"),
        "negative older-than": ("dlq", "purge", "--older-than", "-5"),
        # an --interval of 0 spun at 100% CPU
        "zero interval": ("stats", "--watch", "--interval", "0"),
        "nan interval": ("stats", "--watch", "--interval", "nan"),
        "watch json": ("stats", "--watch", "--json"),
    }
    results = dict(
        zip(
            calls,
            parallel(*(lambda c=c: msgcore(*c, env=env) for c in calls.values())),
            strict=True,
        )
    )
    for name, done in results.items():
        assert done.returncode == 1, (name, done.stderr)
        one_error_line(done)
    assert "--wait" in results["bare timeout"].stderr
    assert "--timeout must be a number of seconds more than 0, got nan" in (
        results["nan request"].stderr
    )
    assert "--limit must be from 1 to 1,000,000" in results["huge dlq limit"].stderr
    assert "--older-than must be" in results["negative older-than"].stderr
    assert "--interval must be at least 0.1 seconds" in results["zero interval"].stderr
    assert not (tmp_path / "cli.db").exists()


def test_payloads_with_nan_or_not_utf8_are_refused(tmp_path: Path) -> None:
    """NaN from a PAYLOAD made later --json output invalid; bytes that are not UTF-8 and
    lone surrogates ended in a UnicodeEncodeError traceback."""
    env = {"MSGCORE_URL": f"sqlite:///{tmp_path / 'cli.db'}"}
    not_json = ["NaN", "[1, Infinity]", '{"a": -Infinity}', "1e999"]
    not_text = [("\udcff", "--text"), ('"\\ud800"',), ('{"\\udfff": 1}',)]
    results = parallel(
        *(lambda p=p: msgcore("submit", "c", p, env=env) for p in not_json),
        *(lambda a=a: msgcore("submit", "c", *a, env=env) for a in not_text),
    )
    for done in results[: len(not_json)]:
        assert done.returncode == 1, done.stderr
        one_error_line(done)
        assert "JSON has no NaN or Infinity" in done.stderr
    for done in results[len(not_json) :]:
        assert done.returncode == 1, done.stderr
        one_error_line(done)
        assert "PAYLOAD is not UTF-8 text" in done.stderr
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MSGCORE_")}
    piped = subprocess.run(
        [sys.executable, "-m", "msgcore.cli", "submit", "c", "-", "--text"],
        cwd=REPO,
        env={**clean, **env},
        input=b"ab\xffcd",
        capture_output=True,
        timeout=60,
        check=False,
    )
    assert piped.returncode == 1
    assert piped.stderr == b"error: PAYLOAD is not UTF-8 text (byte 0xff at 2)\n"
    assert not (tmp_path / "cli.db").exists()  # refused before opening the store
    accented = msgcore("submit", "c", "-", "--json", env=env, stdin='"h\u00e9"\n')
    assert accented.returncode == 0, accented.stderr


def test_json_output_has_no_nan(capsys: pytest.CaptureFixture[str]) -> None:
    print_json({"a": float("nan"), "b": [float("inf"), -float("inf"), 1.5], "c": (2,)})
    assert json.loads(capsys.readouterr().out) == {"a": None, "b": [None, None, 1.5], "c": [2]}


def test_brackets_in_names_are_shown_as_they_are(tmp_path: Path) -> None:
    """A "[" in an id, a channel or an error was rich markup: "[/]" crashed the command
    with a MarkupError traceback, "[red]" vanished."""
    env = {"MSGCORE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "MSGCORE_LOG_MESSAGES": "false"}
    for job_id in ("[/]x", "[red]y"):
        submitted = msgcore("submit", "c", "1", "--job-id", job_id, env=env)
        assert submitted.returncode == 0, submitted.stderr
        assert submitted.stdout.startswith(f"job {job_id}: pending"), submitted.stdout
    cancelled = msgcore("cancel", "[/]x", "[red]y", env=env)
    assert cancelled.returncode == 0, cancelled.stderr  # no worker started them
    assert "[/]x" in cancelled.stdout and "[red]y" in cancelled.stdout
    shown, listed, again, dlq, held, cleared, missing = parallel(
        lambda: msgcore("job", "[/]x", env=env),
        lambda: msgcore("jobs", env=env),
        lambda: msgcore("submit", "c", "1", "--job-id", "[/]x", "--wait", env=env),
        lambda: msgcore("dlq", "show", "[/]", env=env),
        lambda: msgcore("locks", "[/]", env=env),
        lambda: msgcore("cache", "clear", "-c", "[red]z[/]", env=env),
        lambda: msgcore("wait", "[/]x", "[/]missing", env=env),
    )
    for done in (shown, listed, again, dlq, held, cleared, missing):
        assert "Traceback" not in done.stderr, done.stderr
    assert shown.returncode == 0 and "[/]x" in shown.stdout
    assert listed.returncode == 0 and "[/]x" in listed.stdout and "[red]y" in listed.stdout
    # an id that exists is not queued again: its line, then how it ended
    assert again.returncode == 2, again.stderr
    assert again.stdout.startswith("job [/]x: cancelled"), again.stdout
    one_error_line(again)
    assert "Job '[/]x' was cancelled" in again.stderr
    assert dlq.returncode == 1
    one_error_line(dlq)
    assert dlq.stderr.startswith("error: No dead letter '[/]'")
    assert held.returncode == 0 and held.stdout == "No locks are held under '[/]'.\n"
    assert cleared.returncode == 0 and cleared.stdout.endswith(" of [red]z[/].\n")
    assert missing.returncode == 1
    one_error_line(missing)
    assert "No job '[/]missing'" in missing.stderr


def test_a_server_that_accepts_but_never_answers_ends_with_exit_3(redis_url: str) -> None:
    """aio-pika's robust connection caught the cancellation of its connect attempt and
    tried again for ever: the command printed its error and never exited."""
    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen()
    port = silent.getsockname()[1]
    url = f"amqp://u:hunter2@127.0.0.1:{port}/"
    try:
        started = time.monotonic()
        results = parallel(
            lambda: msgcore("submit", "c", "1", "--url", url, "--store-url", redis_url),
            lambda: msgcore("request", "c", "1", "--url", url),
            lambda: msgcore("cancel", "x", "--url", url, "--store-url", redis_url),
        )
        took = time.monotonic() - started
    finally:
        silent.close()
    for done in results:
        assert done.returncode == 3, done.stderr
        one_error_line(done)
        assert "no answer within 10s" in done.stderr and "hunter2" not in done.stderr
    assert took < 30, took  # 10 s to connect, then a few to end the connect task


@pytest.mark.parametrize(
    ("url", "reached"),
    [
        ("redis://:hunter2@127.0.0.1:1/0", "Cannot reach the Redis job store"),
        ("amqp://guest:hunter2@127.0.0.1:1/", "Cannot reach the RabbitMQ transport"),
    ],
)
def test_unreachable_server_is_one_line_without_the_password(url: str, reached: str) -> None:
    # RabbitMQ keeps no state: jobs/job read the store, which must be unreachable too
    store = ["--store-url", "redis://:hunter2@127.0.0.1:1/0"] if "amqp" in url else []
    calls = [
        ("submit", "c", '{"a": 1}', "--wait"),
        ("request", "c", "1"),
        ("wait", "some-id"),
        ("jobs",),
        ("job", "some-id"),
    ]
    results = parallel(*(lambda c=c: msgcore(*c, "--url", url, *store) for c in calls))
    for call, done in zip(calls, results, strict=True):
        assert done.returncode == 3, (call, done.stderr)
        assert "hunter2" not in done.stdout + done.stderr, call
        one_error_line(done)
        if call[0] in ("submit", "request", "wait"):  # these connect the transport first
            assert done.stderr.startswith(f"error: {reached}"), done.stderr


def _until_store_open(pid: int, store: Path) -> None:
    """Until the process holds the store's file open: it opens it inside the command's
    coroutine, so a SIGINT from then on reaches the wait, not the start-up (a loaded CI
    machine took longer than a fixed sleep of 1.5 s, and typer ended the start-up's
    KeyboardInterrupt with code 130 and no line)."""
    fds = Path(f"/proc/{pid}/fd")
    if not fds.exists():  # no procfs (macOS, Windows): a generous sleep instead
        time.sleep(5)
        return
    target = str(store.resolve())
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if any(os.path.realpath(fd) == target for fd in fds.iterdir()):
                return
        except OSError:  # an fd closed while listing
            pass
        time.sleep(0.05)
    raise AssertionError(f"the wait never opened {store}")
