"""The CLI tests' worker: ``services.jobs`` plus a channel that always fails and a cached
one, in one process (one worker to start per transport keeps the tests fast)::

    MSGCORE_URL=... faststream run tests.cli.failing_service:app

``MSGCORE_JOBS_PREFIX`` prefixes every channel, as in ``services.jobs``.
"""

from __future__ import annotations

import os
from typing import Any

from faststream import FastStream
from services.jobs import GROUP, Squared, Task
from services.jobs import router as jobs_router

from msgcore import Router, create_app

PREFIX = os.environ.get("MSGCORE_JOBS_PREFIX", "")
FAIL = f"{PREFIX}cli.fail"
"""Every job here is dead-lettered at its first attempt with a ``ValueError``."""
CACHED = f"{PREFIX}cli.cached"
"""Squares, with the result cache on: a repeated payload is answered from the cache."""

router = Router()


class Refused(ValueError):
    """A distinctive error type, so that the test sees the worker's, not a generic one."""


@router.subscriber(FAIL, group=GROUP, max_attempts=1)
async def always_fails(payload: dict[str, Any]) -> None:
    raise Refused(f"cannot handle {payload.get('x')!r}")


@router.subscriber(CACHED, group=GROUP, cache=True)
async def cached_square(task: Task) -> Squared:
    return Squared(n=task.n, square=task.n * task.n, pid=os.getpid())


app = create_app(jobs_router, router)

EXIT_CODE = 7
"""What ``exiting_app`` exits with: a code of its own, for ``msgcore run`` to pass on."""


def exiting_app() -> FastStream:
    """``faststream run tests.cli.failing_service:exiting_app --factory`` exits at once."""
    raise SystemExit(EXIT_CODE)
