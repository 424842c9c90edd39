"""The demo's workload: count primes in ranges, declared once on a ``msgcore.Router``.

Deterministic, CPU-bound work whose results are cached: the same range submitted again
is answered from the store without running. Run workers with
``MSGCORE_URL=sqlite:///./msgcore-demo.db faststream run msgcore.demo.app:app``.
"""

from __future__ import annotations

import math
import os

from pydantic import BaseModel

from msgcore import CachePolicy, Router, create_app

CHANNEL = "demo.primes"
GROUP = "workers"


class PrimeJob(BaseModel):
    job: int
    start: int
    stop: int


class PrimeResult(BaseModel):
    job: int
    primes: int
    worker: int
    """The worker process that computed it (a cached answer keeps the original's)."""


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


router = Router()


@router.subscriber(CHANNEL, group=GROUP, cache=CachePolicy(version="1"))
async def handle(job: PrimeJob) -> PrimeResult:
    return PrimeResult(job=job.job, primes=count_primes(job.start, job.stop), worker=os.getpid())


app = create_app(router)
