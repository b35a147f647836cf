"""Lookups in a file (``enrich`` with ``match``): maps kept as CSV, NDJSON or JSON files.

A map (SKU -> shop item id, ERP location -> shop location) is data a person edits; a flow
reads it with the file connector instead of holding it in its vars. These tests look rows
up in real files, change the files between lookups, and run a flow that uses one.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import pytest

from connectors.base import Request
from connectors.errors import PermanentError
from connectors.file import FileConnector
from engine import Engine
from tests.conftest import write_flow, write_ndjson


@pytest.fixture
def files(tmp_path):
    with FileConnector({"base_dir": str(tmp_path)}) as connector:
        yield connector


def lookup(connector: FileConnector, **options):
    return connector.call(Request(options=options)).body


def test_rows_matching_every_column_are_returned_in_file_order(files, tmp_path):
    (tmp_path / "items.csv").write_text(
        "sku,location,item_id\nA-1,STO,11\nA-2,STO,12\nA-1,BACK,13\nA-1,STO,14\n"
    )
    rows = lookup(files, path="items.csv", match={"sku": "A-1", "location": "STO"})
    assert rows == [
        {"sku": "A-1", "location": "STO", "item_id": "11"},
        {"sku": "A-1", "location": "STO", "item_id": "14"},
    ]
    assert lookup(files, path="items.csv", match={"sku": "A-9"}) == []


def test_values_are_compared_as_text(files, tmp_path):
    (tmp_path / "locations.ndjson").write_text(
        '{"code": 12, "shop": 9007199254740993}\n{"code": "13", "shop": 1.50}\n'
    )
    [row] = lookup(files, path="locations.ndjson", match={"code": "12"})
    assert row["shop"] == 9007199254740993  # an id above 2**53 keeps every digit
    [row] = lookup(files, path="locations.ndjson", match={"code": 13})
    assert row == {"code": "13", "shop": Decimal("1.50")}


def test_a_json_array_file_can_be_looked_up(files, tmp_path):
    (tmp_path / "items.json").write_text(json.dumps([{"sku": "A-1", "id": 5}, {"sku": "B"}]))
    assert lookup(files, path="items.json", match={"sku": "A-1"}) == [{"sku": "A-1", "id": 5}]


def test_not_found_fails_the_lookup_as_permanent_with_the_given_message(files, tmp_path):
    (tmp_path / "items.csv").write_text("sku,item_id\nA-1,11\n")
    with pytest.raises(PermanentError, match="^SKU X-1 is not in the map$"):
        lookup(files, path="items.csv", match={"sku": "X-1"}, not_found="SKU X-1 is not in the map")


def test_a_changed_file_is_read_again(files, tmp_path):
    path = tmp_path / "locations.csv"
    path.write_text("erp,shop\nSTO,1\n")
    assert lookup(files, path="locations.csv", match={"erp": "STO"})[0]["shop"] == "1"
    path.write_text("erp,shop\nSTO,2\n")  # same size: the modification time tells
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 1_000_000))
    assert lookup(files, path="locations.csv", match={"erp": "STO"})[0]["shop"] == "2"
    replacement = tmp_path / "new.csv"
    replacement.write_text("erp,shop\nSTO,3\n")
    replacement.replace(path)  # an editor's atomic save: a new file under the old name
    assert lookup(files, path="locations.csv", match={"erp": "STO"})[0]["shop"] == "3"


def test_a_broken_file_answers_every_lookup_with_its_problem(files, tmp_path):
    (tmp_path / "items.csv").write_text("sku,item_id\nA-1,11\nA-2,12,extra\n")
    with pytest.raises(PermanentError, match=r"items\.csv, line 3 cannot be read .*3 fields"):
        lookup(files, path="items.csv", match={"sku": "A-1"})
    (tmp_path / "items.ndjson").write_text('{"sku": "A-1"}\n[1, 2]\n')
    with pytest.raises(PermanentError, match="line 2 is not an object"):
        lookup(files, path="items.ndjson", match={"sku": "A-1"})
    (tmp_path / "wrong.csv").write_text("SKU,item\nA-1,11\n")
    with pytest.raises(PermanentError, match=r"has no column 'sku' \(it has: SKU, item\)"):
        lookup(files, path="wrong.csv", match={"sku": "A-1"})
    with pytest.raises(PermanentError, match="cannot open .*missing.csv"):
        lookup(files, path="missing.csv", match={"sku": "A-1"})
    with pytest.raises(PermanentError, match="outside base_dir"):
        lookup(files, path="../elsewhere.csv", match={"sku": "A-1"})


def test_lookups_from_many_threads_agree(files, tmp_path):
    rows = "".join(f"S-{n},{n}\n" for n in range(500))
    (tmp_path / "items.csv").write_text("sku,item_id\n" + rows)

    def find(n):
        return lookup(files, path="items.csv", match={"sku": f"S-{n}"})[0]["item_id"]

    with ThreadPoolExecutor(8) as pool:
        assert list(pool.map(find, range(500))) == [str(n) for n in range(500)]


def test_a_lookup_and_a_write_in_one_call_is_refused_when_the_flow_loads(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: both
        connections: {maps: {connector: file}}
        source: {connector: file, path: in.ndjson}
        steps:
          - name: look
            enrich:
              connection: maps
              path: map.csv
              match: {sku: "{{ record.sku }}"}
              record: "{{ record }}"
              save_as: rows
          - name: write
            send: {connection: maps, path: out.ndjson, record: "{{ record }}", not_found: x}
        """,
    )
    problems = [p for p in Engine().check(flow) if p.severity == "error"]
    assert [(p.path, p.message) for p in problems] == [
        (
            "steps[0].enrich",
            "enrich through 'file': `record` is not allowed here when `match` is given",
        ),
        (
            "steps[1].send",
            "send through 'file': `not_found` is not allowed here unless `match` is given",
        ),
    ]


