"""msgcore's log lines in a service process (``msgcore.logs.show_in_service``)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import pytest

from msgcore.logs import show_in_service


@pytest.fixture
def bare_logging() -> Iterator[None]:
    """The ``msgcore`` logger as the library leaves it; it and the root logger's
    handlers restored afterwards (tests empty the root's: pytest's own are on it, a
    ``faststream run`` process has none)."""
    root, library = logging.getLogger(), logging.getLogger("msgcore")
    saved = (root.handlers[:], library.handlers[:], library.level)
    library.handlers = [h for h in library.handlers if isinstance(h, logging.NullHandler)]
    library.setLevel(logging.NOTSET)
    try:
        yield
    finally:
        root.handlers, library.handlers = saved[0], saved[1]
        library.setLevel(saved[2])


@pytest.mark.usefixtures("bare_logging")
@pytest.mark.parametrize(
    ("log_messages", "level"), [(True, logging.INFO), (False, logging.WARNING)]
)
def test_a_service_prints_msgcore_lines_on_stdout(
    log_messages: bool, level: int, capsys: pytest.CaptureFixture[str]
) -> None:
    logging.getLogger().handlers = []
    show_in_service(log_messages=log_messages)
    show_in_service(log_messages=log_messages)  # a second app in the process: one handler
    library = logging.getLogger("msgcore")
    assert len([h for h in library.handlers if not isinstance(h, logging.NullHandler)]) == 1
    assert library.level == level
    logging.getLogger("msgcore.jobs").warning("job %s: the store is down", "j1")
    logging.getLogger("msgcore.jobs").info("job %s: per message", "j2")
    out = capsys.readouterr().out
    assert "WARNING  - msgcore.jobs - job j1: the store is down" in out
    assert ("job j2: per message" in out) is log_messages


@pytest.mark.usefixtures("bare_logging")
def test_an_application_that_configured_logging_keeps_its_own() -> None:
    logging.getLogger().handlers = [logging.StreamHandler()]
    show_in_service(log_messages=True)
    library = logging.getLogger("msgcore")
    assert all(isinstance(h, logging.NullHandler) for h in library.handlers)
    assert library.level == logging.NOTSET
