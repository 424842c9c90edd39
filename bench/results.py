"""One measured figure set, with the conditions it was measured under."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


class BenchError(Exception):
    """A measurement that could not complete (stall, lost or wrong messages)."""


@dataclass
class Result:
    scenario: str
    """A end-to-end, B publish_batch, C request/reply, D idle CPU, E A with INFO log."""
    target: str
    loop: str
    """The event loop that actually ran the measurement (uvloop / asyncio)."""
    logging: str
    mode: str = ""
    """For C: in-process or cross-process."""
    metrics: dict[str, float] = field(default_factory=dict)
    error: str | None = None
    note: str = ""
    wall_seconds: float = 0.0
    background_cpu_pct: float = 0.0
    """CPU that other programs used meanwhile, in percent of one core (see background.py)."""
    waited_for_quiet_s: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "scenario": self.scenario,
            "target": self.target,
            "loop": self.loop,
            "logging": self.logging,
            "mode": self.mode,
            "metrics": self.metrics,
            "error": self.error,
            "note": self.note,
            "wall_seconds": round(self.wall_seconds, 3),
            "background_cpu_pct": round(self.background_cpu_pct, 1),
            "waited_for_quiet_s": round(self.waited_for_quiet_s, 1),
        }
