"""Latency summaries."""

from __future__ import annotations

import math
from collections.abc import Sequence


def percentile(sorted_values: Sequence[float], pct: float) -> float:
    """Nearest-rank percentile of already sorted values (``pct`` in 0..100)."""
    if not sorted_values:
        return math.nan
    rank = math.ceil(pct / 100.0 * len(sorted_values))
    return sorted_values[min(max(rank, 1), len(sorted_values)) - 1]


def latency_summary_ms(samples_s: Sequence[float]) -> dict[str, float]:
    """p50/p90/p99/p99.9/mean/max in milliseconds of latencies given in seconds."""
    values = sorted(s * 1000.0 for s in samples_s)
    if not values:
        return {}
    return {
        "p50_ms": percentile(values, 50),
        "p90_ms": percentile(values, 90),
        "p99_ms": percentile(values, 99),
        "p999_ms": percentile(values, 99.9),
        "mean_ms": sum(values) / len(values),
        "max_ms": values[-1],
        "samples": float(len(values)),
    }
