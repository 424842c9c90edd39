"""The queue depth sampler's behaviour around its transport (the counts themselves are
checked on every real transport in tests/contract/test_telemetry.py)."""

from __future__ import annotations

import asyncio
import logging
import time
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader

from msgcore import Router, Settings, create_broker, telemetry
from msgcore.ops.models import GroupStats
from msgcore.telemetry.depth import DepthGauge, QueueDepthSampler
from tests.metrics import queue_depth_points


class FlakyOps:
    """An ops backend whose server answers while ``up``."""

    def __init__(self) -> None:
        self.up = True
        self.opened = 0
        self.closed = 0
        self.waiting = 3

    async def open(self) -> None:
        if not self.up:
            raise ConnectionRefusedError("nobody at redis://:hunter2@example:6379")
        self.opened += 1

    async def close(self) -> None:
        self.closed += 1

    async def depth(self, channel: str) -> list[GroupStats]:
        if not self.up:
            raise ConnectionResetError("dropped by redis://:hunter2@example:6379")
        assert channel is not None
        return [
            GroupStats(channel, "default", self.waiting, None, 0, 1, 2, None, None),
            GroupStats(channel, "audit", 0, 4, 0, 0, 0, None, None),
        ]


async def test_an_unreachable_transport_reports_nothing_then_recovers(
    caplog: pytest.LogCaptureFixture,
) -> None:
    ops = FlakyOps()
    reader = InMemoryMetricReader()
    gauge = DepthGauge(MeterProvider(metric_readers=[reader]))
    sampler = QueueDepthSampler(
        Settings(url="sqlite:///unused.db"), ["b", "a", "a"], 60, backend=lambda _: ops
    )
    gauge.add(sampler)

    await sampler.sample()
    first = queue_depth_points(reader)
    # a state the transport cannot tell (None) is no point at all, not a 0
    assert first[("a", "default", "waiting")] == 3
    assert ("a", "default", "running") not in first
    assert first[("b", "audit", "running")] == 4
    assert first[("b", "default", "dead")] == 2
    assert len(first) == 2 * (4 + 5)
    assert ops.opened == 1  # one connection kept across readings

    ops.up = False
    with caplog.at_level(logging.WARNING, logger="msgcore.telemetry"):
        await sampler.sample()
        await sampler.sample()
    # stale counts would look current: nothing until the next good reading
    assert queue_depth_points(reader) == {}
    warned = [r for r in caplog.records if "queue depth not read" in r.getMessage()]
    assert len(warned) == 1  # once per outage
    assert "dropped by redis://" in warned[0].getMessage()
    assert "hunter2" not in caplog.text
    assert ops.closed == 1

    ops.up, ops.waiting = True, 7
    await sampler.sample()
    assert queue_depth_points(reader)[("a", "default", "waiting")] == 7
    assert ops.opened == 2

    await sampler.stop()
    gauge.remove(sampler)
    assert queue_depth_points(reader) == {}
    assert ops.closed == 2


@pytest.mark.parametrize(
    ("interval", "metrics_enabled", "routers"),
    [(0, True, True), (5, False, True), (5, True, False)],
    ids=["interval-0", "no-metrics", "no-subscribers"],
)
def test_no_sampler_when_there_is_nothing_to_report(
    tmp_path: Path, interval: float, metrics_enabled: bool, routers: bool
) -> None:
    router = Router()

    @router.subscriber("work")
    async def work(n: int) -> None:
        return None

    telemetry.setup("depth", "memory", metrics_enabled=metrics_enabled, set_global=False)
    try:
        settings = Settings(
            url=f"sqlite:///{tmp_path / 't.db'}",
            telemetry={"queue_depth_interval": interval},
        )
        broker: Any = create_broker(*([router] if routers else []), settings=settings)
        assert getattr(broker, "msgcore_queue_depth", None) is None
        # the default interval, with subscribers: sampled whenever there are metrics
        default = create_broker(router, settings=Settings(url=settings.url))
    finally:
        telemetry.reset()
    assert (getattr(default, "msgcore_queue_depth", None) is not None) == metrics_enabled


class SwallowingOps(FlakyOps):
    """A client library that loses a cancellation landing inside a command (redis-py on
    Python 3.11 does, about once in 200 cancels; see msgcore.tasks) and returns as if
    nothing happened: here the first."""

    def __init__(self) -> None:
        super().__init__()
        self.inside = asyncio.Event()
        self.swallowed = 0

    async def depth(self, channel: str) -> list[GroupStats]:
        self.inside.set()
        try:
            await asyncio.sleep(0.2)
        except asyncio.CancelledError:
            if self.swallowed:
                raise
            self.swallowed += 1
        return await super().depth(channel)


async def test_stopping_does_not_rely_on_the_cancellation_arriving() -> None:
    ops = SwallowingOps()
    sampler = QueueDepthSampler(
        Settings(url="sqlite:///unused.db"), ["a"], 0.01, backend=lambda _: ops
    )
    await sampler.start()
    await ops.inside.wait()
    task = sampler._task
    assert task is not None
    started = time.monotonic()
    await sampler.stop()
    assert ops.swallowed == 1  # the cancellation was eaten...
    assert task.cancelled()  # ...and the reader still ended, at once
    assert time.monotonic() - started < 1
    assert ops.closed == 1
