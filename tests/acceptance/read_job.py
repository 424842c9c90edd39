"""Read one job's record from a process of its own: ``python -m tests.acceptance.read_job ID``.

Uses ``msgcore.SyncClient()`` with the environment's settings (``MSGCORE_URL``,
``MSGCORE_STORE_URL``, ...) and prints the record as one JSON line; the result is the
decoded JSON value (``null`` until the job completed). Exits 0, or 2 with
``{"error": "not found", ...}`` for an unknown id.
"""

from __future__ import annotations

import json
import sys

from msgcore import JobNotFoundError, JobStatus, SyncClient


def main(job_id: str) -> int:
    with SyncClient() as client:
        try:
            job = client.get_job(job_id)
        except JobNotFoundError as exc:
            print(json.dumps({"error": "not found", "id": job_id, "message": str(exc)}))
            return 2
    record = job.record
    # outcome(): the decoded JSON result, read from the record just fetched (no wait)
    result = job.job.outcome() if record.status is JobStatus.COMPLETED else None
    print(
        json.dumps(
            {
                "id": record.job_id,
                "channel": record.channel,
                "status": record.status.value,
                "attempts": record.attempts,
                "worker_id": record.worker_id,
                "created_at": record.created_at,
                "started_at": record.started_at,
                "finished_at": record.finished_at,
                "result": result,
                "error_type": record.error_type,
                "error_message": record.error_message,
            }
        ),
        flush=True,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1]))
