"""`flowyard map MAPPING RECORD`: the result field by field and every problem at once."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from engine import Engine
from tests.conftest import ROOT, invoke

STARTER_ORDERS = ROOT / "engine" / "starter" / "orders.ndjson"


def first_order() -> dict:
    return json.loads(STARTER_ORDERS.read_text().splitlines()[0])


def test_a_built_in_mapping_by_name_field_by_field_checked_against_its_schema():
    done = invoke("map", "shopify_order_to_canonical", STARTER_ORDERS, "--line", "1")
    assert done.returncode == 0, done.stderr
    assert "checked against canonical schema order" in done.stdout
    assert "order.schema.json" in done.stdout
    assert '  lines[1].sku                   "MUG-WHT"' in done.stdout
    assert '  totals.total                   "67.69"' in done.stdout
    assert done.stdout.rstrip().endswith("no problems")


def test_every_mapping_problem_at_once_in_the_records_terms(tmp_path):
    order = first_order()
    del order["currency"], order["line_items"][1]["sku"]
    order["line_items"][0]["price"] = "19,00"
    record = tmp_path / "order.json"
    record.write_text(json.dumps(order))
    done = invoke("map", "shopify_order_to_canonical", record, "-o", "json")
    assert done.returncode == 1
    problems = json.loads(done.stdout)["problems"]
    sources = {p["source"]: p for p in problems}
    assert set(sources) == {"currency", "line_items[0].price", "line_items[1].sku"}
    assert sources["currency"]["message"] == "is missing"
    assert sources["line_items[1].sku"]["field"] == "lines[1].sku"
    assert "not a decimal number" in sources["line_items[0].price"]["message"]


def test_every_schema_problem_at_once_with_the_records_field(tmp_path):
    order = first_order()
    order["email"] = "not-an-email"
    order["line_items"][0]["quantity"] = 0
    order["created_at"] = "2026-11-30"
    done = subprocess.run(
        [sys.executable, "-m", "cli", "map", "shopify_order_to_canonical", "-"],
        input=json.dumps(order),
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert done.returncode == 1
    assert "2 problem(s):" in done.stderr
    assert "schema: customer.email: 'not-an-email' does not match" in done.stderr
    assert "(from the record's email)" in done.stderr
    assert "schema: lines[0].quantity: 0 is less than the minimum of 1" in done.stderr


def test_a_mapping_file_of_ones_own_and_an_explicit_schema(tmp_path):
    mapping = tmp_path / "sku_level.yaml"
    mapping.write_text(
        'mapping: sku_level\nfields:\n  sku: "{{ record.code }}"\n  on_hand: "{{ record.qty }}"\n'
    )
    result = Engine().map_record(mapping, {"code": "TEE", "qty": 3}, schema="inventory_level")
    assert result.record == {"sku": "TEE", "on_hand": 3}
    assert result.schema == "inventory_level"
    missing = {p.field for p in result.problems if p.kind == "schema"}
    assert {"(record)"} == missing  # the required fields, reported on the record
    assert len(result.problems) >= 5  # location, available, reserved, as_of, ... each one
    no_schema = Engine().map_record(mapping, {"code": "TEE", "qty": 3})
    assert no_schema.schema is None and no_schema.ok


def test_an_unknown_mapping_or_unreadable_record_exits_2(tmp_path):
    unknown = invoke("map", "shopfy_order", STARTER_ORDERS, "--line", "1")
    assert unknown.returncode == 2 and "shopify_order_to_canonical" in unknown.stderr
    several = invoke("map", "shopify_order_to_canonical", STARTER_ORDERS)
    assert several.returncode == 2 and "--line N" in several.stderr
    bad = tmp_path / "bad.json"
    bad.write_text("{not: [json")
    broken = invoke("map", "shopify_order_to_canonical", bad)
    assert broken.returncode == 2 and "neither JSON nor YAML" in broken.stderr
