"""Approvals and compensation against a real Tryton: a refund above the threshold that
finance rejects has its draft credit note deleted (its compensation) and nothing posted;
a sale created before a later step failed for good is cancelled in the ERP.

Each test gets its own trytond over a fresh copy of the demo database
(tests/support/tryton.py).
"""

from __future__ import annotations

import re

import pytest

from engine import Engine
from tests.conftest import flowyard, write_flow
from tests.support.flows import (
    Erp,
    example_records,
    flow_vars,
    read_ndjson,
    run_flow,
    write_ndjson,
)
from tests.test_flow_return_to_refund import ORDERS, REFUNDS, book_orders, credit_notes

pytest_plugins = ["tests.support.tryton"]
pytestmark = pytest.mark.tryton


def test_a_rejected_refund_has_its_draft_credit_note_deleted_and_nothing_posted(tryton, tmp_path):
    book_orders(tryton, tmp_path, example_records(ORDERS, "#2004"))
    [refund] = example_records(REFUNDS, "#2004")  # 49.94, above the 40.00 threshold
    source = write_ndjson(tmp_path / "refunds.ndjson", [refund])
    state = tmp_path / "state.db"
    out = tmp_path / "out"
    run_vars = flow_vars(tryton, out, refunds=str(source), review_threshold="40.00")
    with Erp(tryton) as erp:
        _, first = run_flow("return_to_refund", state, run_vars)
        assert first.counts["review"] == 1, first
        [draft] = credit_notes(erp, "#2004")
        assert draft["state"] == "draft"
        [item] = Engine(state=state).approvals()

        rejected = flowyard(
            "approvals", "reject", item.id, "--by", "bob", "--comment", "not our goods",
            "--state", state,
        )  # fmt: skip
        assert rejected.returncode == 0, rejected.stdout + rejected.stderr
        assert credit_notes(erp, "#2004") == []  # the draft was deleted
        assert read_ndjson(out / "returns.ndjson") == []  # nothing written back
        [resumed] = [t for t in Engine(state=state).trace(item.record_key) if t.kind == "resume"]
        assert [s[:2] for s in resumed.steps] == [
            ["above_threshold", "rejected"],
            ["erp_credit_note_draft", "compensated"],
        ]
        assert resumed.steps[1][2]["why"] == f"approval {item.id} rejected by bob"

        # the refund comes again: the rejection stands (same money): the draft made again
        # is deleted again, nothing is posted or written back, no one is asked again
        _, again = run_flow("return_to_refund", state, run_vars)
        assert again.exit_code == 0 and again.counts["review"] == 0, again
        assert credit_notes(erp, "#2004") == []
        assert read_ndjson(out / "returns.ndjson") == []
        assert Engine(state=state).approvals() == []


SALE_THEN_FAIL = """
flow: sale_then_fail
connections:
  erp:
    connector: tryton
    url: "{{ vars.tryton_url }}"
    database: "{{ vars.tryton_database }}"
    username: "{{ vars.tryton_user }}"
    password: "${env:TRYTON_PASSWORD}"
    retry: {attempts: 1}
source: {connector: file, path: orders.ndjson}
steps:
  - name: erp_sale
    send:
      connection: erp
      model: sale.sale
      method: create
      args:
        - - party: "{{ vars.customer }}"
            invoice_address: "{{ vars.address }}"
            shipment_address: "{{ vars.address }}"
            reference: "{{ record.name }}"
            comment: "{{ record.id }}"
            lines:
              - - create
                - - type: line
                    product: "{{ vars.product }}"
                    quantity: 1
                    unit: "{{ vars.unit }}"
                    unit_price: "{{ record.price | decimal }}"
      read_fields: [number, state]
      save_as: erp_sale
      compensate:
        model: sale.sale
        method: cancel
        args: [["{{ record.erp_sale.ids[0] }}"]]
        read_fields: [state]
  - name: erp_sale_quote
    send:
      connection: erp
      on_change: update            # another sale id: the sale was made again
      model: sale.sale
      method: quote
      args: [["{{ record.erp_sale.ids[0] }}"]]
  # a later step the ERP refuses for good: a field the sale does not have
  - name: erp_sale_mark
    send:
      connection: erp
      model: sale.sale
      method: write
      args: [["{{ record.erp_sale.ids[0] }}"], {no_such_field: "{{ record.name }}"}]
"""


def test_a_sale_created_before_a_later_step_failed_for_good_is_cancelled(tryton, tmp_path):
    flow = write_flow(tmp_path, SALE_THEN_FAIL)
    write_ndjson(
        tmp_path / "orders.ndjson", [{"id": "web:7001", "name": "#7001", "price": "19.90"}]
    )
    ids = tryton.ids
    run_vars = flow_vars(
        tryton,
        tmp_path,
        customer=ids["customer"],
        address=ids["customer_address"],
        product=ids["products"]["TSHIRT-BLK-M"],
        unit=ids["unit"],
    )
    eng = Engine(state=tmp_path / "state.db")
    with Erp(tryton) as erp:
        before = erp.count("sale.sale")
        result = eng.run(flow, vars=run_vars)
        assert result.counts["dead_lettered"] == 1, result
        [sale] = erp.search_read("sale.sale", [["reference", "=", "#7001"]], ["state", "number"])
        assert sale["state"] == "cancelled"
        assert erp.count("sale.sale") == before + 1
        [trace] = eng.trace("web:7001")
        assert [s[:2] for s in trace.steps] == [
            ["erp_sale", "sent"],
            ["erp_sale_quote", "sent"],
            ["erp_sale_mark", "dead_lettered"],
            ["erp_sale", "compensated"],
        ]
        undo = trace.steps[-1][2]
        pattern = r"sale_then_fail:erp_sale:web:7001#\w{12}:compensate#\w{12}"
        assert re.fullmatch(pattern, undo["key"])
        assert undo["response"]["records"] == [{"id": sale["id"], "state": "cancelled"}]
        # replayed from the start after the fix, a new sale is made (the old one was undone)
        fixed = write_flow(
            tmp_path,
            SALE_THEN_FAIL.replace(
                'method: write\n      args: [["{{ record.erp_sale.ids[0] }}"], '
                '{no_such_field: "{{ record.name }}"}]',
                'method: read\n      args: [["{{ record.erp_sale.ids[0] }}"], [state]]',
            ),
        )
        assert "no_such_field" not in fixed.read_text()
        replayed = eng.replay(fixed, vars=run_vars, from_start=True)
        assert replayed.exit_code == 0, replayed
        states = sorted(
            s["state"]
            for s in erp.search_read("sale.sale", [["reference", "=", "#7001"]], ["state"])
        )
        assert states == ["cancelled", "quotation"]
