"""Acceptance: a job's trace crosses processes on every transport.

A ``faststream run services.jobs:app`` worker traces by environment alone
(``MSGCORE_TELEMETRY__EXPORTER=console``: one JSON line per span on stdout); this
process submits a job through ``msgcore.Client`` with an in-memory exporter. The
worker's process and complete spans carry the trace id of the client's submit span, and
their names and msgcore attributes are the same on SQLite, Redis and RabbitMQ.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from services.jobs import Task

from msgcore import Client, RabbitSettings, RedisSettings, Settings, telemetry
from tests.contract.harness import delete_rabbit_names
from tests.processes import Proc, Stack, terminate

pytestmark = [pytest.mark.slow]

SYSTEM = {"sqlite": "sqlite", "redis": "redis", "rabbit": "rabbitmq"}


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def target(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[tuple[str, Settings]]:
    for name in ("MSGCORE_STORE_URL", "OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_TRACES_EXPORTER"):
        monkeypatch.delenv(name, raising=False)
    name = request.param
    store_url = None
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'traced.db'}"
    elif name == "redis":
        url = str(request.getfixturevalue("redis_url"))
    else:
        url = str(request.getfixturevalue("rabbit_url"))
        store_url = f"sqlite:///{tmp_path / 'store.db'}"
    settings = Settings(
        url=url,
        store_url=store_url,
        log_messages=False,
        redis=RedisSettings(stream_prefix=f"{unique}:"),
        rabbit=RabbitSettings(exchange=unique),
    )
    try:
        yield name, settings
    finally:
        channel = f"{unique}.jobs.square"
        if name == "redis":
            from redis.asyncio import Redis

            client = Redis.from_url(url)
            keys = [k async for k in client.scan_iter(match=f"{unique}:*", count=1000)]
            if keys:
                await client.delete(*keys)
            await client.aclose()
        elif name == "rabbit":
            await delete_rabbit_names(url, unique, {(channel, "workers")}, {channel})


@pytest.fixture
def stack(tmp_path: Path, target: tuple[str, Settings], unique: str) -> Iterator[Stack]:
    _, settings = target
    env = {
        "MSGCORE_URL": settings.url,
        "MSGCORE_LOG_MESSAGES": "false",
        "MSGCORE_REDIS__STREAM_PREFIX": f"{unique}:",
        "MSGCORE_RABBIT__EXCHANGE": unique,
        "MSGCORE_JOBS_PREFIX": f"{unique}.",
        "MSGCORE_TELEMETRY__EXPORTER": "console",
        "MSGCORE_TELEMETRY__SERVICE_NAME": "jobs-worker",
    }
    if settings.store_url:
        env["MSGCORE_STORE_URL"] = settings.store_url
    s = Stack(tmp_path, env)
    try:
        yield s
    finally:
        s.cleanup()


def worker_spans(proc: Proc) -> list[dict[str, Any]]:
    spans = []
    for line in proc.output().splitlines():
        if line.startswith('{"name"'):
            spans.append(json.loads(line))
    return spans


async def test_worker_spans_carry_the_clients_trace_id(
    target: tuple[str, Settings], stack: Stack, unique: str
) -> None:
    name, settings = target
    worker = stack.worker("worker", ["services.jobs:app"])
    await stack.wait_ready(worker)
    traces = telemetry.setup("client", "memory", set_global=False)
    channel = f"{unique}.jobs.square"
    try:
        async with Client(settings=settings) as client:
            job = await client.submit(channel, Task(n=9))
            result = await job.result(timeout=20)
        assert result["square"] == 81
        [submit] = [s for s in traces.spans() if s.name == f"{channel} submit"]
        assert submit.context is not None
        trace_id = f"0x{submit.context.trace_id:032x}"
    finally:
        telemetry.reset()

    deadline = time.monotonic() + 10
    while True:
        spans = [s for s in worker_spans(worker) if s["context"]["trace_id"] == trace_id]
        names = {s["name"] for s in spans}
        if {f"{channel} process", f"{channel} complete"} <= names:
            break
        if time.monotonic() > deadline:
            pytest.fail(f"worker spans of trace {trace_id} missing: {names}\n{worker.tail()}")
        await asyncio.sleep(0.1)
    process = next(s for s in spans if s["name"] == f"{channel} process")
    attributes = process["attributes"]
    assert attributes["messaging.system"] == SYSTEM[name]
    assert attributes["msgcore.job_id"] == job.id
    assert attributes["msgcore.channel"] == channel
    assert attributes["msgcore.attempt"] == 1
    assert process["resource"]["attributes"]["service.name"] == "jobs-worker"
    # the worker's process span hangs off the client's publish, in the client's trace
    assert process["parent_id"] is not None
    assert await terminate(worker) == 0
