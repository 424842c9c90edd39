"""When a failed message is tried again, and when it is given up."""

from __future__ import annotations

import random
from dataclasses import dataclass

__all__ = ["RetryPolicy"]


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with jitter, then the dead-letter store.

    ``max_attempts`` counts every delivery, the first one included: with the default
    of 5 a message is handled at most five times before it is dead-lettered.
    """

    max_attempts: int = 5
    backoff: float = 1.0
    """Delay before the second attempt, in seconds."""
    backoff_factor: float = 2.0
    backoff_max: float = 300.0
    jitter: float = 0.1
    """Fraction of the delay added at random, so that failed batches spread out."""

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {self.max_attempts}")
        if self.backoff < 0 or self.backoff_max < 0 or self.jitter < 0:
            raise ValueError("backoff, backoff_max and jitter must not be negative")

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.backoff * self.backoff_factor ** max(attempt - 1, 0), self.backoff_max)
        return base + base * self.jitter * random.random()

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
