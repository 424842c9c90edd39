"""``msgcore.queue.depth``: how many messages each consumer group of a worker's channels
has, per state, read from the transport every few seconds.

The gauge's callback runs on the metric reader's schedule (an exporter thread, or a
test's ``get_metrics_data()``), where no event loop may be reached: each worker reads
the counts itself on its own loop (``QueueDepthSampler``, started and stopped with its
broker) and the callback hands out the last reading. One stats query per channel per
interval, on a connection of its own (``msgcore.ops``: ``OpsBackend.depth``, the part of
what ``msgcore stats`` reads that every worker can afford to read that often).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any

from opentelemetry.metrics import CallbackOptions, Observation

from msgcore.ops.backends import backend_for
from msgcore.tasks import cancel_and_wait
from msgcore.telemetry.naming import ATTR_CHANNEL
from msgcore.urls import redact_url

if TYPE_CHECKING:
    from msgcore.ops.backend import OpsBackend
    from msgcore.ops.models import GroupStats
    from msgcore.settings import Settings

__all__ = ["QUEUE_DEPTH", "DepthGauge", "QueueDepthSampler"]

logger = logging.getLogger("msgcore.telemetry")

QUEUE_DEPTH = "msgcore.queue.depth"
ATTR_GROUP = "msgcore.group"
ATTR_STATE = "msgcore.state"
STATES = ("waiting", "running", "delayed", "retrying", "dead")
"""``GroupStats`` fields reported; a state the transport does not tell here (on
RabbitMQ all but ``waiting`` and ``dead``) is left out rather than reported as 0."""


class QueueDepthSampler:
    """Reads ``channels``' group counts every ``interval`` seconds while started."""

    def __init__(
        self,
        settings: Settings,
        channels: Sequence[str],
        interval: float,
        *,
        backend: Callable[[Settings], OpsBackend] = backend_for,
    ) -> None:
        self.settings = settings
        self.channels = sorted(set(channels))
        self.interval = interval
        self._backend_for = backend
        self._backend: OpsBackend | None = None
        self._task: asyncio.Task[None] | None = None
        self._points: list[tuple[int, dict[str, Any]]] = []
        self._failing = False

    def observations(self) -> list[tuple[int, dict[str, Any]]]:
        """(count, attributes) of the last reading; none before the first or after a
        failed one (an old count would look current)."""
        return self._points

    async def start(self) -> None:
        if self._task is None and self.channels:
            self._task = asyncio.create_task(self._run(), name="msgcore-queue-depth")

    async def stop(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            # cancelled again until it ends: a cancellation inside a redis-py command can
            # be lost (msgcore.tasks), and a reader looping on held up the worker's
            # shutdown for good
            await cancel_and_wait([task])
        self._points = []
        await self._close()

    async def sample(self) -> None:
        """One reading of every channel (the loop's step; tests call it directly)."""
        try:
            if self._backend is None:
                backend = self._backend_for(self.settings)
                await backend.open()
                self._backend = backend
            found: list[GroupStats] = []
            for channel in self.channels:
                found.extend(await self._backend.depth(channel))
        except Exception as exc:
            self._points = []
            await self._close()  # reconnects at the next reading
            if not self._failing:  # once per outage, not every interval
                logger.warning(
                    "queue depth not read (msgcore.queue.depth reports nothing until it "
                    "is): %s: %s",
                    type(exc).__name__,
                    redact_url(str(exc)),
                )
            self._failing = True
            return
        if self._failing:
            logger.info("queue depth read again")
        self._failing = False
        self._points = [
            (count, {ATTR_CHANNEL: stats.channel, ATTR_GROUP: stats.group, ATTR_STATE: state})
            for stats in found
            for state in STATES
            if (count := getattr(stats, state)) is not None
        ]

    async def _run(self) -> None:
        while True:
            await self.sample()
            await asyncio.sleep(self.interval)

    async def _close(self) -> None:
        backend, self._backend = self._backend, None
        if backend is not None:
            with contextlib.suppress(Exception):
                await backend.close()


class DepthGauge:
    """The ``msgcore.queue.depth`` observable gauge of one meter provider, fed by every
    sampler of the process (registered once: the SDK keeps an instrument's first
    callbacks and warns on a second registration of its name)."""

    def __init__(self, meter_provider: Any) -> None:
        self._samplers: list[QueueDepthSampler] = []
        meter_provider.get_meter("msgcore").create_observable_gauge(
            QUEUE_DEPTH,
            callbacks=[self._observe],
            unit="{message}",
            description="Messages per channel, consumer group and state (waiting, running, "
            "delayed, retrying, dead), as the transport counts them",
        )

    def add(self, sampler: QueueDepthSampler) -> None:
        self._samplers.append(sampler)

    def remove(self, sampler: QueueDepthSampler) -> None:
        with contextlib.suppress(ValueError):
            self._samplers.remove(sampler)

    def _observe(self, options: CallbackOptions) -> Iterable[Observation]:
        # several brokers of one process on the same channel: one point per group/state
        seen: dict[tuple[Any, ...], Observation] = {}
        for sampler in list(self._samplers):
            for count, attrs in sampler.observations():
                seen[tuple(attrs.values())] = Observation(count, attrs)
        return list(seen.values())
