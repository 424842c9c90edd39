"""``freeze_startup_heap``: keep what a service built at start-up out of full collections.

A service process holds tens of thousands of objects from its imports and start-up
(FastStream, pydantic, OpenTelemetry, the application's own modules) that live as long as
the process. CPython's full (generation 2) collection walks all of them every time it
runs, and a worker that keeps jobs, spans or messages in flight promotes objects fast
enough to run one every few thousand messages. Measured on the benchmark VM with only
msgcore's own imports (~80k objects): ~30 ms per full collection, a pause of every
handler in the process; after ``gc.freeze()`` it walks only what was made since
(docs/declare-once.md "Garbage collection pauses").
"""

from __future__ import annotations

import gc
import logging

__all__ = ["freeze_startup_heap"]

logger = logging.getLogger("msgcore")

_FROZEN = [False]
"""Whether this process has frozen its heap (once: see ``freeze_startup_heap``)."""


def freeze_startup_heap() -> int:
    """Collect once, then move every object alive now out of future collections
    (``gc.freeze()``); returns how many objects that was.

    For a long-running process, once it has started: an app from ``create_app`` calls it
    after its start-up when it runs as a service (``app.run()``, as ``faststream run``
    does), unless ``Settings.gc_freeze`` is off. Runs once per process (0 on later calls):
    an object frozen here and dropped later is never collected if it sits in a reference
    cycle, so freezing again at each start of an app run many times in one process would
    keep every stopped broker.
    """
    if _FROZEN[0]:
        return 0
    _FROZEN[0] = True
    gc.collect()  # garbage alive now would otherwise be frozen with the rest
    before = gc.get_freeze_count()
    gc.freeze()
    frozen = gc.get_freeze_count() - before
    logger.info(
        "froze %d objects made by imports and start-up out of full garbage collections "
        "(MSGCORE_GC_FREEZE=false turns this off)",
        frozen,
    )
    return frozen
