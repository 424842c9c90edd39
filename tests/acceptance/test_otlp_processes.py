"""Acceptance: the compose stack's tracing path, without Docker.

``compose/docker-compose.yml`` runs ``faststream run services.jobs:app`` workers and a
``python -m services.submit_demo`` client with ``OTEL_EXPORTER_OTLP_ENDPOINT`` pointing
at Jaeger's OTLP/HTTP port. These machines have no Docker engine, so this test runs the
same two commands with the same environment as processes, against a stand-in OTLP/HTTP
collector in the test process (it decodes what Jaeger would receive). It checks that
both services export over OTLP, that each job's client and worker spans share one trace
id, and that the worker's metrics (durations, counts, queue depth) arrive too.
"""

from __future__ import annotations

import gzip
import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.proto.collector.metrics.v1.metrics_service_pb2 import (
    ExportMetricsServiceRequest,
)
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from tests.processes import Stack, clean_servers, terminate, transport_env, wait_exit

pytestmark = [pytest.mark.slow]

JOBS = 5


@dataclass
class Received:
    """What the stand-in collector decoded: spans as (service, trace id, name)."""

    spans: list[tuple[str, str, str]] = field(default_factory=list)
    metrics: set[tuple[str, str]] = field(default_factory=set)
    lock: threading.Lock = field(default_factory=threading.Lock)


def _service(resource: Any) -> str:
    for attribute in resource.attributes:
        if attribute.key == "service.name":
            return str(attribute.value.string_value)
    return ""


def _handler(received: Received) -> type[BaseHTTPRequestHandler]:
    class Collector(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            if self.headers.get("Content-Encoding") == "gzip":
                body = gzip.decompress(body)
            if self.path == "/v1/traces":
                request = ExportTraceServiceRequest.FromString(body)
                with received.lock:
                    for resource_spans in request.resource_spans:
                        service = _service(resource_spans.resource)
                        for scope in resource_spans.scope_spans:
                            for span in scope.spans:
                                received.spans.append((service, span.trace_id.hex(), span.name))
            elif self.path == "/v1/metrics":
                metrics_request = ExportMetricsServiceRequest.FromString(body)
                with received.lock:
                    for resource_metrics in metrics_request.resource_metrics:
                        service = _service(resource_metrics.resource)
                        for scope_metrics in resource_metrics.scope_metrics:
                            for metric in scope_metrics.metrics:
                                received.metrics.add((service, metric.name))
            self.send_response(200)
            self.send_header("Content-Type", "application/x-protobuf")
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            return None

    return Collector


@pytest.fixture
def collector() -> Iterator[tuple[str, Received]]:
    received = Received()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(received))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", received
    finally:
        server.shutdown()
        server.server_close()


@dataclass
class Case:
    name: str
    url: str
    unique: str
    store_url: str | None

    @property
    def channel(self) -> str:
        return f"{self.unique}.jobs.square"


@pytest.fixture(params=["sqlite", "redis", "rabbit"])
async def case(
    request: pytest.FixtureRequest, tmp_path: Path, unique: str, monkeypatch: pytest.MonkeyPatch
) -> AsyncIterator[Case]:
    for name in ("MSGCORE_STORE_URL", "OTEL_TRACES_EXPORTER", "OTEL_SERVICE_NAME"):
        monkeypatch.delenv(name, raising=False)
    name = request.param
    store_url = None
    if name == "sqlite":
        url = f"sqlite:///{tmp_path / 'compose.db'}"
    elif name == "redis":
        url = str(request.getfixturevalue("redis_url"))
    else:
        url = str(request.getfixturevalue("rabbit_url"))
        store_url = f"sqlite:///{tmp_path / 'store.db'}"
    c = Case(name, url, unique, store_url)
    try:
        yield c
    finally:
        groups: set[tuple[str, str | None]] = {(c.channel, "workers")}
        await clean_servers(name, url, unique, groups, {c.channel})


async def test_compose_services_export_one_trace_per_job_over_otlp(
    tmp_path: Path, case: Case, collector: tuple[str, Received]
) -> None:
    endpoint, received = collector
    env = {
        **transport_env(case.url, case.unique),
        "MSGCORE_JOBS_PREFIX": f"{case.unique}.",
        # the compose file's tracing settings, with the collector in Jaeger's place
        "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
        # export within a test's patience instead of every 5 s / 60 s
        "OTEL_BSP_SCHEDULE_DELAY": "200",
        "OTEL_METRIC_EXPORT_INTERVAL": "500",
        "MSGCORE_TELEMETRY__QUEUE_DEPTH_INTERVAL": "0.2",
    }
    if case.store_url is not None:
        env["MSGCORE_STORE_URL"] = case.store_url
    stack = Stack(tmp_path, env)
    try:
        worker = stack.spawn(
            "worker",
            ["-m", "faststream", "run", "services.jobs:app"],
            OTEL_SERVICE_NAME="jobs-worker",
        )
        await stack.wait_ready(worker)
        client = stack.spawn(
            "client", ["-m", "services.submit_demo", str(JOBS)], OTEL_SERVICE_NAME="jobs-client"
        )
        assert await wait_exit(client, 60) == 0, client.tail()
        assert f"'completed': {JOBS}" in client.output(), client.tail()
        assert await terminate(worker) == 0  # its exporters flush at exit
    finally:
        stack.cleanup()

    with received.lock:
        spans = list(received.spans)
        metrics = set(received.metrics)
    submits = {t for service, t, n in spans if n == f"{case.channel} submit"}
    assert len(submits) == JOBS, spans
    for trace_id in submits:
        names = {(service, n) for service, t, n in spans if t == trace_id}
        assert {
            ("jobs-client", f"{case.channel} submit"),
            ("jobs-client", f"{case.channel} publish"),
            ("jobs-worker", f"{case.channel} process"),
            ("jobs-worker", f"{case.channel} complete"),
        } <= names, names
    assert {
        ("jobs-worker", "messaging.process.duration"),
        ("jobs-worker", "messaging.process.messages"),
        ("jobs-worker", "msgcore.queue.depth"),
    } <= metrics, metrics
