"""The demo's workload: count primes in ranges, declared once on a ``msgcore.Router``.

Deterministic, CPU-bound work whose results are cached: the same range submitted again
is answered from the store without running. Run workers with
``MSGCORE_URL=sqlite:///./msgcore-demo.db faststream run msgcore.demo.app:app``.
"""

from __future__ import annotations

import os

from msgcore import CachePolicy, Router, create_app
from msgcore.demo.work import CHANNEL, GROUP, PrimeJob, PrimeResult, count_primes

__all__ = ["CHANNEL", "PrimeJob", "PrimeResult", "app", "count_primes", "router"]

router = Router()


@router.subscriber(CHANNEL, group=GROUP, cache=CachePolicy(version="1"))
async def handle(job: PrimeJob) -> PrimeResult:
    return PrimeResult(job=job.job, primes=count_primes(job.start, job.stop), worker=os.getpid())


app = create_app(router)
