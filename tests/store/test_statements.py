"""The SQLite store's per-job statements, as SQLite plans them."""

from __future__ import annotations

import re
import sqlite3

import pytest

from msgcore.constants import JOBS_TABLE
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


def test_a_created_record_goes_into_the_table_and_its_id_index_only(
    conn: sqlite3.Connection,
) -> None:
    """Every index on the job table is another b-tree insert in each submit's commit: the
    time index listings used to walk cost a submit ~10 % (SQLite, one by one). The feed
    and expiry indexes hold finished records only."""
    indexes = {
        name: partial
        for name, partial in conn.execute(
            "SELECT name, sql LIKE '%WHERE%' FROM sqlite_master "
            f"WHERE type = 'index' AND tbl_name = '{JOBS_TABLE}'"
        )
    }
    assert {name for name, partial in indexes.items() if not partial} == {
        f"sqlite_autoindex_{JOBS_TABLE}_1"
    }


@pytest.mark.parametrize(
    "name",
    ["LIST_JOBS", "LIST_JOBS_BY_STATUS", "LIST_JOBS_BY_CHANNEL", "LIST_JOBS_BY_CHANNEL_STATUS"],
)
def test_a_listing_walks_the_table_newest_first_without_sorting(
    conn: sqlite3.Connection, name: str
) -> None:
    sql = getattr(q, name)
    plan = " ".join(
        row[3]
        for row in conn.execute(
            f"EXPLAIN QUERY PLAN {sql}", dict.fromkeys(re.findall(r":(\w+)", sql))
        )
    )
    assert "TEMP B-TREE" not in plan
    conn.executemany(
        f"INSERT INTO {JOBS_TABLE} (job_id, channel, status, created_at) VALUES (?, 'c', ?, ?)",
        [(f"j{i}", "pending" if i % 2 else "running", float(i)) for i in range(6)],
    )
    params = {"now": 0.0, "limit": 3, "status": "pending", "channel": "c"}
    got = [row[0] for row in conn.execute(sql, params)]
    assert got == (["j5", "j3", "j1"] if name.endswith("STATUS") else ["j5", "j4", "j3"])


def test_a_file_made_by_an_earlier_version_loses_the_time_index(
    conn: sqlite3.Connection,
) -> None:
    conn.execute(f"CREATE INDEX {JOBS_TABLE}_created ON {JOBS_TABLE} (created_at)")
    Op(create_schema)(conn)  # what opening the store runs
    names = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")}
    assert f"{JOBS_TABLE}_created" not in names
