"""Job records of replayed dead letters.

A worker acknowledges, without running its handler, a message whose job is finished
(``dead`` included): that is how a duplicate delivery is kept from running twice. A
replayed dead letter of a job submitted with ``Client`` would be swallowed that way, so
its ``dead`` record is replaced by a fresh ``pending`` one (same id, channel and extra
fields) before the message goes back: until a worker starts it, the job reads as queued,
and ``Job.result()`` waits for the new outcome.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from msgcore.constants import HEADER_JOB_ID
from msgcore.ops.models import DeadLetter
from msgcore.ops.registry import no_store_file
from msgcore.settings import Settings
from msgcore.store import JobRecord, JobStatus, Store, store_for

__all__ = ["DeadJobs"]


class DeadJobs:
    """Requeues (as ``pending``) the ``dead`` job records of dead letters about to be
    replayed.

    Call it with each batch (it is a replay's ``prepare``); the store is opened on the
    first batch that carries a job id, and closed by ``close()``.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._store: Store | None = None

    async def __call__(self, batch: Sequence[DeadLetter]) -> None:
        if not self.settings.jobs.track:
            return
        job_ids = sorted({str(j) for d in batch if (j := d.headers.get(HEADER_JOB_ID))})
        if not job_ids:
            return
        store = await self._open()
        if store is None:
            return
        records = await store.get_jobs(job_ids)
        dead = [r for r in records.values() if r.status is JobStatus.DEAD]
        if dead:
            await store.delete_jobs([r.job_id for r in dead])
            now = time.time()
            await store.create_jobs(
                [JobRecord(r.job_id, r.channel, created_at=now, extra=r.extra) for r in dead]
            )

    async def _open(self) -> Store | None:
        if self._store is None:
            if no_store_file(self.settings):
                return None  # no job was ever recorded
            store = store_for(self.settings)
            await store.open()
            self._store = store
        return self._store

    async def close(self) -> None:
        store, self._store = self._store, None
        if store is not None:
            await store.close()
