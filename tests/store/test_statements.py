"""The SQLite store's per-job statements, as SQLite plans them."""

from __future__ import annotations

import re
import sqlite3

import pytest

from msgcore.sqlite.client import queries as transport_queries
from msgcore.store import queries as q
from msgcore.store.sqlite_rows import Op, create_schema


@pytest.fixture
def conn() -> sqlite3.Connection:
    c = sqlite3.connect(":memory:", isolation_level=None)
    for statement in transport_queries.SCHEMA.split(";"):
        if statement.strip():
            c.execute(statement)
    Op(create_schema)(c)
    return c


def _opcodes(c: sqlite3.Connection, sql: str) -> list[str]:
    named = set(re.findall(r":(\w+)", sql))
    numbered = [int(n) for n in re.findall(r"\?(\d+)", sql)]
    params: dict[str, None] | tuple[None, ...] = (
        dict.fromkeys(named) if named else (None,) * (max(numbered) if numbered else sql.count("?"))
    )
    return [row[1] for row in c.execute(f"EXPLAIN {sql}", params)]


@pytest.mark.parametrize(
    "name", ["FINISH_UPDATE", "FINISH_ATTEMPT", "GET_JOB", "CANCEL_JOB", "INFLIGHT_JOB"]
)
def test_a_job_statement_builds_no_table_per_execution(conn: sqlite3.Connection, name: str) -> None:
    """``status NOT IN (...)`` made SQLite build an index of the list on every execution
    (~4 µs of a ~20 µs result write): "not terminal" is a chain of ``<>`` instead."""
    assert "OpenEphemeral" not in _opcodes(conn, getattr(q, name))


def test_the_result_update_binds_what_finish_order_names() -> None:
    numbered = {int(n) for n in re.findall(r"\?(\d+)", q.FINISH_UPDATE)}
    assert numbered == set(range(1, len(q.FINISH_ORDER) + 1))
    assert set(re.findall(r":(\w+)", q.FINISH_ATTEMPT)) == {*q.FINISH_ORDER, "channel"}
