"""The jobs service: squares numbers submitted as jobs on ``jobs.square``.

Declared once on a ``msgcore.Router``; the transport comes from ``MSGCORE_URL`` (SQLite
file, Redis or RabbitMQ) and the job store from ``MSGCORE_STORE_URL`` (default: beside
the transport; for RabbitMQ a local SQLite file ``./msgcore-store.db``)::

    MSGCORE_URL=redis://127.0.0.1:6379/0 faststream run services.jobs:app
    MSGCORE_URL=sqlite:///./jobs.db faststream run services.jobs:make_app --factory

Submit work from any process of the same environment and read the results::

    from msgcore import SyncClient
    from services.jobs import CHANNEL, Task

    with SyncClient() as client:
        job = client.submit(CHANNEL, Task(n=12))
        print(job.result(timeout=10))  # {"n": 12, "square": 144, "pid": ...}

Any number of worker processes may run: they share the consumer group ``workers``, so
each job is handled by one of them; its status and result are recorded in the store by
msgcore's job tracking, whichever worker ran it.

Environment (besides msgcore's own ``MSGCORE_*`` settings):

- ``MSGCORE_JOBS_PREFIX``: prefix of the channel name (default none), so that separate
  runs on one server do not see each other's jobs.
- ``MSGCORE_JOBS_MAX_WORKERS``: handlers running at once per process (default 8).
- ``MSGCORE_JOBS_LEASE``: seconds before a silent worker's job is handed to another
  worker (default 30; transports with leases -- RabbitMQ hands a dead worker's jobs
  back when its connection closes).
"""

from __future__ import annotations

import asyncio
import os

from faststream import FastStream
from pydantic import BaseModel

from msgcore import Router, create_app

PREFIX = os.environ.get("MSGCORE_JOBS_PREFIX", "")
CHANNEL = f"{PREFIX}jobs.square"
"""The full channel name: what ``Client.submit`` takes and job records carry."""
GROUP = "workers"

MAX_WORKERS = int(os.environ.get("MSGCORE_JOBS_MAX_WORKERS", "8"))
LEASE = float(os.environ.get("MSGCORE_JOBS_LEASE", "30"))


class Task(BaseModel):
    n: int
    sleep: float = 0.0
    """Seconds the handler waits before answering (lets a test kill a worker mid-job)."""


class Squared(BaseModel):
    n: int
    square: int
    pid: int
    """The worker process that handled the job."""


router = Router()


@router.subscriber(CHANNEL, group=GROUP, max_workers=MAX_WORKERS, lease_seconds=LEASE)
async def square(task: Task) -> Squared:
    if task.sleep > 0:
        await asyncio.sleep(task.sleep)
    return Squared(n=task.n, square=task.n * task.n, pid=os.getpid())


def make_app() -> FastStream:
    """``faststream run services.jobs:make_app --factory``: a fresh broker and app."""
    return create_app(router)


app = create_app(router)
