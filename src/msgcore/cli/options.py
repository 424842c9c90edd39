"""Options several ``msgcore`` commands share (typer annotations)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["Channel", "Group", "Json", "StoreUrl", "Url"]

Url = Annotated[str | None, typer.Option("--url", help="Transport URL (MSGCORE_URL).")]
StoreUrl = Annotated[str | None, typer.Option("--store-url", help="Store URL (MSGCORE_STORE_URL).")]
Channel = Annotated[str | None, typer.Option("--channel", "-c", help="Only this channel.")]
Group = Annotated[str | None, typer.Option("--group", "-g", help="Only this consumer group.")]
Json = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
