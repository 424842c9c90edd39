"""A small real workload: count primes in ranges, on the embedded SQLite transport.

Run a worker with ``faststream run msgcore.demo.app:app``; the database file comes from
``MSGCORE_DEMO_URL`` (default ``sqlite:///./msgcore-demo.db``).
"""

from __future__ import annotations

import math
import os

from faststream import FastStream
from pydantic import BaseModel

from msgcore.sqlite import SqliteBroker

JOBS_QUEUE = "demo.primes"
RESULTS_QUEUE = "demo.results"


class PrimeJob(BaseModel):
    job: int
    start: int
    stop: int


class PrimeResult(BaseModel):
    job: int
    primes: int
    worker: int


def count_primes(start: int, stop: int) -> int:
    """Primes p with start <= p < stop, by trial division (real CPU work, deterministic)."""
    found = 0
    for n in range(max(start, 2), stop):
        if n % 2 == 0:
            found += n == 2
            continue
        limit = math.isqrt(n)
        if all(n % d for d in range(3, limit + 1, 2)):
            found += 1
    return found


broker = SqliteBroker(
    os.environ.get("MSGCORE_DEMO_URL", "sqlite:///./msgcore-demo.db"),
    logger=None,
)


@broker.subscriber(JOBS_QUEUE, group="workers")
@broker.publisher(RESULTS_QUEUE)
async def handle(job: PrimeJob) -> PrimeResult:
    return PrimeResult(job=job.job, primes=count_primes(job.start, job.stop), worker=os.getpid())


app = FastStream(broker)
