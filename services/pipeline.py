"""The pipeline service: work in on ``pipeline.in``, results out on ``pipeline.out``.

Declared once on a ``msgcore.Router``; the transport comes from ``MSGCORE_URL`` (SQLite
file, Redis or RabbitMQ)::

    MSGCORE_URL=redis://127.0.0.1:6379/0 faststream run services.pipeline:app
    MSGCORE_URL=sqlite:///./pipeline.db faststream run services.pipeline:make_app --factory

Any number of worker processes may run: they share the consumer group ``workers``, so
each work message is handled by one of them.

Environment (besides msgcore's own ``MSGCORE_*`` settings):

- ``MSGCORE_PIPELINE_PREFIX``: prefix of both channel names (default none), so that
  separate runs on one server do not see each other's messages.
- ``MSGCORE_PIPELINE_MAX_WORKERS``: handlers running at once per process (default 4).
- ``MSGCORE_PIPELINE_LEASE``: seconds before a silent worker's message is handed to
  another worker (default 30; transports with leases).
"""

from __future__ import annotations

import os

from faststream import FastStream
from pydantic import BaseModel

from msgcore import Message, Router, create_app

IN = "pipeline.in"
OUT = "pipeline.out"
GROUP = "workers"

PREFIX = os.environ.get("MSGCORE_PIPELINE_PREFIX", "")
MAX_WORKERS = int(os.environ.get("MSGCORE_PIPELINE_MAX_WORKERS", "4"))
LEASE = float(os.environ.get("MSGCORE_PIPELINE_LEASE", "30"))


class Work(BaseModel):
    id: int


class Done(BaseModel):
    id: int
    """The work item's id."""
    message_id: str | None
    """The transport's id of the work message that was handled."""
    pid: int
    """The worker process that handled it."""
    attempt: int


router = Router(prefix=PREFIX)
work = router.publisher(IN)
"""Where producers send ``Work``: ``await work.publish(Work(id=1))``."""
results = router.publisher(OUT)


@router.subscriber(IN, group=GROUP, max_workers=MAX_WORKERS, lease_seconds=LEASE)
@results
async def process(item: Work, msg: Message) -> Done:
    return Done(id=item.id, message_id=msg.message_id, pid=os.getpid(), attempt=msg.attempt)


def make_app() -> FastStream:
    """``faststream run services.pipeline:make_app --factory``: a fresh broker and app."""
    return create_app(router)


app = create_app(router)
