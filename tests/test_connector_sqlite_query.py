"""The sqlite connector's lookups: ``query`` call options, as used by ``enrich`` steps."""

from __future__ import annotations

import json
import sqlite3

import pytest

from connectors import sqlite as sqlite_module
from connectors.base import Request
from connectors.errors import PermanentError
from connectors.sqlite import SqliteConnector
from engine import Engine
from tests.conftest import write_flow, write_ndjson


@pytest.fixture
def purchasing(tmp_path):
    path = tmp_path / "purchasing.db"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE po_lines (po TEXT, line INTEGER, sku TEXT, price TEXT)")
        db.executemany(
            "INSERT INTO po_lines VALUES (?, ?, ?, ?)",
            [("PO-1", 1, "A", "7.40"), ("PO-1", 2, "B", "3.10"), ("PO-2", 1, "C", "1.00")],
        )
    db.close()
    with SqliteConnector({"path": str(path)}) as connector:
        yield connector


def lookup(connector, **options):
    return connector.call(Request(options=options)).body


def test_a_query_returns_its_rows_with_parameters_bound(purchasing):
    rows = lookup(
        purchasing,
        query="SELECT line, sku, price FROM po_lines WHERE po = :po ORDER BY line",
        params={"po": "PO-1"},
    )
    assert rows == [
        {"line": 1, "sku": "A", "price": "7.40"},
        {"line": 2, "sku": "B", "price": "3.10"},
    ]
    # a value is only ever a value
    assert (
        lookup(
            purchasing,
            query="SELECT * FROM po_lines WHERE po = :po",
            params={"po": "PO-1' OR '1'='1"},
        )
        == []
    )


def test_no_row_is_an_empty_list_or_the_not_found_reason(purchasing):
    query = "SELECT * FROM po_lines WHERE po = :po"
    assert lookup(purchasing, query=query, params={"po": "PO-9"}) == []
    with pytest.raises(PermanentError, match="^purchase order PO-9 is unknown$"):
        lookup(
            purchasing,
            query=query,
            params={"po": "PO-9"},
            not_found="purchase order PO-9 is unknown",
        )


def test_a_list_is_bound_as_json_text_for_json_each(purchasing):
    rows = lookup(
        purchasing,
        query="SELECT sku FROM po_lines WHERE sku IN (SELECT value FROM json_each(:skus))",
        params={"skus": ["A", "C"]},
    )
    assert sorted(r["sku"] for r in rows) == ["A", "C"]


def test_a_lookup_cannot_change_the_database(purchasing):
    with pytest.raises(PermanentError, match="lookup query failed"):
        lookup(purchasing, query="DELETE FROM po_lines")
    assert len(lookup(purchasing, query="SELECT * FROM po_lines")) == 3


def test_mistakes_are_permanent_with_the_reason(purchasing, tmp_path, monkeypatch):
    with pytest.raises(PermanentError, match="binding parameter"):
        lookup(purchasing, query="SELECT * FROM po_lines WHERE po = :po")
    with pytest.raises(PermanentError, match="no such table"):
        lookup(purchasing, query="SELECT * FROM purchase_orders")
    monkeypatch.setattr(sqlite_module, "_MAX_LOOKUP_ROWS", 2)
    with pytest.raises(PermanentError, match="more than 2 rows"):
        lookup(purchasing, query="SELECT * FROM po_lines")
    with SqliteConnector({"path": str(tmp_path / "missing.db")}) as nothing:
        with pytest.raises(PermanentError, match="no database file"):
            lookup(nothing, query="SELECT 1")
    assert not (tmp_path / "missing.db").exists()


def test_lookups_see_rows_written_after_the_first_lookup(purchasing):
    assert lookup(purchasing, query="SELECT count(*) AS n FROM po_lines") == [{"n": 3}]
    purchasing.call(Request(options={"table": "po_lines", "row": {"po": "PO-3", "sku": "D"}}))
    assert lookup(purchasing, query="SELECT count(*) AS n FROM po_lines") == [{"n": 4}]


def test_an_enrich_step_looks_up_and_a_missing_row_dead_letters_the_record(tmp_path, purchasing):
    flow = write_flow(
        tmp_path,
        """
        flow: lookups
        connections:
          purchasing: {connector: sqlite, path: purchasing.db}
          out: {connector: file}
        source: {connector: file, path: invoices.ndjson}
        steps:
          - name: po_lines
            enrich:
              connection: purchasing
              query: SELECT sku, price FROM po_lines WHERE po = :po ORDER BY line
              params: {po: "{{ record.po }}"}
              not_found: "purchase order {{ record.po }} is unknown to purchasing"
              save_as: po_lines
          - name: matched
            send:
              connection: out
              path: out.ndjson
              record:
                id: "{{ record.id }}"
                skus: "{{ record.po_lines | map(attribute='sku') | list }}"
        """,
    )
    write_ndjson(tmp_path / "invoices.ndjson", [{"id": 1, "po": "PO-1"}, {"id": 2, "po": "PO-7"}])
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(flow)
    assert result.counts["done"] == 1 and result.counts["dead_lettered"] == 1
    assert (tmp_path / "out.ndjson").read_text() == '{"id":1,"skus":["A","B"]}\n'
    store = eng.store()
    [letter] = store.dead_letters()
    store.close()
    assert letter.step == "po_lines"
    assert letter.message == "purchase order PO-7 is unknown to purchasing"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"query": "SELECT 1", "table": "t"}, "`table` is not allowed here when `query` is given"),
        (
            {"table": "t", "row": {"a": 1}, "not_found": "x"},
            "`not_found` is not allowed here unless",
        ),
        ({"query": "SELECT 1", "mode": "upsert"}, "`mode` is not allowed here"),
    ],
)
def test_the_flow_validator_names_a_key_that_does_not_belong(tmp_path, options, message):
    enrich = json.dumps({"connection": "db", "save_as": "x", **options})
    flow = write_flow(
        tmp_path,
        f"""
        flow: lookups
        connections:
          db: {{connector: sqlite, path: x.db}}
        source: {{connector: file, path: in.ndjson}}
        steps:
          - name: look
            enrich: {enrich}
        """,
    )
    problems = [p for p in Engine().check(flow) if p.severity == "error"]
    assert problems and message in problems[0].message, problems
