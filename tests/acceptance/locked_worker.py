"""The worker of the per-key lock acceptance (``test_lock_processes.py``).

``faststream run tests.acceptance.locked_worker:app``: posts entries to accounts, one
entry per account at a time (``lock="account"``), and appends one JSON line per finished
entry to ``LOCK_TEST_LOG`` (account, job, pid, attempt, start and end), written while the
lock is held, so the test can check that no two intervals of one account overlap across
processes. ``hold_first``: seconds the first attempt sleeps (a worker to kill mid-job).
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from typing import Any

from msgcore import Message, Router, create_app
from msgcore.constants import HEADER_JOB_ID

PREFIX = os.environ.get("LOCK_TEST_PREFIX", "")
CHANNEL = f"{PREFIX}accounts"
LOG = os.environ.get("LOCK_TEST_LOG", "locks.log")
LEASE = float(os.environ.get("LOCK_TEST_MESSAGE_LEASE", "2"))

router = Router()


def _append(line: dict[str, Any]) -> None:
    with open(LOG, "a", encoding="utf-8") as log:  # one short append: not interleaved
        log.write(json.dumps(line) + "\n")


@router.subscriber(CHANNEL, group="workers", max_workers=4, lease_seconds=LEASE, lock="account")
async def post(entry: dict[str, Any], msg: Message) -> dict[str, Any]:
    start = time.time()
    await asyncio.sleep(float(entry.get("sleep", 0.0)))
    if msg.attempt == 1:
        await asyncio.sleep(float(entry.get("hold_first", 0.0)))
    line = {
        "account": entry["account"],
        "job": msg.headers.get(HEADER_JOB_ID),
        "pid": os.getpid(),
        "attempt": msg.attempt,
        "start": start,
        "end": time.time(),
    }
    _append(line)  # still under the lock: the interval is the lock's
    return {"pid": os.getpid(), "attempt": msg.attempt}


app = create_app(router)
