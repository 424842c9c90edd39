"""The CLI's tables read at 80 columns, the width of a default terminal and of output
piped to a file.

Before, rich shrank every column of a table too wide for the screen: ``msgcore jobs``
at 80 columns showed the id and then ``de…``, ``co…``, ``202…``. Now keys (ids,
statuses, times) are whole, names fold, empty columns are left out, and free text gets
what is left or is left out with a caption saying where to read it.
"""

from __future__ import annotations

import asyncio
import io
import time
from datetime import datetime
from pathlib import Path

import pytest
from rich.console import Console

from msgcore import Client, Settings
from msgcore.cli.tables import Col, compact_time, fitted_table
from tests.cli.test_jobs_cli import msgcore

IDS = [f"01a24719c8b2b71a1aa9e71a76eebb7{n}" for n in range(3)]
CHANNEL = "orders.validate-and-reserve-stock"
COLUMNS = (
    Col("id", "key"),
    Col("channel"),
    Col("status", "key"),
    Col("tries", "figure"),
    Col("took", "figure"),
    Col("cached"),
    Col("error", "text"),
)


def render(table: object, width: int) -> list[str]:
    console = Console(width=width, file=io.StringIO(), color_system=None)
    console.print(table)
    text = console.file.getvalue()  # type: ignore[attr-defined]
    return str(text).splitlines()


def rows(error: str) -> list[tuple[str, ...]]:
    return [(i, CHANNEL, "completed", "1", "12 ms", "", error) for i in IDS]


@pytest.mark.parametrize("width", [60, 80, 100, 200])
def test_ids_and_statuses_stay_whole_and_lines_fit(width: int) -> None:
    lines = render(fitted_table("jobs", COLUMNS, rows(""), width=width), width)
    assert all(len(line) <= width for line in lines), lines
    text = "\n".join(lines)
    for job_id in IDS:
        assert job_id in text
    assert text.count("completed") == len(IDS)
    assert "…" not in text
    # the channel folds onto more lines rather than being cut to a few letters
    assert text.count(CHANNEL[:12]) == len(IDS), text


def test_a_column_with_nothing_in_it_is_left_out_unless_kept() -> None:
    text = "\n".join(render(fitted_table("jobs", COLUMNS, rows(""), width=200), 200))
    assert "cached" not in text and "error" not in text
    kept = fitted_table("jobs", COLUMNS, rows(""), width=200, keep=("cached",))
    assert "cached" in "\n".join(render(kept, 200))


def test_free_text_gets_the_room_left_on_one_line() -> None:
    error = "ValueError: the stock service answered 503 for this order " * 2
    wide = render(fitted_table("jobs", COLUMNS, rows(error), width=200), 200)
    assert sum(error.strip()[:100] in line for line in wide) == len(IDS)
    lines = render(fitted_table("jobs", COLUMNS, rows(error), width=100), 100)
    assert all(len(line) <= 100 for line in lines)
    shown = [line for line in lines if "ValueError" in line]
    assert len(shown) == len(IDS) and all(line.rstrip().endswith("…") for line in shown)


def test_free_text_without_room_is_left_out_and_the_caption_says_so() -> None:
    lines = render(fitted_table("jobs", COLUMNS, rows("ValueError: no"), width=70), 70)
    text = "\n".join(lines)
    assert "ValueError" not in text
    assert "error: not shown at this width (--json, or a wider terminal)" in text
    assert all(job_id in text for job_id in IDS)


def test_compact_time_is_as_short_as_it_can_be_read() -> None:
    now = datetime(2026, 12, 5, 16, 0, 0).timestamp()
    assert compact_time(datetime(2026, 12, 5, 9, 3, 7).timestamp(), now=now) == "09:03:07"
    assert compact_time(datetime(2026, 3, 1, 9, 3, 7).timestamp(), now=now) == "03-01 09:03"
    assert compact_time(datetime(2025, 3, 1, 9, 3, 7).timestamp(), now=now) == "2025-03-01"
    assert compact_time(None) == "-"


def test_msgcore_jobs_at_80_columns(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def submit() -> list[str]:
        async with Client(settings=Settings(url=url)) as client:
            return [(await client.submit(CHANNEL, {"n": n})).id for n in range(3)]

    ids = asyncio.run(submit())
    started = time.time()
    done = msgcore("jobs", env={"MSGCORE_URL": url, "COLUMNS": "80"})
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert all(len(line) <= 80 for line in lines), done.stdout
    header = next(line for line in lines if line.lstrip().startswith("id"))
    assert header.split() == ["id", "channel", "status", "tries", "created"], header
    for job_id in ids:
        row = next(line for line in lines if job_id in line)
        assert "pending" in row.split(), row
        assert compact_time(started) in row or compact_time(started + 1) in row, row
    assert "…" not in done.stdout


@pytest.mark.parametrize("width", [40, 60])
def test_too_narrow_for_the_keys_each_row_is_a_block(width: int) -> None:
    """Below 80 columns rich cut the ids and dropped whole columns without a word."""
    table = fitted_table("jobs", COLUMNS, rows("ValueError: no"), width=width)
    lines = [line.rstrip() for line in render(table, width)]
    assert all(len(line) <= width for line in lines), lines
    for job_id in IDS:
        assert f"id: {job_id}" in lines
    for field in ("status: completed", "tries: 1", "took: 12 ms", "error: ValueError: no"):
        assert sum(line == field for line in lines) == len(IDS), lines
    text = "".join("\n".join(lines).split())
    assert text.count(f"channel:{CHANNEL}") == len(IDS)  # whole, if folded
    assert "cached" not in text and "…" not in text


def test_markup_in_cells_takes_no_room() -> None:
    """stats showed channel "x[red]y" as "xy"; escaped, its "\\" still took a column."""
    from msgcore.cli.stats import _table
    from msgcore.ops import GroupStats

    found = [GroupStats("x[red]y", "[/]", 1, 0, 0, 0, 2, 1.0, None)]
    text = "\n".join(render(_table(found, {}, "sqlite:///x.db"), 100))
    assert "x[red]y" in text and " [/] " in text and "\\" not in text


@pytest.mark.parametrize("command", [("jobs",), ("stats",)])
def test_msgcore_at_40_columns(tmp_path: Path, command: tuple[str, ...]) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"

    async def submit() -> str:
        async with Client(settings=Settings(url=url)) as client:
            return (await client.submit(CHANNEL, {"n": 1})).id

    job_id = asyncio.run(submit())
    done = msgcore(*command, env={"MSGCORE_URL": url, "COLUMNS": "40"})
    assert done.returncode == 0, done.stderr
    lines = [line.rstrip() for line in done.stdout.splitlines()]
    assert all(len(line) <= 40 for line in lines), done.stdout
    if command == ("jobs",):
        assert f"id: {job_id}" in lines and "status: pending" in lines
        assert any(line.startswith("created: ") for line in lines)
    else:
        assert "group: default" in lines and "waiting: 1" in lines
        assert any(line.startswith("oldest: ") for line in lines)
    assert CHANNEL in "".join(done.stdout.split())
