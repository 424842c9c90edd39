"""The render service: deterministic, expensive work whose results msgcore caches.

``render.page`` turns a document into a "rendered" page (a digest standing in for a
PNG). The same document at the same width renders the same bytes, so the handler is
declared with a result cache: a repeated payload is answered from the store without
running the handler, and a payload being rendered right now is not queued twice::

    MSGCORE_URL=sqlite:///./render.db faststream run services.render:app

    from msgcore import SyncClient
    from services.render import CHANNEL, Page

    with SyncClient(url="sqlite:///./render.db") as client:
        job = client.submit(CHANNEL, Page(doc="intro.md", width=800))
        print(job.result(timeout=10), job.cached)   # cached=True the second time

Environment (besides msgcore's ``MSGCORE_*`` settings):

- ``MSGCORE_RENDER_PREFIX``: prefix of the channel name (default none).
- ``MSGCORE_RENDER_SECONDS``: how long one render takes (default 0.05).
- ``MSGCORE_RENDER_VERSION``: the handler version the cache keys with (default "1").
- ``MSGCORE_RENDER_LEASE``: seconds before a silent worker's job goes to another worker
  (default 30).
- ``MSGCORE_RENDER_CALLS``: a file the handler appends one line to per run (tests count
  handler runs across worker processes with it).
"""

from __future__ import annotations

import asyncio
import hashlib
import os

from faststream import FastStream
from pydantic import BaseModel

from msgcore import CachePolicy, Router, create_app

PREFIX = os.environ.get("MSGCORE_RENDER_PREFIX", "")
CHANNEL = f"{PREFIX}render.page"
GROUP = "renderers"
SECONDS = float(os.environ.get("MSGCORE_RENDER_SECONDS", "0.05"))
VERSION = os.environ.get("MSGCORE_RENDER_VERSION", "1")
CALLS = os.environ.get("MSGCORE_RENDER_CALLS")
LEASE = float(os.environ.get("MSGCORE_RENDER_LEASE", "30"))


class Page(BaseModel):
    doc: str
    width: int = 800


class Rendered(BaseModel):
    doc: str
    width: int
    digest: str


router = Router()


@router.subscriber(
    CHANNEL,
    group=GROUP,
    max_workers=8,
    lease_seconds=LEASE,
    cache=CachePolicy(version=VERSION),
)
async def render(page: Page) -> Rendered:
    if CALLS:
        await asyncio.to_thread(_count_run, CALLS, page)
    await asyncio.sleep(SECONDS)  # the expensive part
    return expected(page)


def _count_run(path: str, page: Page) -> None:
    # one short O_APPEND write per run: lines from several processes never mix
    with open(path, "a", encoding="utf-8") as calls:
        calls.write(f"{os.getpid()} {page.doc} {page.width}\n")


def expected(page: Page) -> Rendered:
    """What ``render`` returns for ``page`` (tests check results against it)."""
    digest = hashlib.sha256(f"{page.doc}@{page.width}/v{VERSION}".encode()).hexdigest()
    return Rendered(doc=page.doc, width=page.width, digest=digest)


def make_app() -> FastStream:
    return create_app(router)


app = create_app(router)
