"""Per-case results of the acceptance scenario, printed at the end of the run."""

from __future__ import annotations

from typing import Any

import pytest

_RESULTS: list[dict[str, Any]] = []


@pytest.fixture
def acceptance_results() -> list[dict[str, Any]]:
    return _RESULTS


def pytest_terminal_summary(terminalreporter: Any) -> None:
    if not _RESULTS:
        return
    terminalreporter.section("pipeline acceptance")
    for r in _RESULTS:
        terminalreporter.write_line(
            f"{r['transport']:<7} {r['mode']:<8} {r['seconds']:>5}s "
            f"(publisher {r['publish_seconds']:>5}s)  ids={r['ids']}  "
            f"duplicates={r['duplicates']}  redelivered={r['redelivered']}  "
            f"killed_after={r['killed_after']}  per_worker={r['per_worker']}"
        )
