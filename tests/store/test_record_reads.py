"""Job records read from SQLite rows and Redis hashes are the records the dataclass makes."""

from __future__ import annotations

import dataclasses

import pytest

from msgcore.store import queries as q
from msgcore.store.base import JobRecord, JobStatus, new_record
from msgcore.store.sqlite_rows import job_from_row, job_row

FULL = JobRecord(
    "job-1",
    "orders",
    JobStatus.DEAD,
    attempts=2,
    worker_id="host:1",
    created_at=1.5,
    started_at=2.5,
    finished_at=3.5,
    result=b'{"a":1}',
    has_result=True,
    error_type="ValueError",
    error_message="bad",
    cached=True,
    expires_at=9.5,
    extra={"k": "v"},
)
"""A record with every field set."""


def test_a_row_read_back_is_the_record_written_with_every_field() -> None:
    record = FULL
    read = job_from_row(job_row(record))
    assert read == record
    assert vars(read) == vars(record)
    # the columns are the dataclass's fields, in order: a new field fails here first
    names = [f.name for f in dataclasses.fields(JobRecord)]
    assert [c.strip() for c in q.JOB_COLUMNS.split(",")] == names
    assert read.done is True and read.evolve(status=JobStatus.RETRYING).done is False


def test_defaults_and_nulls_read_back_as_the_dataclass_makes_them() -> None:
    record = JobRecord("job-2", "orders")
    read = job_from_row(job_row(record))
    assert vars(read) == vars(record)
    assert read.status is JobStatus.PENDING and read.extra == {}
    assert dataclasses.replace(read, attempts=1) == dataclasses.replace(record, attempts=1)


def test_a_new_record_is_the_one_the_dataclass_makes() -> None:
    made = new_record("job-3", "orders", status=JobStatus.RUNNING, attempts=1, started_at=5.0)
    expected = JobRecord("job-3", "orders", JobStatus.RUNNING, attempts=1, started_at=5.0)
    assert vars(made) == vars(expected)
    assert made.extra == {} and made.extra is not new_record("job-4", "orders").extra


def test_a_redis_hash_reads_as_the_record_the_dataclass_makes() -> None:
    from msgcore.store.redis import _from_hash

    raw = {
        b"channel": b"orders",
        b"status": b"dead",
        b"attempts": b"2",
        b"worker_id": b"host:1",
        b"created_at": b"1.5",
        b"started_at": b"2.5",
        b"finished_at": b"3.5",
        b"result": b'{"a":1}',
        b"has_result": b"1",
        b"error_type": b"ValueError",
        b"error_message": b"bad",
        b"cached": b"1",
        b"expires_at": b"9.5",
        b"extra": b'{"k":"v"}',
        b"msg_stream": b"s",  # fields the record does not hold are ignored
    }
    assert vars(_from_hash("job-1", raw)) == vars(FULL)
    assert vars(_from_hash("job-6", {})) == vars(JobRecord("job-6", ""))


def test_evolve_makes_what_dataclasses_replace_makes() -> None:
    changes = {"status": JobStatus.RUNNING, "attempts": 3, "worker_id": "w:2", "started_at": 4.0}
    evolved = FULL.evolve(**changes)
    assert vars(evolved) == vars(dataclasses.replace(FULL, **changes))  # type: ignore[arg-type]
    assert evolved == dataclasses.replace(FULL, **changes)  # type: ignore[arg-type]
    assert vars(FULL)["status"] is JobStatus.DEAD  # the original is untouched
    with pytest.raises(TypeError, match="no field"):
        FULL.evolve(colour="red")


def test_a_completed_outcome_is_the_one_the_dataclass_makes() -> None:
    from msgcore.store.base import AttemptOutcome, completed_outcome
    from msgcore.store.cache import CacheFill

    fill = CacheFill("key", "orders", 60.0, None)
    made = completed_outcome(2, 5.0, 30.0, b"[1]", fill)
    expected = AttemptOutcome(
        status=JobStatus.COMPLETED,
        attempt=2,
        now=5.0,
        retention=30.0,
        result=b"[1]",
        has_result=True,
        cache=fill,
    )
    assert vars(made) == vars(expected)
    assert made == expected and hash(made) == hash(expected)
    assert made.terminal is True
    # every field is set: a field added to the dataclass without a default fails here
    names = {f.name for f in dataclasses.fields(AttemptOutcome)}
    assert set(vars(made)) == names
