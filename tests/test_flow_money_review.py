"""A flow that sends orders whose figures do not add up to review before anything reaches
the ERP (`when: record | totals_problems`), and dead-letters an order it cannot map with
every problem in Shopify's terms: the engine, the shipped mapping and schema, real files."""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

from engine import Engine
from tests.conftest import read_ndjson, write_flow

FIXTURES = Path(__file__).resolve().parent / "fixtures" / "shopify"

FLOW = """
flow: orders_checked
connections:
  out: {connector: file}
source: {connector: file, path: unused.ndjson, key: "{{ record.id }}"}
steps:
  - map: shopify_order_to_canonical
  - validate: order
  - route:
      - when: record | totals_problems
        steps:
          - name: review
            send:
              connection: out
              path: "{{ vars.dir }}/review.ndjson"
              record:
                order: "{{ record.order_number }}"
                why: "{{ record | totals_problems }}"
      - otherwise:
          - name: erp
            send:
              connection: out
              path: "{{ vars.dir }}/erp.ndjson"
              record: {order: "{{ record.order_number }}", total: "{{ record.totals.total }}"}
"""


def fixture(name: str) -> dict:
    return json.loads((FIXTURES / name).read_text(), parse_float=Decimal)


def test_orders_that_do_not_add_up_go_to_review_and_unmappable_ones_say_everything(tmp_path):
    flow = write_flow(tmp_path, FLOW)
    records = [
        fixture(name)
        for name in (
            "order_full.json",
            "order_totals_off.json",
            "order_minimal.json",
            "order_broken.json",
            "order_tax_included_eu.json",
        )
    ]
    eng = Engine(state=tmp_path / "state.db")
    result = eng.run(flow, records=records, vars={"dir": str(tmp_path)})
    assert result.counts["done"] == 4 and result.counts["dead_lettered"] == 1

    assert read_ndjson(tmp_path / "erp.ndjson") == [
        {"order": "#1101", "total": "85.74"},
        {"order": "#1102", "total": "41.14"},
        {"order": "#1104", "total": "113.75"},
    ]
    assert read_ndjson(tmp_path / "review.ndjson") == [
        {"order": "#1107", "why": ["lines add up to 95.00 after discounts but subtotal is 100.00"]}
    ]
    store = eng.store()
    [letter] = store.dead_letters()
    store.close()
    assert (letter.step, letter.error_class) == ("map_1", "TemplateRenderError")
    assert letter.message.startswith(
        "order #1113 (shopify:5310000000000001113): "
        "line_items[1].price is invalid (decimal: '19,50' is not a decimal number); "
        "line_items[2].sku is missing; total_price is missing"
    )
