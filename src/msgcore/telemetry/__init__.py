"""``msgcore.telemetry``: one OpenTelemetry trace per job, on every transport.

``setup()`` configures the providers; from then on every broker built by
``create_broker``/``create_app`` and every ``Client`` carry msgcore's tracing middleware
(it speaks FastStream's ``traceparent`` header) with span names that are the same on
SQLite, Redis and RabbitMQ (``"{channel} publish"``, ``"{channel} process"``), and msgcore
adds its own spans (``"{channel} submit"``, ``"{channel} complete"``) and attributes
(``msgcore.channel``, ``msgcore.job_id``, ``msgcore.attempt``, ``msgcore.cache``,
``msgcore.lock.key``/``msgcore.lock.wait``, a ``msgcore.dead_letter`` event). See
docs/observability.md.
"""

from msgcore.telemetry.naming import (
    ATTR_ATTEMPT,
    ATTR_CACHE,
    ATTR_CHANNEL,
    ATTR_JOB_ID,
    ATTR_LOCK_KEY,
    ATTR_LOCK_WAIT,
    EVENT_DEAD_LETTER,
    LOCK_WAIT_DURATION,
)
from msgcore.telemetry.setup import JsonLinesSpanExporter, Telemetry, active, reset, setup

__all__ = [
    "ATTR_ATTEMPT",
    "ATTR_CACHE",
    "ATTR_CHANNEL",
    "ATTR_JOB_ID",
    "ATTR_LOCK_KEY",
    "ATTR_LOCK_WAIT",
    "EVENT_DEAD_LETTER",
    "LOCK_WAIT_DURATION",
    "JsonLinesSpanExporter",
    "Telemetry",
    "active",
    "reset",
    "setup",
]
