"""One measured figure set, with the conditions it was measured under."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any


class BenchError(Exception):
    """A measurement that could not complete (stall, lost or wrong messages)."""


def describe_error(exc: BaseException, depth: int = 3) -> str:
    """``Type: message`` of an exception and of up to ``depth`` - 1 of its causes."""
    parts: list[str] = []
    current: BaseException | None = exc
    while current is not None and len(parts) < depth:
        text = str(current).strip()
        parts.append(f"{type(current).__name__}: {text}" if text else type(current).__name__)
        current = current.__cause__ or current.__context__
    return " <- ".join(parts)


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
    runs: list[dict[str, Any]] = field(default_factory=list)
    """Every run when the measurement was repeated (``--repeat``); this one is the median."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Result:
        """Read back one entry of ``--json`` output."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})

    def as_dict(self, *, with_runs: bool = True) -> dict[str, Any]:
        out: dict[str, Any] = {
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
        if with_runs and self.runs:
            out["runs"] = self.runs
        return out
