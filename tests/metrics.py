"""Reading msgcore's metrics back from an in-memory reader, for assertions."""

from __future__ import annotations

from opentelemetry.sdk.metrics.export import InMemoryMetricReader


def queue_depth_points(reader: object, prefix: str = "") -> dict[tuple[str, str, str], int]:
    """``msgcore.queue.depth`` now, as (channel without ``prefix``, group, state) -> n."""
    assert isinstance(reader, InMemoryMetricReader)
    data = reader.get_metrics_data()
    points: dict[tuple[str, str, str], int] = {}
    for resource in data.resource_metrics if data else []:
        for scope in resource.scope_metrics:
            for metric in scope.metrics:
                if metric.name != "msgcore.queue.depth":
                    continue
                for point in metric.data.data_points:
                    a = dict(point.attributes or {})
                    channel = str(a["msgcore.channel"]).removeprefix(prefix)
                    points[(channel, str(a["msgcore.group"]), str(a["msgcore.state"]))] = int(
                        point.value  # type: ignore[union-attr]
                    )
    return points
