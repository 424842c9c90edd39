"""``msgcore locks``: the per-key locks held now, from a terminal."""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.markup import escape

from msgcore.cli.common import absent_store, console, print_json, run, settings
from msgcore.cli.options import Json, StoreUrl, Url
from msgcore.cli.tables import Col, fitted_table
from msgcore.settings import Settings
from msgcore.store import store_for
from msgcore.store.locks import LockHolder


async def _held(config: Settings, prefix: str) -> list[LockHolder]:
    async with store_for(config) as store:
        return await store.list_locks(now=time.time(), prefix=prefix)


def locks(
    prefix: Annotated[
        str, typer.Argument(help="Only keys starting with this (a channel: 'orders:').")
    ] = "",
    url: Url = None,
    store_url: StoreUrl = None,
    json: Json = False,
) -> None:
    """The locks held now: key, holder (job and worker) and when the lease runs out."""
    config = settings(url, store_url)
    absent = absent_store(config, "No locks")
    found = [] if absent else run(_held(config, prefix))
    now = time.time()
    if json:
        print_json(
            [
                {"key": h.key, "holder": h.holder, "expires_in": round(h.expires_at - now, 3)}
                for h in found
            ]
        )
        return
    if not found:
        if not absent:
            under = f" under {prefix!r}." if prefix else "."
            console.print(f"No locks are held{escape(under)}", highlight=False)
        return
    rows = [(escape(h.key), escape(h.holder), f"{max(h.expires_at - now, 0):.1f} s") for h in found]
    columns = (Col("key"), Col("holder"), Col("lease left", "figure"))
    table = fitted_table("locks held", columns, rows, width=console.width)
    console.print(table)


def register(app: typer.Typer) -> None:
    app.command("locks")(locks)
