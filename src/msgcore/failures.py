"""How every transport classifies and records a handler's failure."""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from faststream import BaseMiddleware
from pydantic import ValidationError

from msgcore.exceptions import LockKeyError

if TYPE_CHECKING:
    from faststream._internal.context.repository import ContextRepo

__all__ = [
    "INVALID_PAYLOAD",
    "ErrorRecorder",
    "ErrorRecording",
    "RecordError",
    "TakesErrorRecording",
    "describe_error",
    "invalid_reason",
]

INVALID_PAYLOAD = (ValidationError, json.JSONDecodeError, UnicodeDecodeError, LockKeyError)
"""Errors that no retry can fix: the message goes to the dead letters at once."""


def invalid_reason(exc: BaseException | None) -> str:
    """A dead letter's reason for an ``INVALID_PAYLOAD`` error."""
    if isinstance(exc, LockKeyError):
        return "no lock key: the payload has no key for its handler's lock"
    return "invalid payload: it cannot be decoded or validated"


def describe_error(exc: BaseException | None) -> str | None:
    """``module.Type: message``, the form dead letters and retry logs carry."""
    if exc is None:
        return None
    return f"{type(exc).__module__}.{type(exc).__qualname__}: {exc}"


ErrorRecorder = Callable[[Any, BaseException], None]
"""``record(raw message, exception)``: keeps a handler's exception where the
transport's settlement reads it (its retry decision, the dead letter's error text)."""


class RecordError(BaseMiddleware):
    """Hands the handler's exception to the transport's ``record`` (if given).

    FastStream's ack middleware calls ``nack()`` without the exception; this one sits
    just inside it and sees the exception first. No hooks on the way in or out. The
    base of msgcore's own middlewares too, which take the recording on.
    """

    __slots__ = ("record",)

    def __init__(
        self, msg: Any, /, *, context: ContextRepo, record: ErrorRecorder | None = None
    ) -> None:
        # BaseMiddleware.__init__'s two attributes set here: one call less per message
        self.msg, self.context, self.record = msg, context, record

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool:
        if exc_val is not None and self.record is not None:
            self.record(self.msg, exc_val)
        return False


@runtime_checkable
class TakesErrorRecording(Protocol):
    """A broker middleware factory that can record the handler's exception itself."""

    def recording(self, record: ErrorRecorder) -> Callable[..., BaseMiddleware]:
        """The same factory, whose middlewares also ``record`` the exception."""
        ...


class ErrorRecording:
    """A subscriber's middlewares: ``RecordError`` first, or folded into the first of
    the broker's when it takes it on (msgcore's tracing and job middlewares do). Each
    middleware is a layer FastStream enters, exits and chains for every message: one
    less is measurable on a short handler (docs/benchmarks.md "Tracing")."""

    __slots__ = ("_built", "_record")

    def __init__(self, record: ErrorRecorder) -> None:
        self._record = record
        self._built: tuple[tuple[Any, ...], tuple[Any, ...]] | None = None

    def around(self, middlewares: Sequence[Any]) -> tuple[Any, ...]:
        # Read for every message (FastStream hands a new list each time): built again
        # only when the broker's middlewares change.
        given = tuple(middlewares)
        built = self._built
        if built is not None and built[0] == given:
            return built[1]
        first = given[0] if given else None
        if isinstance(first, TakesErrorRecording) and not isinstance(first, type):
            stack: tuple[Any, ...] = (first.recording(self._record), *given[1:])
        else:
            record = self._record

            def make(msg: Any, /, *, context: ContextRepo) -> RecordError:
                return RecordError(msg, context=context, record=record)

            stack = (make, *given)
        self._built = (given, stack)
        return stack
