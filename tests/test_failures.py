"""``ErrorRecording``: the transport's error recording in front of a subscriber's
middlewares, or folded into the first of them when it takes it on (one middleware
layer per message less). End to end on every transport: ``tests/contract/test_delivery.py``
("dead letter keeps the error whichever middleware records it")."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from faststream import BaseMiddleware

from msgcore.failures import ErrorRecorder, ErrorRecording, RecordError


class _Folding:
    """A middleware factory that takes the recording on, like msgcore's tracing."""

    def __init__(self) -> None:
        self.asked: list[ErrorRecorder] = []

    def __call__(self, msg: Any, /, *, context: Any) -> BaseMiddleware:
        return BaseMiddleware(msg, context=context)

    def recording(self, record: ErrorRecorder) -> Callable[..., BaseMiddleware]:
        self.asked.append(record)
        return lambda msg, /, *, context: RecordError(msg, context=context, record=record)


def _other(msg: Any, /, *, context: Any) -> BaseMiddleware:
    return BaseMiddleware(msg, context=context)


class _ClassWithRecording(BaseMiddleware):
    """A middleware class (not a factory object) that happens to have ``recording``."""

    def recording(self, record: ErrorRecorder) -> None:
        raise AssertionError("a class is never asked")


async def _exit_with(factory: Callable[..., BaseMiddleware], exc: BaseException) -> None:
    middleware = factory("raw", context=None)
    async with middleware:
        pass
    assert await middleware.__aexit__(type(exc), exc, None) is False


async def test_in_front_of_middlewares_that_cannot_take_it() -> None:
    seen: list[tuple[Any, BaseException]] = []
    recording = ErrorRecording(lambda msg, exc: seen.append((msg, exc)))
    stack = recording.around([_other])
    assert len(stack) == 2 and stack[1] is _other
    error = ValueError("boom")
    await _exit_with(stack[0], error)
    assert seen == [("raw", error)]
    assert recording.around([]) != () and len(recording.around([])) == 1


async def test_folded_into_the_first_middleware_that_takes_it() -> None:
    seen: list[BaseException] = []
    recording = ErrorRecording(lambda msg, exc: seen.append(exc))
    folding = _Folding()
    stack = recording.around([folding, _other])
    assert len(stack) == 2 and stack[1] is _other
    assert len(folding.asked) == 1
    error = RuntimeError("boom")
    await _exit_with(stack[0], error)
    assert seen == [error]


def test_built_once_while_the_middlewares_stay_the_same() -> None:
    recording = ErrorRecording(lambda msg, exc: None)
    folding = _Folding()
    # FastStream hands a new list for every message
    first = recording.around([folding, _other])
    assert recording.around([folding, _other]) is first
    assert len(folding.asked) == 1
    changed = recording.around([_other])
    assert changed is not first and changed[1] is _other


def test_a_middleware_class_is_not_asked_to_fold() -> None:
    stack = ErrorRecording(lambda msg, exc: None).around([_ClassWithRecording])
    assert len(stack) == 2 and stack[1] is _ClassWithRecording
