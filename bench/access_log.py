"""Keep FastStream's per-message access log lines, but send them to /dev/null.

FastStream's default broker logger (``faststream.access.<broker>``) gets a
``StreamHandler`` on ``sys.stdout`` when the broker is set up. For the "logging on"
measurements every record is still filtered, formatted (with colours) and written,
only to /dev/null, so the terminal stays readable and the formatting cost remains.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
from collections.abc import Iterator
from typing import TextIO

ACCESS_PREFIX = "faststream.access"


@functools.cache
def devnull() -> TextIO:
    """One shared /dev/null stream (FastStream reuses a handler whose stream is sys.stdout)."""
    return open(os.devnull, "w", encoding="utf-8")  # lives for the process


def _access_loggers() -> Iterator[logging.Logger]:
    for name, obj in list(logging.root.manager.loggerDict.items()):
        if name.startswith(ACCESS_PREFIX) and isinstance(obj, logging.Logger):
            yield obj


def redirect_access_handlers() -> int:
    """Point every stream handler of FastStream's access loggers at /dev/null.

    Returns how many handlers write there. Duplicates (one per logger) are removed so a
    record is never formatted twice.
    """
    sink = devnull()
    count = 0
    for lg in _access_loggers():
        kept = False
        for handler in list(lg.handlers):
            if type(handler) is not logging.StreamHandler:
                continue
            if kept:
                lg.removeHandler(handler)
                continue
            if handler.stream is not sink:
                handler.setStream(sink)
            kept = True
            count += 1
    return count


@contextlib.contextmanager
def access_log_to_devnull() -> Iterator[None]:
    """Use around broker start: handlers created meanwhile take /dev/null as stdout."""
    redirect_access_handlers()
    with contextlib.redirect_stdout(devnull()):
        yield
    redirect_access_handlers()
