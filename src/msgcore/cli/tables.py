"""Tables that read at 80 columns, the width of a default terminal and of piped output.

rich shrinks every column of a table that is too wide, so a listing with a 32-character
job id and seven more columns came out at 80 columns as ``de…``, ``co…``, ``202…``:
nothing could be read but the id. Here a table has light rules and no outer padding,
keys and figures never wrap, names fold onto more lines instead of being cut, a column
with nothing in it (every cell blank or ``-``) is left out, and free text gets the room
the rest leaves: on one line, cut with …, or left out with a caption saying so. On a
screen too narrow for even the keys side by side, each row is a block of
``header: value`` lines instead.
"""

from __future__ import annotations

import io
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

__all__ = ["Col", "compact_time", "fitted_table"]

_BLANK = {"", "-"}
_MIN_TEXT = 10
"""Narrowest a free-text column is shown: with less room it is left out."""
_NAME_CAPS = (None, 24, 12)
"""How narrow names fold, tried in turn to make room for free text."""


@dataclass(frozen=True)
class Col:
    """One column: ``kind`` says how it gives way when the table is too wide."""

    header: str
    kind: Literal["key", "name", "figure", "text"] = "name"
    """key: never wraps nor shrinks (ids are copied into other commands); name: folds
    onto more lines; figure: right-aligned, never wraps; text: free text, on one line,
    as wide as the other columns leave room for, cut with …"""


@dataclass(frozen=True)
class _Layout:
    gap: int
    name_cap: int | None
    text_widths: dict[int, int]
    """Column index → width, for the free-text columns shown (the others are left out)."""


def fitted_table(
    title: str | None,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    *,
    width: int,
    keep: Collection[str] = (),
    caption: str | None = None,
) -> Table:
    """A table of ``rows`` under ``columns`` for a screen ``width`` wide, without the
    columns that say nothing (except those named in ``keep``).

    Columns are two spaces apart, or one where two would not fit. Free text fills what
    the other columns leave; to make room, long names fold narrower; where there is
    still too little, the text is left out and the caption says where to read it."""
    shown = [
        i
        for i, col in enumerate(columns)
        if col.header in keep or any(row[i] not in _BLANK for row in rows)
    ]
    texts = [i for i in shown if columns[i].kind == "text"]

    def build(layout: _Layout, note: str | None = None) -> Table:
        full = f"{caption}\n{note}" if caption and note else caption or note
        return _table(title, full, columns=columns, rows=rows, shown=shown, layout=layout)

    for name_cap in _NAME_CAPS:
        for gap in (2, 1):
            rest = build(_Layout(gap, name_cap, {}))
            room = width - _widest(rest) - gap * len(texts)
            if not texts:
                if room >= 0:
                    return rest
                continue
            widths = _share(room, [(i, _longest(rows, i, columns[i].header)) for i in texts])
            if widths is not None and any(widths[i] < len(columns[i].header) for i in texts):
                widths = None  # not even the header fits
            if widths is not None:
                return build(_Layout(gap, name_cap, widths))
    narrowest = build(_Layout(1, _NAME_CAPS[-1], {}))
    if _widest(narrowest) > width:
        # rich would cut the keys and drop whole columns without a word
        return _blocks(title, caption, columns=columns, rows=rows, shown=shown)
    if not texts:
        return narrowest
    missing = " and ".join(columns[i].header for i in texts)
    return build(
        _Layout(1, _NAME_CAPS[-1], {}),
        f"{missing}: not shown at this width (--json, or a wider terminal)",
    )


def _blocks(
    title: str | None,
    caption: str | None,
    *,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    shown: Sequence[int],
) -> Table:
    """The rows as blocks of ``header: value`` lines, one field a line and a blank line
    between rows: what is left when not even the keys fit side by side. Every value is
    whole; one longer than the screen folds onto the next line."""
    table = Table(
        title=title, caption=caption, box=None, show_header=False, pad_edge=False, padding=0
    )
    table.add_column(overflow="fold")
    for n, row in enumerate(rows):
        if n:
            table.add_row("")
        for i in shown:
            table.add_row(f"{columns[i].header}: {row[i]}")
    return table


def _share(room: int, wanted: list[tuple[int, int]]) -> dict[int, int] | None:
    """Widths for text columns wanting ``wanted`` (index, longest) out of ``room``:
    the shortest first get all they want; None if one would get under ``_MIN_TEXT``."""
    widths: dict[int, int] = {}
    left = room
    for n, (i, longest) in enumerate(sorted(wanted, key=lambda w: w[1])):
        fair = left // (len(wanted) - n)
        widths[i] = min(longest, fair)
        if widths[i] < min(longest, _MIN_TEXT):
            return None
        left -= widths[i]
    return widths


def _longest(rows: Sequence[Sequence[str]], i: int, header: str) -> int:
    # cells are markup: the backslash that escapes a "[", or a "[red]", takes no room
    return max((Text.from_markup(row[i]).cell_len for row in rows), default=0) or len(header)


def _table(
    title: str | None,
    caption: str | None,
    *,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str]],
    shown: Sequence[int],
    layout: _Layout,
) -> Table:
    # SIMPLE_HEAD draws a one-character divider between columns: padding adds the rest
    table = Table(
        title=title,
        caption=caption,
        box=box.SIMPLE_HEAD,
        pad_edge=False,
        padding=(0, layout.gap - 1, 0, 0),
    )
    kept = [i for i in shown if columns[i].kind != "text" or i in layout.text_widths]
    for i in kept:
        col = columns[i]
        longest = max(_longest(rows, i, col.header), len(col.header))
        if col.kind == "key":
            table.add_column(col.header, no_wrap=True, min_width=longest)
        elif col.kind == "figure":
            table.add_column(col.header, justify="right", no_wrap=True)
        elif col.kind == "text":
            width = max(layout.text_widths[i], len(col.header))
            table.add_column(col.header, no_wrap=True, overflow="ellipsis", width=width)
        else:
            cap = longest if layout.name_cap is None else min(longest, layout.name_cap)
            table.add_column(col.header, overflow="fold", min_width=cap, max_width=cap)
    for row in rows:
        table.add_row(*(row[i] for i in kept))
    return table


def _widest(table: Table) -> int:
    """The width ``table`` takes when nothing has to give way."""
    wide = Console(width=10_000, file=io.StringIO())
    return Measurement.get(wide, wide.options, table).maximum


def compact_time(epoch: float | None, *, now: float | None = None) -> str:
    """Local time, as short as it can be read: ``14:03:09`` today, ``12-01 14:03`` this
    year, else the date."""
    if not epoch:
        return "-"
    when = datetime.fromtimestamp(epoch).astimezone()
    today = datetime.fromtimestamp(now).astimezone() if now else datetime.now().astimezone()
    if when.date() == today.date():
        return when.strftime("%H:%M:%S")
    if when.year == today.year:
        return when.strftime("%m-%d %H:%M")
    return when.strftime("%Y-%m-%d")
