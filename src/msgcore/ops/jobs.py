"""Job records of replayed dead letters.

A worker acknowledges, without running its handler, a message whose job is finished
(``dead`` included): that is how a duplicate delivery is kept from running twice. A
replayed dead letter of a job submitted with ``Client`` would be swallowed that way, so
its ``dead`` record is deleted before the message goes back; the worker that receives
it records the job afresh (``start_attempt`` creates a missing record).
"""

from __future__ import annotations

from collections.abc import Sequence

from msgcore.constants import HEADER_JOB_ID
from msgcore.ops.models import DeadLetter
from msgcore.ops.registry import no_store_file
from msgcore.settings import Settings
from msgcore.store import JobStatus, Store, store_for

__all__ = ["DeadJobs"]


class DeadJobs:
    """Forgets the ``dead`` job records of dead letters about to be replayed.

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
        dead = [job_id for job_id, r in records.items() if r.status is JobStatus.DEAD]
        if dead:
            await store.delete_jobs(dead)

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
