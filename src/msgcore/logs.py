"""msgcore's own log lines in a service process.

As a library, msgcore logs under ``msgcore.*`` with only a ``NullHandler``: the
application decides where logs go. A ``faststream run`` worker built by ``create_app``
configures FastStream's loggers and nothing else, so msgcore's warnings (a job store
that is down, a lock that was lost, a job dead-lettered) would be printed nowhere.
``show_in_service`` (run by such an app when it starts) gives the ``msgcore`` logger a
console handler in FastStream's place (stdout), unless the application configured
logging itself.
"""

from __future__ import annotations

import logging
import sys

__all__ = ["show_in_service"]

FORMAT = "%(asctime)s %(levelname)-8s - %(name)s - %(message)s"


def show_in_service(*, log_messages: bool) -> None:
    """Print msgcore's log lines on stdout: from INFO, or from WARNING when per-message
    lines are off (``Settings.log_messages``; msgcore logs some per message at INFO).
    Nothing changes if the root or the ``msgcore`` logger has a handler of its own."""
    library = logging.getLogger("msgcore")
    if logging.getLogger().handlers or any(
        not isinstance(h, logging.NullHandler) for h in library.handlers
    ):
        return
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT))
    library.addHandler(handler)
    if library.level == logging.NOTSET:
        library.setLevel(logging.INFO if log_messages else logging.WARNING)
