"""A worker app for the multi-process tests: ``faststream run tests.sqlite.apps.pipeline:app``.

Everything is configured through environment variables, so each test can start real
worker processes on its own database file:

- ``MSGCORE_PIPELINE_URL`` (required): the SQLite URL.
- ``MSGCORE_PIPELINE_QUEUE`` / ``MSGCORE_PIPELINE_DONE``: the work queue and the queue
  the handler publishes onward to (defaults ``work`` / ``done``).
- ``MSGCORE_PIPELINE_GROUP`` (default ``pipeline``).
- ``MSGCORE_PIPELINE_LEASE`` (seconds, default 30), ``MSGCORE_PIPELINE_MAX_WORKERS``
  (default 1), ``MSGCORE_PIPELINE_PREFETCH`` (default: the broker's).
- ``MSGCORE_PIPELINE_MAX_ATTEMPTS`` (default 5), ``MSGCORE_PIPELINE_BACKOFF``
  (seconds before the second attempt, default 1.0).
- ``MSGCORE_PIPELINE_GRACEFUL`` (graceful_timeout seconds, default 15).
- ``MSGCORE_PIPELINE_QUIET``: ``1`` turns off FastStream's per-message log lines.
- ``MSGCORE_PIPELINE_EVENTS``: a file the app appends one line per event to:
  ``ready <pid> <time>`` after startup and, for messages with ``"trace": true``,
  ``start|end|fail <id> <pid> <attempt> <time>``.

A work message is a JSON object ``{"id": ..., "sleep": s, "slow_attempt": n,
"fail": bool, "trace": bool}``. The handler sleeps ``sleep`` seconds (only on
attempt ``slow_attempt`` when that is given), raises when ``fail`` is true, and
otherwise returns ``{"id", "pid", "attempt", "at"}``, which the publisher decorator
stores in the done queue -- in the same transaction as the ack.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from faststream import FastStream

from msgcore.retry import RetryPolicy
from msgcore.sqlite import SqliteBroker, SqliteMessage

_env = os.environ

URL = _env["MSGCORE_PIPELINE_URL"]
QUEUE = _env.get("MSGCORE_PIPELINE_QUEUE", "work")
DONE = _env.get("MSGCORE_PIPELINE_DONE", "done")
GROUP = _env.get("MSGCORE_PIPELINE_GROUP", "pipeline")
LEASE = float(_env.get("MSGCORE_PIPELINE_LEASE", "30"))
MAX_WORKERS = int(_env.get("MSGCORE_PIPELINE_MAX_WORKERS", "1"))
PREFETCH = int(_env["MSGCORE_PIPELINE_PREFETCH"]) if "MSGCORE_PIPELINE_PREFETCH" in _env else None
MAX_ATTEMPTS = int(_env.get("MSGCORE_PIPELINE_MAX_ATTEMPTS", "5"))
BACKOFF = float(_env.get("MSGCORE_PIPELINE_BACKOFF", "1.0"))
GRACEFUL = float(_env.get("MSGCORE_PIPELINE_GRACEFUL", "15"))
EVENTS = _env.get("MSGCORE_PIPELINE_EVENTS")
QUIET = _env.get("MSGCORE_PIPELINE_QUIET", "") not in ("", "0")

PID = os.getpid()


def record(*fields: object) -> None:
    """Append one event line; O_APPEND keeps lines of concurrent processes whole."""
    if not EVENTS:
        return
    line = " ".join(str(f) for f in (*fields, repr(time.time()))) + "\n"
    fd = os.open(EVENTS, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, line.encode())
    finally:
        os.close(fd)


# QUIET (logger=None) silences the broker's log entirely: FastStream's per-message
# lines and msgcore's settlement warnings. Only the bulk tests, which look at no log, use it.
broker = SqliteBroker(URL, graceful_timeout=GRACEFUL, **({"logger": None} if QUIET else {}))
app = FastStream(broker)


@app.after_startup
async def _ready() -> None:
    record("ready", PID)


@broker.subscriber(
    QUEUE,
    group=GROUP,
    max_workers=MAX_WORKERS,
    prefetch=PREFETCH,
    lease_seconds=LEASE,
    retry=RetryPolicy(max_attempts=MAX_ATTEMPTS, backoff=BACKOFF, jitter=0.0),
)
@broker.publisher(DONE)
async def handle(body: dict[str, Any], msg: SqliteMessage) -> dict[str, Any]:
    mid = body["id"]
    attempt = msg.attempt
    trace = bool(body.get("trace"))
    if trace:
        record("start", mid, PID, attempt)
    sleep = float(body.get("sleep", 0))
    slow_attempt = body.get("slow_attempt")
    if sleep and (slow_attempt is None or slow_attempt == attempt):
        await asyncio.sleep(sleep)
    if body.get("fail"):
        if trace:
            record("fail", mid, PID, attempt)
        raise RuntimeError(f"handler always fails for message {mid} (attempt {attempt})")
    if trace:
        record("end", mid, PID, attempt)
    return {"id": mid, "pid": PID, "attempt": attempt, "at": time.time()}
