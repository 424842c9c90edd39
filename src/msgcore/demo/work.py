"""The demo's work: its channel, payload and result models, and the prime count.

Apart from ``msgcore.demo.app``, which builds the app (reading ``MSGCORE_*``) when it is
imported: the ``msgcore`` command line imports this module, and a bad setting in the
environment must not break every command at import.
"""

from __future__ import annotations

import math

from pydantic import BaseModel

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
