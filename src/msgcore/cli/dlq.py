"""``msgcore dlq list|show|replay|purge``: dead letters on every transport."""

from __future__ import annotations

import json as jsonlib
import math
import time
from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from msgcore.cli.common import (
    EXIT_ERROR,
    check_limit,
    console,
    fail,
    print_json,
    quiet_libraries,
    run,
    settings,
)
from msgcore.cli.options import Channel, Group, Json, StoreUrl, Url
from msgcore.cli.tables import Col, fitted_table
from msgcore.ops import (
    DeadLetter,
    get_dead_letter,
    list_dead_letters,
    purge_dead_letters,
    replay_dead_letters,
)

__all__ = ["app"]

app = typer.Typer(help="Dead letters: list, show, replay, purge.", no_args_is_help=True)

Ids = Annotated[list[str] | None, typer.Argument(help="Dead-letter ids (from `dlq list`).")]
All = Annotated[bool, typer.Option("--all", help="Every dead letter matching the filters.")]


def _body(raw: bytes) -> Any:
    try:
        return jsonlib.loads(raw)
    except ValueError:
        return raw.decode("utf-8", errors="replace")


def _as_json(d: DeadLetter) -> dict[str, Any]:
    return {
        "id": d.id,
        "channel": d.channel,
        "group": d.group,
        "attempts": d.attempts,
        "reason": d.reason,
        "error": d.error,
        "failed_at": datetime.fromtimestamp(d.failed_at, UTC).isoformat(),
        "correlation_id": d.correlation_id,
        "message_id": d.message_id,
        "headers": d.headers,
        "body": _body(d.body),
    }


def _ago(ts: float) -> str:
    seconds = max(time.time() - ts, 0.0)
    if seconds < 120:
        return f"{seconds:.0f}s ago"
    if seconds < 7200:
        return f"{seconds / 60:.0f}m ago"
    return f"{seconds / 3600:.1f}h ago"


@app.command("list")
def list_(
    *,
    channel: Channel = None,
    group: Group = None,
    limit: Annotated[int, typer.Option(help="At most this many, oldest first.")] = 100,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Dead letters, oldest first."""
    quiet_libraries()
    check_limit(limit)
    config = settings(url, store_url)
    found = run(list_dead_letters(config, channel=channel, group=group, limit=limit))
    if json:
        print_json([_as_json(d) for d in found])
        return
    if not found:
        console.print("No dead letters.")
        return
    rows = [
        (
            escape(d.id),
            escape(d.channel),
            escape(d.group),
            str(d.attempts),
            _ago(d.failed_at),
            escape(d.reason),
            escape(d.error or ""),
        )
        for d in found
    ]
    table = fitted_table(
        f"dead letters · {escape(config.safe_url)}",
        _COLUMNS,
        rows,
        width=console.width,
        keep=("id", "channel", "group", "tries", "failed", "reason"),
    )
    console.print(table)


# ids are copied into `dlq show/replay/purge`: never cut; reason and error share the rest
_COLUMNS = (
    Col("id", "key"),
    Col("channel"),
    Col("group"),
    Col("tries", "figure"),
    Col("failed", "figure"),
    Col("reason", "text"),
    Col("error", "text"),
)


@app.command("show")
def show(
    dead_letter_id: Annotated[str, typer.Argument(metavar="ID", help="From `dlq list`.")],
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """One dead letter: its payload, headers and error."""
    quiet_libraries()
    config = settings(url, store_url)
    found = run(get_dead_letter(config, dead_letter_id))
    if found is None:
        fail(f"No dead letter {dead_letter_id!r} (replayed or purged already?).", EXIT_ERROR)
    data = _as_json(found)
    if json:
        print_json(data)
        return
    for key in ("id", "channel", "group", "attempts", "reason", "error", "failed_at"):
        console.print(f"[bold]{key}[/]: {escape(str(data[key]))}", highlight=False)
    console.print("[bold]headers[/]:")
    console.print_json(jsonlib.dumps(data["headers"], default=str))
    console.print("[bold]body[/]:")
    console.print_json(jsonlib.dumps(data["body"], default=str))


def _selection(ids: list[str] | None, channel: str | None, group: str | None, every: bool) -> None:
    if not ids and channel is None and group is None and not every:
        fail("Name the dead letters: ids, --channel/--group, or --all for every one.")


@app.command("replay")
def replay(
    ids: Ids = None,
    *,
    channel: Channel = None,
    group: Group = None,
    every: All = False,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Send dead letters back to the group they died in (attempts start over)."""
    quiet_libraries()
    _selection(ids, channel, group, every)
    config = settings(url, store_url)
    count = run(replay_dead_letters(config, ids or None, channel=channel, group=group))
    if json:
        print_json({"replayed": count})
    else:
        console.print(f"Replayed {count:,} dead letter(s).")
    _all_named(ids, count)


@app.command("purge")
def purge(
    ids: Ids = None,
    *,
    channel: Channel = None,
    group: Group = None,
    older_than: Annotated[
        float | None, typer.Option(help="Only those that failed more than this many seconds ago.")
    ] = None,
    every: All = False,
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """Delete dead letters for good."""
    quiet_libraries()
    if older_than is not None and not (math.isfinite(older_than) and older_than >= 0):
        fail(f"--older-than must be a number of seconds, 0 or more, got {older_than:g}")
    _selection(ids, channel, group, every or older_than is not None)
    config = settings(url, store_url)
    count = run(
        purge_dead_letters(config, ids or None, channel=channel, group=group, older_than=older_than)
    )
    if json:
        print_json({"purged": count})
    else:
        console.print(f"Purged {count:,} dead letter(s).")
    _all_named(ids, count)


def _all_named(ids: list[str] | None, count: int) -> None:
    """Exit 1 with a line on stderr when some of the ids named no dead letter."""
    if ids and count < len(set(ids)):
        missed = len(set(ids)) - count
        fail(
            f"{missed} of the {len(set(ids))} id(s) named no dead letter (replayed or purged "
            "already, or mistyped?): `msgcore dlq list` shows the ids there are."
        )
