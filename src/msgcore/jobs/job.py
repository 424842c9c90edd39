"""``Job``: a handle on one submitted job, readable from any process."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from pydantic import ValidationError

from msgcore.exceptions import JobCancelledError, JobFailed, JobNotFoundError, ResultTypeError
from msgcore.jobs.codec import decode_result
from msgcore.settings import first_problem
from msgcore.store import JobRecord, JobStatus

if TYPE_CHECKING:
    from msgcore.jobs.client import Client

__all__ = ["Job", "ReturnWhen", "WaitResult"]

T = TypeVar("T")


def _first_problem(exc: ValidationError) -> str:
    path, problem = first_problem(exc)
    return f"{'.'.join(path) + ': ' if path else ''}{problem}"


class ReturnWhen(enum.StrEnum):
    """When ``Client.wait`` returns: every job finished, or the first one."""

    ALL = "all"
    FIRST = "first"


ALL = ReturnWhen.ALL
FIRST = ReturnWhen.FIRST


class Job:
    """A submitted job. ``record`` is the last state this handle read."""

    __slots__ = ("_client", "record")

    def __init__(self, client: Client, record: JobRecord) -> None:
        self._client = client
        self.record = record

    @property
    def id(self) -> str:
        return self.record.job_id

    @property
    def channel(self) -> str:
        return self.record.channel

    @property
    def cached(self) -> bool:
        return self.record.cached

    @property
    def done(self) -> bool:
        """Finished as of the last read (``refresh()``/``status()`` read again)."""
        return self.record.done

    async def refresh(self) -> JobRecord:
        record = await self._client.store.get_job(self.id)
        if record is None:
            raise JobNotFoundError(
                f"Job {self.id!r} has no record: it expired after its retention "
                "(MSGCORE_JOBS__RESULT_TTL) or was never submitted.",
                job_id=self.id,
            )
        self.record = record
        return record

    async def status(self) -> JobStatus:
        return (await self.refresh()).status

    async def result(self, timeout: float | None = None, *, as_type: type[T] | None = None) -> Any:
        """The handler's return value, waiting up to ``timeout`` seconds (None: forever).

        Raises ``JobFailed`` (dead-lettered, with the worker's error), ``JobCancelledError``
        or ``JobTimeoutError``; ``as_type`` validates the JSON result into a type
        (``ResultTypeError`` when it does not fit).
        """
        if self.record.status is JobStatus.DEAD:
            # a dead job may have been replayed since this handle read it: it runs again
            await self.refresh()
        if not self.record.done:
            await self._client.wait([self], timeout=timeout, raise_on_timeout=True)
        return self.outcome(as_type)

    def outcome(self, as_type: type[T] | None = None) -> Any:
        """The result of a finished job as of the last read, or its error raised."""
        record = self.record
        if record.status is JobStatus.COMPLETED:
            if as_type is None:
                return decode_result(record.result)
            try:
                return decode_result(record.result, as_type)
            except ValidationError as exc:
                raise ResultTypeError(
                    f"Job {record.job_id!r} completed, but its result does not fit "
                    f"{getattr(as_type, '__name__', as_type)}: {_first_problem(exc)}. The "
                    "record is unchanged: read the result without as_type, or fix the type.",
                    job_id=record.job_id,
                ) from exc
        if record.status is JobStatus.DEAD:
            raise JobFailed(
                record.job_id,
                error_type=record.error_type,
                error_message=record.error_message,
                attempts=record.attempts,
            )
        if record.status is JobStatus.CANCELLED:
            raise JobCancelledError(
                f"Job {record.job_id!r} was cancelled before it started; it has no result.",
                job_id=record.job_id,
            )
        raise RuntimeError(f"job {record.job_id!r} is {record.status.value}, not finished")

    def __repr__(self) -> str:
        flag = ", cached" if self.record.cached else ""
        return f"Job({self.id!r}, {self.record.status.value}{flag})"


@dataclass(frozen=True)
class WaitResult:
    """What ``Client.wait`` found: the finished jobs and those still pending."""

    done: list[Job]
    pending: list[Job]

    @property
    def completed(self) -> list[Job]:
        return [j for j in self.done if j.record.status is JobStatus.COMPLETED]

    @property
    def failed(self) -> list[Job]:
        return [j for j in self.done if j.record.status is JobStatus.DEAD]

    def counts(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for job in (*self.done, *self.pending):
            found[job.record.status.value] = found.get(job.record.status.value, 0) + 1
        return found
