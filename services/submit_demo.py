"""Submit a few jobs to ``services.jobs`` and print their results (the compose stack's
client: its traces join the workers' in Jaeger).

    MSGCORE_URL=redis://127.0.0.1:6379/0 python -m services.submit_demo [N]
"""

from __future__ import annotations

import sys

from msgcore import SyncClient, telemetry
from services.jobs import CHANNEL, Task


def main(count: int = 20) -> None:
    # OTLP when OTEL_EXPORTER_OTLP_ENDPOINT is set (the compose file sets it)
    tracing = telemetry.setup("jobs-client")
    with SyncClient() as client:
        jobs = client.submit_many(CHANNEL, [Task(n=n) for n in range(count)])
        done = client.wait(jobs, timeout=60, progress=True)
        print(done.counts())
        for job in jobs[:5]:
            print(job.id, job.result())
    tracing.shutdown()  # flushes the batched spans


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
