"""The sqlite connector on real database files: incremental reads, upserts, safety, durability."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from connectors.base import Request
from connectors.errors import PermanentError, TransientError
from connectors.sqlite import SqliteConnector
from connectors.testing import ConnectorContract

REPO = Path(__file__).resolve().parents[1]


def seed(path: Path, rows: int = 3) -> None:
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY, sku TEXT)")
        db.executemany(
            "INSERT OR IGNORE INTO orders VALUES (?, ?)",
            [(n, f"SKU-{n}") for n in range(1, rows + 1)],
        )
    sqlite3.connect(path).close()


def rows(path: Path, sql: str) -> list[tuple]:
    db = sqlite3.connect(path)
    try:
        return db.execute(sql).fetchall()
    finally:
        db.close()


@pytest.fixture
def db_path(tmp_path):
    return tmp_path / "shop.db"


@pytest.fixture
def sqlite(db_path):
    with SqliteConnector({"path": str(db_path)}) as connector:
        yield connector


def write(connector: SqliteConnector, **options):
    return connector.call(Request(options=options))


class TestSqliteContract(ConnectorContract):
    connector_class = SqliteConnector

    def connection_options(self, tmp_path):
        return {"path": str(tmp_path / "contract.db")}

    def read_options(self, tmp_path):
        seed(tmp_path / "contract.db")
        return {"table": "orders", "cursor": "id"}

    def call_options(self, tmp_path):
        return {"table": "sales", "row": {"sku": "A-1", "total": Decimal("9.99")}}

    def failing_call_options(self, tmp_path):
        seed(tmp_path / "contract.db")
        return {"table": "orders", "row": {"id": 1, "sku": "duplicate"}}


def test_incremental_table_read_resumes_after_the_cursor_in_order(db_path, sqlite):
    seed(db_path, rows=5)
    first = list(sqlite.read({"table": "orders", "cursor": "id"}))
    later = list(sqlite.read({"table": "orders", "cursor": "id"}, cursor=3))
    assert [item.position for item in first] == [1, 2, 3, 4, 5]
    assert [item.data for item in later] == [{"id": 4, "sku": "SKU-4"}, {"id": 5, "sku": "SKU-5"}]


def test_a_query_gets_the_cursor_as_a_named_parameter_null_at_first(db_path, sqlite):
    seed(db_path, rows=4)
    query = "SELECT id, sku FROM orders WHERE :cursor IS NULL OR id > :cursor ORDER BY id"
    options = {"query": query, "cursor": "id"}
    assert len(list(sqlite.read(options, None))) == 4
    assert [item.position for item in sqlite.read(options, 2)] == [3, 4]


def test_a_read_streams_while_writers_keep_writing(db_path, sqlite):
    seed(db_path, rows=1200)  # more than one fetchmany batch
    stream = sqlite.read({"table": "orders", "cursor": "id"})
    assert next(stream).position == 1
    write(sqlite, table="audit", row={"event": "read started"})  # not blocked by the reader
    assert sum(1 for _ in stream) == 1199


def test_a_read_query_cannot_write(db_path, sqlite):
    seed(db_path)
    with pytest.raises(PermanentError):
        list(sqlite.read({"query": "DELETE FROM orders RETURNING id"}))
    assert rows(db_path, "SELECT count(*) FROM orders") == [(3,)]


def test_insert_creates_the_table_and_commits_before_returning(db_path, sqlite):
    response = write(sqlite, table="sales", row={"sku": "A-1", "qty": 2})
    assert response.body == {"rowid": 1, "changes": 1}
    assert rows(db_path, "SELECT sku, qty FROM sales") == [("A-1", 2)]  # another connection


def test_upsert_replaces_the_row_with_the_same_key(db_path, sqlite):
    write(
        sqlite,
        table="stock",
        mode="upsert",
        key=["store", "sku"],
        row={"store": "B1", "sku": "A", "qty": 5},
    )
    write(
        sqlite,
        table="stock",
        mode="upsert",
        key=["store", "sku"],
        row={"store": "B2", "sku": "A", "qty": 1},
    )
    response = write(
        sqlite,
        table="stock",
        mode="upsert",
        key=["store", "sku"],
        row={"store": "B1", "sku": "A", "qty": 3},
    )
    assert response.body == {"rowid": 1, "changes": 1}
    assert rows(db_path, "SELECT store, sku, qty FROM stock ORDER BY store") == [
        ("B1", "A", 3),
        ("B2", "A", 1),
    ]


def test_upsert_into_an_existing_table_adds_the_unique_index_it_needs(db_path, sqlite):
    with sqlite3.connect(db_path) as db:
        db.execute("CREATE TABLE prices (sku TEXT, price TEXT)")
    sqlite3.connect(db_path).close()
    for price in ("1.00", "2.00"):
        write(sqlite, table="prices", mode="upsert", key=["sku"], row={"sku": "A", "price": price})
    assert rows(db_path, "SELECT sku, price FROM prices") == [("A", "2.00")]


def test_new_fields_become_new_columns(db_path, sqlite):
    write(sqlite, table="sales", row={"sku": "A"})
    write(sqlite, table="sales", row={"sku": "B", "channel": "web"})
    assert rows(db_path, "SELECT sku, channel FROM sales") == [("A", None), ("B", "web")]


def test_an_injection_attempt_in_a_value_is_stored_literally(db_path, sqlite):
    evil = "x'); DROP TABLE sales; --"
    write(sqlite, table="sales", row={"sku": "A"})
    write(sqlite, table="sales", row={"sku": evil})
    assert rows(db_path, "SELECT sku FROM sales") == [("A",), (evil,)]


@pytest.mark.parametrize(
    "options",
    [
        {"table": "sales; DROP TABLE x", "row": {"a": 1}},
        {"table": "sales", "row": {'a" TEXT); --': 1}},
        {"table": "sales", "mode": "upsert", "key": ["1sku"], "row": {"1sku": 1}},
    ],
)
def test_a_bad_identifier_is_refused_before_any_sql_runs(db_path, sqlite, options):
    with pytest.raises(PermanentError, match="not a valid table or column name"):
        write(sqlite, **options)
    assert not db_path.exists() or rows(db_path, "SELECT name FROM sqlite_master") == []


def test_objects_are_json_text_and_decimals_keep_their_digits(db_path, sqlite):
    row = {"id": 2**63 - 1, "total": Decimal("19.90"), "lines": [{"price": Decimal("0.10")}]}
    write(sqlite, table="orders", row=row)
    [(ident, total, lines)] = rows(db_path, "SELECT id, total, lines FROM orders")
    assert (ident, total) == (2**63 - 1, "19.90")
    assert lines == '[{"price":0.10}]'
    assert json.loads(lines, parse_float=Decimal) == [{"price": Decimal("0.10")}]


def test_a_constraint_violation_is_permanent(db_path, sqlite):
    seed(db_path)
    with pytest.raises(PermanentError, match="UNIQUE constraint failed"):
        write(sqlite, table="orders", row={"id": 1, "sku": "again"})


def test_upsert_without_a_key_is_refused(sqlite):
    with pytest.raises(PermanentError, match="key"):
        write(sqlite, table="stock", mode="upsert", row={"sku": "A"})


def test_a_row_of_a_known_shape_is_checked_and_its_table_made_again_when_needed(db_path):
    # the connector remembers the shapes of rows it wrote (table, columns, key); what it
    # remembers goes with a rolled-back group, and a key column missing is refused each time
    upsert = {"table": "stock", "mode": "upsert", "key": ["sku"]}
    with SqliteConnector({"path": str(db_path)}) as erp:
        erp.begin_group()
        write(erp, **upsert, row={"sku": "A", "qty": 1})  # makes the table
        erp.rollback_group()  # ... which went with the group
        erp.begin_group()
        write(erp, **upsert, row={"sku": "A", "qty": 2})  # the same shape: made again
        write(erp, **upsert, row={"sku": "A", "qty": 3})  # and an upsert on its key
        erp.commit_group()
        with pytest.raises(PermanentError, match="no value for key column"):
            write(erp, table="stock", mode="upsert", key=["sku"], row={"qty": 4})
        with pytest.raises(PermanentError, match="no value for key column"):
            write(erp, table="stock", mode="upsert", key=["sku"], row={"qty": 4})
    assert rows(db_path, "SELECT sku, qty FROM stock") == [("A", 3)]


def test_a_locked_database_is_transient(db_path):
    seed(db_path)
    holder = sqlite3.connect(db_path, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with SqliteConnector({"path": str(db_path), "timeout": 0.05}) as connector:
            with pytest.raises(TransientError, match="locked"):
                write(connector, table="orders", row={"id": 9, "sku": "B"})
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_the_database_uses_wal(db_path, sqlite):
    write(sqlite, table="sales", row={"sku": "A"})
    assert rows(db_path, "PRAGMA journal_mode") == [("wal",)]


def test_a_row_written_survives_the_process_being_killed_right_after(db_path):
    script = (
        "import os, signal\n"
        "from connectors.base import Request\n"
        "from connectors.sqlite import SqliteConnector\n"
        f"c = SqliteConnector({{'path': {str(db_path)!r}}})\n"
        "c.call(Request({'table': 'sales', 'row': {'sku': 'A-1'}}))\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=REPO, timeout=30)
    assert done.returncode == -9
    assert rows(db_path, "SELECT sku FROM sales") == [("A-1",)]
