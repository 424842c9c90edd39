"""``msgcore submit|request|jobs|job|wait|cancel``: jobs from a terminal or a shell script.

Every command reads ``MSGCORE_*`` like the services do (``--url``/``--store-url`` on
top), prints a rich table or text for people and, with ``--json``, one JSON document on
stdout for scripts. Errors are one ``error: ...`` line on stderr, passwords redacted.

Exit codes:

=== =====================================================================================
0   submitted; completed (``--wait``, ``wait``); the reply arrived (``request``)
1   bad input: a PAYLOAD that is not JSON, an unknown job id or status, a bad option
2   the job failed: dead-lettered (the worker's error type and text are printed) or
    cancelled
3   the transport or the store did not answer
4   timed out: the job is still queued or running (it goes on), or no reply arrived
130 interrupted (Ctrl-C) while waiting; the jobs go on
=== =====================================================================================

(Click's own usage errors, such as a missing argument or an option that is not a
number, exit 2 before the command runs, with a usage message.)
"""

from __future__ import annotations

import contextlib
import json as jsonlib
import math
import sys
import time
from collections.abc import Coroutine
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, TypeVar

import typer
from rich.markup import escape
from rich.table import Table

from msgcore.cli.common import (
    EXIT_FAILED,
    EXIT_TIMEOUT,
    absent_store,
    check_limit,
    connected_client,
    console,
    errors,
    fail,
    missing_store,
    no_store_text,
    print_json,
    quiet_libraries,
    read_payload,
    run,
    settings,
)
from msgcore.cli.options import StoreUrl, Url
from msgcore.cli.tables import Col, compact_time, fitted_table
from msgcore.exceptions import JobFailed, JobNotFoundError, RequestTimeoutError
from msgcore.jobs.job import Job
from msgcore.settings import Settings
from msgcore.store import JobRecord, JobStatus, store_for, store_url_for
from msgcore.urls import redact_url

__all__ = ["job_json", "register"]

T = TypeVar("T")

EXIT_INTERRUPTED = 130
"""Ctrl-C while waiting (128 + SIGINT, as a shell reports it)."""

Json = Annotated[bool, typer.Option("--json", help="Print JSON for scripts.")]
Text = Annotated[
    bool, typer.Option("--text", help="Send PAYLOAD as a plain string instead of JSON.")
]


# -- shared ------------------------------------------------------------------------------


def _decoded(raw: bytes | None) -> Any:
    if raw is None:
        return None
    try:
        return jsonlib.loads(raw)
    except ValueError:  # written by something else than msgcore's encoder: show it
        return raw.decode("utf-8", errors="replace")


def _duration(record: JobRecord) -> float | None:
    if record.started_at is None or record.finished_at is None:
        return None
    return max(record.finished_at - record.started_at, 0.0)


def job_json(record: JobRecord) -> dict[str, Any]:
    """A job record as ``--json`` prints it: times in epoch seconds, the result as JSON
    data (not the stored bytes)."""
    return {
        "job_id": record.job_id,
        "channel": record.channel,
        "status": record.status.value,
        "attempts": record.attempts,
        "cached": record.cached,
        "worker_id": record.worker_id,
        "created_at": record.created_at,
        "started_at": record.started_at,
        "finished_at": record.finished_at,
        "duration": _duration(record),
        "expires_at": record.expires_at,
        "has_result": record.has_result,
        "result": _decoded(record.result),
        "error_type": record.error_type,
        "error_message": record.error_message,
    }


def _when(epoch: float | None) -> str:
    if not epoch:
        return "-"
    return datetime.fromtimestamp(epoch).astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value >= 1:
        return f"{value:.2f} s"
    ms = value * 1000
    return f"{ms:.1f} ms" if ms < 10 else f"{ms:.0f} ms"


def _error(record: JobRecord) -> str:
    if record.error_type and record.error_message:
        return f"{record.error_type}: {record.error_message}"
    return record.error_type or record.error_message or ""


def _status(record: JobRecord) -> str:
    return f"{record.status.value} (cached)" if record.cached else record.status.value


