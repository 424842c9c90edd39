"""What the msgcore-level benchmarks (jobs, cache, telemetry) share: settings named for
one run, the cleanup of what the run left on the servers, and the event loop choice."""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from msgcore import JobSettings, RabbitSettings, RedisSettings, Settings

__all__ = ["RABBIT_URL", "REDIS_URL", "cleanup", "per_round", "run_loop", "settings_for"]

REDIS_URL = os.environ.get("MSGCORE_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
RABBIT_URL = os.environ.get("MSGCORE_TEST_RABBIT_URL", "amqp://guest:guest@127.0.0.1:5672/")


def settings_for(transport: str, tmp: Path, tag: str, *, track: bool = True) -> Settings:
    """Settings of one run, its names prefixed with ``tag``; per-message logs off. The store
    is beside the transport (RabbitMQ: a SQLite file in ``tmp``, its default place would
    be the working directory)."""
    values: dict[str, Any] = {
        "log_messages": False,
        "jobs": JobSettings(track=track),
        "redis": RedisSettings(stream_prefix=f"{tag}:"),
        "rabbit": RabbitSettings(exchange=tag),
    }
    if transport == "sqlite":
        values["url"] = f"sqlite:///{tmp / (tag + '.db')}"
    elif transport == "redis":
        values["url"] = REDIS_URL
    else:
        values["url"] = RABBIT_URL
        values["store_url"] = f"sqlite:///{tmp / (tag + '-store.db')}"
    return Settings(**values)


async def cleanup(
    settings: Settings, tag: str, channels: set[str], group: str | None = None
) -> None:
    """Delete the run's Redis keys and RabbitMQ queues (quorum queues never expire)."""
    from tests.contract.harness import delete_rabbit_names, delete_redis_keys

    if settings.transport == "redis" or (settings.store_url or "").startswith("redis"):
        await delete_redis_keys(REDIS_URL, f"{tag}:*")
    if settings.transport == "rabbit":
        groups = {(c, group) for c in channels}
        await delete_rabbit_names(settings.url, tag, groups, channels)


def run_loop(main: Callable[[argparse.Namespace], Coroutine[Any, Any, None]], args: Any) -> None:
    """``main(args)`` on uvloop (``--loop uvloop``, where the platform has it) or asyncio."""
    if args.loop == "uvloop" and sys.platform != "win32":
        import uvloop

        uvloop.run(main(args))
    else:
        asyncio.run(main(args))


def per_round(tops: list[float], bottoms: list[float]) -> str:
    """Each round's own ratio ``top / bottom`` as "median (min-max)": the machine's drift
    between rounds cancels out, which the ratio of the medians does not."""
    ratios = [t / b for t, b in zip(tops, bottoms, strict=True)]
    return f"{statistics.median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