def test_a_flow_dead_letters_what_its_map_does_not_know_and_follows_edits_of_the_map(tmp_path):
    flow = write_flow(
        tmp_path,
        """
        flow: mapped
        vars: {item_map: items.csv}
        connections:
          maps: {connector: file}
          out: {connector: file}
        source: {connector: file, path: levels.ndjson, key: "{{ record.sku }}"}
        steps:
          - name: item
            enrich:
              connection: maps
              path: "{{ vars.item_map }}"
              match: {sku: "{{ record.sku }}"}
              not_found: "SKU {{ record.sku }} is not in the item map {{ vars.item_map }}"
              save_as: item
          - name: level
            send:
              connection: out
              path: sent.ndjson
              on_change: update
              record: {item: "{{ record.item[0].item_id }}", qty: "{{ record.qty }}"}
        """,
    )
    write_ndjson(tmp_path / "levels.ndjson", [{"sku": "A-1", "qty": 4}, {"sku": "X-1", "qty": 2}])
    (tmp_path / "items.csv").write_text("sku,item_id\nA-1,11\n")
    eng = Engine(state=tmp_path / "state.db")
    first = eng.run(flow)
    assert first.counts["done"] == 1 and first.counts["dead_lettered"] == 1
    store = eng.store()
    [letter] = store.dead_letters()
    store.close()
    assert letter.step == "item" and letter.message.endswith(
        "SKU X-1 is not in the item map items.csv"
    ), letter.message

    (tmp_path / "items.csv").write_text("sku,item_id\nA-1,21\nX-1,22\n")  # no flow edit
    second = eng.run(flow)
    assert second.exit_code == 0 and second.counts["done"] == 2
    sent = [json.loads(line) for line in (tmp_path / "sent.ndjson").read_text().splitlines()]
    assert sent == [
        {"item": "11", "qty": 4},
        {"item": "21", "qty": 4},
        {"item": "22", "qty": 2},
    ]
