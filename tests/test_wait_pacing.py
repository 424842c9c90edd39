"""How long ``Client.wait`` lets completions gather between feed reads."""

from __future__ import annotations

import pytest

from msgcore.jobs.client import _COALESCE_MAX, _COALESCE_PER_JOB, _coalesce


def test_before_any_job_finished_the_pause_grows_with_the_pending_jobs() -> None:
    assert _coalesce(1, 0, 0.0) == pytest.approx(_COALESCE_PER_JOB)
    assert _coalesce(10, 0, 1.0) == pytest.approx(10 * _COALESCE_PER_JOB)
    assert _coalesce(100_000, 0, 1.0) == _COALESCE_MAX


def test_the_pause_is_half_the_time_the_pending_jobs_take_at_their_rate() -> None:
    # 1,000 jobs finished in 0.1 s (10,000/s): 200 pending take 20 ms, so 10 ms
    assert _coalesce(200, 1_000, 0.1) == pytest.approx(0.010)
    # the last few: well under the per-job pause, so the last read comes soon
    assert _coalesce(4, 1_000, 0.1) == pytest.approx(0.0002)


def test_a_slow_rate_never_pauses_longer_than_without_it() -> None:
    # 2 jobs a second: the pending ones would take minutes, the pause stays bounded
    assert _coalesce(200, 2, 1.0) == _COALESCE_MAX
    assert _coalesce(3, 2, 1.0) == pytest.approx(3 * _COALESCE_PER_JOB)
