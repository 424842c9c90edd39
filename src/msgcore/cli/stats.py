"""``msgcore stats [--watch]``: per channel and group, what waits, runs, retries, died."""

from __future__ import annotations

import asyncio
import contextlib
import math
import signal
import sys
import time
from dataclasses import asdict
from typing import Annotated

import typer
from rich.live import Live
from rich.markup import escape
from rich.table import Table

from msgcore.cli.common import console, fail, print_json, quiet_libraries, run, settings
from msgcore.cli.options import Channel, Json, StoreUrl, Url
from msgcore.cli.tables import Col, fitted_table
from msgcore.ops import GroupStats, channel_stats
from msgcore.settings import Settings

__all__ = ["register"]

MIN_INTERVAL = 0.1
"""Shortest --interval: each refresh reads every channel and redraws the table."""


def _n(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


def _age(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 120:
        return f"{seconds:.1f}s"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.1f}h"


_COLUMNS = (
    Col("channel"),
    Col("group"),
    *(
        Col(name, "figure")
        for name in ("waiting", "running", "delayed", "retrying", "dead", "oldest", "consumers")
    ),
    Col("rate/s", "figure"),
)


def _table(
    found: list[GroupStats], rates: dict[tuple[str, str], float | None], where: str
) -> Table:
    rows = [
        (
            escape(s.channel),
            escape(s.group),
            _n(s.waiting),
            _n(s.running),
            _n(s.delayed),
            _n(s.retrying),
            f"[red]{s.dead:,}[/]" if s.dead else "0",
            _age(s.oldest_age),
            _n(s.consumers),
            "-" if (rate := rates.get((s.channel, s.group))) is None else f"{rate:,.1f}",
        )
        for s in found
    ]
    # what a transport cannot tell ("-" throughout) is left out; the rest is always shown
    keep = [c.header for c in _COLUMNS if c.header not in ("consumers", "rate/s")]
    table = fitted_table(
        f"msgcore stats · {escape(where)}", _COLUMNS, rows, width=console.width, keep=keep
    )
    if not found:
        table.caption = "no channels yet (RabbitMQ: workers register theirs when they start)"
    elif not any(row[-1] != "-" for row in rows):
        table.caption = "rate: deliveries per second, with --watch (Redis)"
    else:
        table.caption = "-: this transport cannot tell; rate: deliveries per second"
    return table


async def _watch(config: Settings, channel: str | None, interval: float) -> None:
    previous: dict[tuple[str, str], tuple[float, int]] = {}
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    if sys.platform != "win32":
        # Ctrl-C ends the watch between two readings, not inside a connection attempt
        loop.add_signal_handler(signal.SIGINT, stop.set)
        loop.add_signal_handler(signal.SIGTERM, stop.set)
    with Live(console=console, auto_refresh=False) as live:
        while not stop.is_set():
            found = await channel_stats(config, channel=channel)
            now = time.monotonic()
            rates: dict[tuple[str, str], float | None] = {}
            for s in found:
                key = (s.channel, s.group)
                if s.delivered is not None and key in previous:
                    then, count = previous[key]
                    rates[key] = max(s.delivered - count, 0) / max(now - then, 1e-6)
                if s.delivered is not None:
                    previous[key] = (now, s.delivered)
            live.update(_table(found, rates, config.safe_url), refresh=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), interval)


def stats(
    *,
    channel: Channel = None,
    watch: Annotated[bool, typer.Option("--watch", "-w", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Per channel and group: waiting, running, delayed, retrying, dead, oldest age, rate.

    The rate (deliveries per second) needs --watch and a transport that counts deliveries
    (Redis); "-" marks what a transport cannot tell."""
    quiet_libraries()
    if watch and json:
        fail("--watch redraws a table: it does not go with --json (run stats --json again)")
    if not (math.isfinite(interval) and interval >= MIN_INTERVAL):
        fail(f"--interval must be at least {MIN_INTERVAL:g} seconds, got {interval:g}")
    config = settings(url, store_url)
    if watch:
        with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends the watch
            run(_watch(config, channel, interval))
        return
    found = run(channel_stats(config, channel=channel))
    if json:
        print_json([asdict(s) for s in found])
    else:
        console.print(_table(found, {}, config.safe_url))


def register(app: typer.Typer) -> None:
    app.command("stats")(stats)
