"""The submitting process of the jobs acceptance scenario, on msgcore's public API only.

``python -m tests.acceptance.submit_jobs COUNT [TIMEOUT]`` submits ``Task(n=i)`` for
``i`` in ``0 .. COUNT-1`` to ``services.jobs``' channel with ``msgcore.SyncClient()``
(transport, store and names all from the environment, as for the workers), waits up to
``TIMEOUT`` seconds (default 60) for every job, and prints one JSON line::

    {"submitted": 10000, "counts": {"completed": 10000}, "matched": 10000,
     "submit_seconds": 2.1, "elapsed": 14.3, "per_pid": {"4242": 5003, ...},
     "first_ids": ["...", ...], "wait_seconds": 9.1, "wait_queries": 412,
     "wait_queries_per_job_per_second": 0.0045}

``matched``: completed jobs whose result is ``{"n": i, "square": i*i, ...}`` for the
job's own ``i``. The exit code is 0 only if every job completed with a matching result.
"""

from __future__ import annotations

import json
import sys
import time
from collections import Counter

from services.jobs import CHANNEL, Squared, Task

from msgcore import JobStatus, SyncClient


def main(count: int, timeout: float) -> int:
    start = time.monotonic()
    with SyncClient() as client:
        jobs = client.submit_many(CHANNEL, (Task(n=i) for i in range(count)))
        submitted = time.monotonic() - start
        # what waiting costs the store: its round trips while wait() runs
        store = client._client.store
        queries_before, wait_started = store.queries, time.monotonic()
        waited = client.wait(jobs, timeout=timeout)
        wait_seconds = max(time.monotonic() - wait_started, 1e-3)
        wait_queries = store.queries - queries_before
        elapsed = time.monotonic() - start
    # wait() refreshes the records of the jobs it saw finish; the rest are as submitted
    counts = Counter(job.record.status.value for job in (*waited.done, *waited.pending))
    matched = 0
    per_pid: Counter[int] = Counter()
    # submit_many returns the jobs in payload order, so job i carries Task(n=i)
    for i, job in enumerate(jobs):
        if job.record.status is not JobStatus.COMPLETED:
            continue
        result = job.job.outcome(Squared)
        per_pid[result.pid] += 1
        if result.n == i and result.square == i * i:
            matched += 1
    report = {
        "submitted": len(jobs),
        "counts": dict(counts),
        "matched": matched,
        "submit_seconds": round(submitted, 2),
        "elapsed": round(elapsed, 2),
        "per_pid": {str(pid): n for pid, n in per_pid.items()},
        "first_ids": [job.id for job in jobs[:5]],
        "wait_seconds": round(wait_seconds, 2),
        "wait_queries": wait_queries,
        "wait_queries_per_job_per_second": wait_queries / max(len(jobs), 1) / wait_seconds,
    }
    print(json.dumps(report), flush=True)
    ok = counts.get(JobStatus.COMPLETED.value, 0) == count == matched == len(jobs)
    return 0 if ok else 1


if __name__ == "__main__":
    count = int(sys.argv[1])
    timeout = float(sys.argv[2]) if len(sys.argv) > 2 else 60.0
    sys.exit(main(count, timeout))
