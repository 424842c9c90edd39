"""``msgcore cache stats|clear``: the result cache from a terminal."""

from __future__ import annotations

from dataclasses import asdict

import typer
from rich.markup import escape

from msgcore.cli.common import absent_store, console, print_json, run, settings
from msgcore.cli.options import Channel, Json, StoreUrl, Url
from msgcore.cli.tables import Col, fitted_table
from msgcore.settings import Settings
from msgcore.store import store_for
from msgcore.store.cache import CacheStats

app = typer.Typer(help="Inspect and clear the result cache.", no_args_is_help=True)


async def _stats(config: Settings, channel: str | None) -> list[CacheStats]:
    async with store_for(config) as store:
        return await store.cache_stats(channel=channel)


async def _clear(config: Settings, channel: str | None) -> int:
    async with store_for(config) as store:
        return await store.cache_clear(channel=channel)


def _size(n: int) -> str:
    size = float(n)
    for unit in ("B", "KiB", "MiB"):
        if size < 1024:
            return f"{size:.0f} {unit}" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    return f"{size:.1f} GiB"


@app.command("stats")
def stats(
    channel: Channel = None,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Hits, misses, joins, entries and size per cached channel."""
    config = settings(url, store_url)
    absent = absent_store(config, "Nothing cached")
    found = [] if absent else run(_stats(config, channel))
    if json:
        print_json([{**asdict(s), "hit_ratio": round(s.hit_ratio, 4)} for s in found])
        return
    if not found:
        if not absent:
            console.print("No cached channels in this store.")
        return
    rows = [
        (
            escape(s.channel),
            escape(s.version or "-"),
            f"{s.hits:,}",
            f"{s.misses:,}",
            f"{s.joined:,}",
            f"{s.hit_ratio:.0%}",
            f"{s.entries:,}",
            _size(s.bytes),
        )
        for s in found
    ]
    table = fitted_table("result cache", _COLUMNS, rows, width=console.width, keep=_KEEP)
    console.print(table)


_COLUMNS = (
    Col("channel"),
    Col("version"),
    *(Col(name, "figure") for name in ("hits", "misses", "joined", "hit ratio", "entries", "size")),
)
_KEEP = ("channel", "version", "hits", "misses", "hit ratio", "entries", "size")


@app.command("clear")
def clear(
    channel: Channel = None,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Delete cached results (of one channel) and zero the counters."""
    config = settings(url, store_url)
    deleted = 0 if absent_store(config, "Nothing to clear") else run(_clear(config, channel))
    if json:
        print_json({"deleted": deleted, "channel": channel})
    else:
        where = f" of {escape(channel)}" if channel else ""
        console.print(f"Deleted {deleted:,} cached result(s){where}.", highlight=False)