# Ids are copied into other commands: never shortened; the free text gives way.
_LISTED = (
    Col("id", "key"),
    Col("channel"),
    Col("status", "key"),
    Col("tries", "figure"),
    Col("created", "key"),
    Col("took", "figure"),
    Col("error", "text"),
)
_WAITED = (
    Col("id", "key"),
    Col("channel"),
    Col("status", "key"),
    Col("tries", "figure"),
    Col("took", "figure"),
    Col("outcome", "text"),
)

_CANCELLED = (Col("id", "key"), Col("channel"), Col("outcome", "text"))


def _check_timeout(timeout: float | None) -> None:
    if timeout is not None and not (math.isfinite(timeout) and timeout > 0):
        fail(f"--timeout must be a number of seconds more than 0, got {timeout:g}")


def _print_result(record: JobRecord) -> None:
    value = _decoded(record.result)
    if isinstance(value, str):
        console.print(value, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print_json(jsonlib.dumps(value, default=str))


def _outcome_code(record: JobRecord, waited: float | None) -> int:
    """Exit code for one job after a wait; prints why on stderr when it is not 0."""
    if record.status is JobStatus.COMPLETED:
        return 0
    if record.status is JobStatus.DEAD:
        failed = JobFailed(
            record.job_id,
            error_type=record.error_type,
            error_message=record.error_message,
            attempts=record.attempts,
        )
        _complain(str(failed))
        return EXIT_FAILED
    if record.status is JobStatus.CANCELLED:
        _complain(f"Job {record.job_id!r} was cancelled before a worker started it.")
        return EXIT_FAILED
    after = f" after {waited:g}s" if waited is not None else ""
    _complain(
        f"Job {record.job_id!r} is still {record.status.value}{after}; it goes "
        f"on: wait again with `msgcore wait {record.job_id}`, or check the workers."
    )
    return EXIT_TIMEOUT


def _interruptible(coro: Coroutine[Any, Any, T], goes_on: str) -> T:
    """``run`` for a command that may wait long: Ctrl-C ends it with one line and the
    shell's code for SIGINT instead of click's "Aborted!"."""
    try:
        return run(coro)
    except KeyboardInterrupt:
        fail(f"interrupted; {goes_on}", EXIT_INTERRUPTED)


def _complain(message: str) -> None:
    """``fail``'s line without exiting: a command with output still to print."""
    text = escape(redact_url(message))
    errors.print(f"[red]error:[/red] {text}", highlight=False, soft_wrap=True)


def _not_found(config: Settings, job_ids: list[str], missing: Path | None = None) -> str:
    which = ", ".join(repr(j) for j in job_ids)
    if missing is not None:
        return f"No job {which}: {no_store_text(config, missing)}"
    return (
        f"No job {which} in the store {redact_url(store_url_for(config))}: never submitted "
        "to it, or expired after its retention (MSGCORE_JOBS__RESULT_TTL)."
    )


# -- submit ------------------------------------------------------------------------------


async def _submit(
    config: Settings,
    channel: str,
    payload: Any,
    *,
    wait: bool,
    timeout: float | None,
    job_id: str | None,
    cache: bool,
) -> JobRecord:
    async with connected_client(config) as client:
        job = await client.submit(channel, payload, job_id=job_id, cache=cache)
        if wait and not job.done:
            await client.wait([job], timeout=timeout)
        return job.record


def submit(
    channel: Annotated[
        str, typer.Argument(metavar="CHANNEL", help="The channel a worker handles.")
    ],
    payload: Annotated[
        str | None,
        typer.Argument(
            metavar="PAYLOAD", help="JSON (or a string with --text); - reads stdin; none: null."
        ),
    ] = None,
    *,
    wait: Annotated[
        bool, typer.Option("--wait", "-w", help="Wait for the job and print its result.")
    ] = False,
    timeout: Annotated[
        float | None,
        typer.Option(help="With --wait: give up after this many seconds (exit 4)."),
    ] = None,
    job_id: Annotated[
        str | None,
        typer.Option("--job-id", help="Your own id: an existing id is not queued again."),
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run the handler even if a result is cached.")
    ] = False,
    text: Text = False,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Submit PAYLOAD to CHANNEL as a job; print its id and status (--wait: its result).

    With --wait, the result (or the worker's error) once the job has finished.

    Exit codes:
    0  submitted (with --wait: completed)
    1  bad input: PAYLOAD is not JSON, a bad option
    2  the job failed (dead-lettered: the worker's error is printed) or was cancelled
    3  the transport or the store did not answer
    4  --timeout passed: the job is still queued or running, and goes on
    """
    quiet_libraries()
    _check_timeout(timeout)
    if timeout is not None and not wait:
        fail("--timeout applies to --wait: add --wait, or leave --timeout out")
    config = settings(url, store_url)
    value = read_payload(payload, text=text)
    record = _interruptible(
        _submit(
            config, channel, value, wait=wait, timeout=timeout, job_id=job_id, cache=not no_cache
        ),
        f"the job goes on: find it with `msgcore jobs --channel {channel}`",
    )
    if json:
        print_json(job_json(record))
    else:
        console.print(
            f"job {escape(record.job_id)}: {_status(record)} (channel {escape(record.channel)})",
            highlight=False,
            soft_wrap=True,
        )
        if record.status is JobStatus.COMPLETED:
            _print_result(record)
    if record.done or wait:
        code = _outcome_code(record, timeout)
        if code:
            raise typer.Exit(code)


# -- request -----------------------------------------------------------------------------


async def _request(config: Settings, channel: str, payload: Any, timeout: float | None) -> Any:
    async with connected_client(config) as client:
        try:
            return await client.request(channel, payload, timeout=timeout)
        except RequestTimeoutError:
            waited = timeout if timeout is not None else config.request_timeout
            fail(
                f"No reply on {channel!r} within {waited:g}s: is a worker consuming it "
                "(and replying)? Raise --timeout for slow handlers.",
                EXIT_TIMEOUT,
            )


def request(
    channel: Annotated[
        str, typer.Argument(metavar="CHANNEL", help="The channel a worker handles.")
    ],
    payload: Annotated[
        str,
        typer.Argument(metavar="PAYLOAD", help="JSON (or a string with --text); - reads stdin."),
    ],
    *,
    timeout: Annotated[
        float | None,
        typer.Option(help="Seconds to wait for the reply (MSGCORE_REQUEST_TIMEOUT, 30)."),
    ] = None,
    text: Text = False,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Send PAYLOAD to CHANNEL and print the handler's reply (no job is stored).

    Exit codes:
    0  the reply arrived
    1  bad input: PAYLOAD is not JSON, a bad option
    3  the transport did not answer
    4  no reply within --timeout
    """
    quiet_libraries()
    _check_timeout(timeout)
    config = settings(url, store_url)
    value = read_payload(payload, text=text)
    reply = run(_request(config, channel, value, timeout))
    if isinstance(reply, bytes | bytearray):  # a handler that answered raw bytes
        reply = bytes(reply).decode("utf-8", errors="replace")
    if json:
        print_json(reply)
    elif isinstance(reply, str):
        console.print(reply, markup=False, highlight=False, soft_wrap=True)
    else:
        console.print_json(jsonlib.dumps(reply, default=str))


# -- jobs, job ---------------------------------------------------------------------------


async def _list(
    config: Settings, status: JobStatus | None, channel: str | None, limit: int
) -> list[JobRecord]:
    async with store_for(config) as store:
        return await store.list_jobs(status=status, channel=channel, limit=limit)


def list_jobs(
    *,
    status: Annotated[
        str | None,
        typer.Option("--status", "-s", help="Only this status: " + ", ".join(JobStatus) + "."),
    ] = None,
    channel: Annotated[
        str | None, typer.Option("--channel", "-c", help="Only this channel.")
    ] = None,
    limit: Annotated[int, typer.Option("--limit", "-n", help="At most this many jobs.")] = 50,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """List the store's jobs, newest first.

    Exit codes:
    0  listed (also when none match)
    1  bad input: an unknown --status, a --limit below 1
    3  the store did not answer
    """
    quiet_libraries()
    wanted: JobStatus | None = None
    if status is not None:
        try:
            wanted = JobStatus(status.lower())
        except ValueError:
            fail(f"unknown status {status!r}: use one of {', '.join(JobStatus)}")
    check_limit(limit)
    config = settings(url, store_url)
    absent = absent_store(config, "No jobs")  # a note on stderr: --json stays one document
    found = [] if absent else run(_list(config, wanted, channel, limit))
    if json:
        print_json([job_json(r) for r in found])
        return
    if not found:
        if not absent:
            console.print("No jobs match in this store.")
        return
    rows = [
        (
            escape(r.job_id),
            escape(r.channel),
            r.status.value,
            str(r.attempts),
            compact_time(r.created_at),
            "cached" if r.cached else _seconds(_duration(r)),
            escape(_error(r)),
        )
        for r in found
    ]
    console.print(
        fitted_table(
            f"jobs (newest first, at most {limit})",
            _LISTED,
            rows,
            width=console.width,
            keep=("id", "channel", "status", "tries", "created"),
        )
    )


async def _get(config: Settings, job_id: str) -> JobRecord | None:
    async with store_for(config) as store:
        return await store.get_job(job_id)


def show_job(
    job_id: Annotated[str, typer.Argument(metavar="ID", help="The job id.")],
    *,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Show one job's whole record, its result pretty-printed.

    Exit codes:
    0  found
    1  no job with this id
    3  the store did not answer
    """
    quiet_libraries()
    config = settings(url, store_url)
    missing = missing_store(config)
    record = None if missing is not None else run(_get(config, job_id))
    if record is None:
        fail(_not_found(config, [job_id], missing))
    if json:
        print_json(job_json(record))
        return
    table = Table(show_header=False, box=None, pad_edge=False)
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")  # an id folds rather than lose its end
    rows = [
        ("id", escape(record.job_id)),
        ("channel", escape(record.channel)),
        ("status", _status(record)),
        ("attempts", str(record.attempts)),
        ("worker", escape(record.worker_id or "-")),
        ("created", _when(record.created_at)),
        ("started", _when(record.started_at)),
        ("finished", _when(record.finished_at)),
        ("duration", _seconds(_duration(record))),
        ("expires", _when(record.expires_at)),
    ]
    if record.error_type or record.error_message:
        rows.append(("error", escape(_error(record))))
    for row in rows:
        table.add_row(*row)
    console.print(table)
    if record.has_result or record.result is not None:
        console.print("[bold]result[/bold]")
        _print_result(record)


# -- wait --------------------------------------------------------------------------------


async def _wait(
    config: Settings, job_ids: list[str], timeout: float | None, progress: bool
) -> list[JobRecord]:
    async with connected_client(config) as client:
        records = await client.store.get_jobs(job_ids)
        missing = [j for j in job_ids if j not in records]
        if missing:
            fail(_not_found(config, missing))
        jobs = [Job(client, records[j]) for j in job_ids]
        # The bar goes to stderr, so that stdout stays the table or the JSON document.
        with contextlib.redirect_stdout(sys.stderr):
            await client.wait(jobs, timeout=timeout, progress=progress)
        return [job.record for job in jobs]


def wait_jobs(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Job ids.")],
    *,
    timeout: Annotated[
        float | None, typer.Option(help="Give up after this many seconds (exit 4).")
    ] = None,
    progress: Annotated[
        bool, typer.Option("--progress", help="Draw a progress bar (on stderr).")
    ] = False,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Wait until the jobs have finished and print how each one ended.

    Exit codes:
    0  all completed
    1  an unknown job id
    2  some failed or were cancelled (even if others are still running)
    3  the transport or the store did not answer
    4  --timeout passed with some still queued or running (they go on)
    """
    quiet_libraries()
    _check_timeout(timeout)
    config = settings(url, store_url)
    unique = list(dict.fromkeys(job_ids))  # a repeated id is waited for once
    if (missing := missing_store(config)) is not None:
        fail(_not_found(config, unique, missing))
    started = time.monotonic()
    found = _interruptible(
        _wait(config, unique, timeout, progress), "the jobs go on: wait for them again"
    )
    waited = time.monotonic() - started
    if json:
        print_json([job_json(r) for r in found])
    else:
        rows = []
        for r in found:
            outcome = _error(r) if r.error_type or r.error_message else ""
            if r.status is JobStatus.COMPLETED:
                outcome = jsonlib.dumps(_decoded(r.result), default=str)
            rows.append(
                (
                    escape(r.job_id),
                    escape(r.channel),
                    r.status.value,
                    str(r.attempts),
                    "cached" if r.cached else _seconds(_duration(r)),
                    escape(outcome),
                )
            )
        console.print(
            fitted_table("jobs", _WAITED, rows, width=console.width, keep=("id", "status"))
        )
    failed = [r for r in found if r.status in (JobStatus.DEAD, JobStatus.CANCELLED)]
    pending = [r for r in found if not r.done]
    # A failure is final and waiting longer cannot fix it: it decides over a timeout.
    for r in failed:
        _outcome_code(r, waited)
    if failed:
        raise typer.Exit(EXIT_FAILED)
    if pending:
        _complain(
            f"{len(pending)} of {len(found)} job(s) not finished within {waited:.1f}s "
            f"(first: {pending[0].job_id}, {pending[0].status.value}); they go on: wait "
            "again, or check the workers."
        )
        raise typer.Exit(EXIT_TIMEOUT)


# -- cancel ------------------------------------------------------------------------------


async def _cancel(config: Settings, job_ids: list[str]) -> list[tuple[str, bool, JobRecord | None]]:
    """(id, cancelled now, the record after) for each id; no record: no such job."""
    async with connected_client(config) as client:
        outcomes: list[tuple[str, bool, JobRecord | None]] = []
        for job_id in job_ids:
            try:
                cancelled = await client.cancel(job_id)
            except JobNotFoundError:
                outcomes.append((job_id, False, None))
                continue
            outcomes.append((job_id, cancelled, await client.store.get_job(job_id)))
        return outcomes


def _cancel_outcome(cancelled: bool, record: JobRecord | None) -> str:
    if record is None:
        return "no such job"
    if cancelled:
        return "cancelled"
    if record.status is JobStatus.CANCELLED:
        return "cancelled already"
    return f"not cancelled: {record.status.value}"


def cancel_jobs(
    job_ids: Annotated[list[str], typer.Argument(metavar="ID...", help="Job ids.")],
    *,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Cancel jobs no worker has started yet; their handlers never run.

    Exit codes:
    0  every job is cancelled (now, or before)
    1  an unknown job id (the others are still cancelled)
    2  some had started or finished already: they were not cancelled
    3  the transport or the store did not answer
    """
    quiet_libraries()
    config = settings(url, store_url)
    unique = list(dict.fromkeys(job_ids))
    if (missing := missing_store(config)) is not None:
        fail(_not_found(config, unique, missing))
    outcomes = run(_cancel(config, unique))
    if json:
        print_json(
            [
                {
                    "job_id": job_id,
                    "cancelled": cancelled,
                    "status": None if record is None else record.status.value,
                    "outcome": _cancel_outcome(cancelled, record),
                }
                for job_id, cancelled, record in outcomes
            ]
        )
    else:
        rows = [
            (
                escape(job_id),
                "-" if record is None else escape(record.channel),
                _cancel_outcome(cancelled, record),
            )
            for job_id, cancelled, record in outcomes
        ]
        console.print(
            fitted_table("cancel", _CANCELLED, rows, width=console.width, keep=("id", "outcome"))
        )
    unknown = [job_id for job_id, _, record in outcomes if record is None]
    if unknown:
        fail(_not_found(config, unknown))
    late = [r for _, _, r in outcomes if r is not None and r.status is not JobStatus.CANCELLED]
    if late:
        fail(
            f"{len(late)} job(s) had started or finished already and were not cancelled "
            f"(first: {late[0].job_id}, {late[0].status.value}).",
            EXIT_FAILED,
        )


def register(app: typer.Typer) -> None:
    """Add ``submit``, ``request``, ``jobs``, ``job``, ``wait`` and ``cancel`` to ``app``."""
    app.command("submit")(submit)
    app.command("request")(request)
    app.command("jobs")(list_jobs)
    app.command("job")(show_job)
    app.command("wait")(wait_jobs)
    app.command("cancel")(cancel_jobs)
