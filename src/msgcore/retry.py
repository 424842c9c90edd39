"""When a failed message is tried again, and when it is given up."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from msgcore.exceptions import ConfigurationError

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
        attempts = self.max_attempts
        if not isinstance(attempts, int) or isinstance(attempts, bool) or attempts < 1:
            raise ConfigurationError(
                f"RetryPolicy(max_attempts=...) must be an int of at least 1 (the first "
                f"delivery counts), got {attempts!r}"
            )
        numbers = {
            "backoff": self.backoff,
            "backoff_factor": self.backoff_factor,
            "backoff_max": self.backoff_max,
            "jitter": self.jitter,
        }
        for name, value in numbers.items():
            ok = isinstance(value, int | float) and not isinstance(value, bool)
            if not ok or not math.isfinite(value) or value < 0:
                raise ConfigurationError(
                    f"RetryPolicy({name}=...) must be a finite number of 0 or more, got {value!r}"
                )

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based)."""
        base = min(self.backoff * self.backoff_factor ** max(attempt - 1, 0), self.backoff_max)
        return base + base * self.jitter * random.random()

    def exhausted(self, attempt: int) -> bool:
        return attempt >= self.max_attempts
