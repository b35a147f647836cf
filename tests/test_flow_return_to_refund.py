"""flows/return_to_refund.yaml against a real Tryton: the orders are posted by
flows/order_to_erp.yaml first, then web-shop refunds become credit notes, read back over
the ERP's API and compared with what the shop refunded.

Each test gets its own trytond over a fresh copy of the demo database
(tests/tryton_support.py); orders and refunds are examples/*/.
"""

from __future__ import annotations

import copy
import json

import pytest

from tests.conftest import flowyard
from tests.flow_support import (
    FLOWS,
    Erp,
    example_records,
    flow_vars,
    money,
    read_ndjson,
    run_flow,
    validator,
    write_ndjson,
)

pytest_plugins = ["tests.tryton_support"]
pytestmark = pytest.mark.tryton

ORDERS = "order_to_erp/orders.ndjson"
REFUNDS = "return_to_refund/refunds.ndjson"
CREDIT_NOTE_FIELDS = [
    "type",
    "state",
    "number",
    "party",
    "reference",
    "description",
    "untaxed_amount",
    "tax_amount",
    "total_amount",
    "lines",
]


def post_orders(tryton, tmp_path, *names: str) -> None:
    """The web-shop orders, in the ERP through the order flow (as in production)."""
    source = write_ndjson(tmp_path / "orders.ndjson", example_records(ORDERS, *names))
    run_vars = flow_vars(tryton, tmp_path / "orders_out", orders=str(source))
    _, result = run_flow("order_to_erp", tmp_path / "orders_state.db", run_vars)
    assert result.counts["done"] == len(names), result


def credit_notes(erp: Erp, reference: str) -> list[dict]:
    notes = erp.search_read(
        "account.invoice",
        [["reference", "=", reference], ["type", "=", "out"], ["total_amount", "<", 0]],
        CREDIT_NOTE_FIELDS,
    )
    for note in notes:
        note["lines"] = erp.read(
            "account.invoice.line",
            note["lines"],
            ["product", "product.code", "quantity", "unit_price", "amount", "taxes"],
        )
    return notes


def test_refunds_become_credit_notes_for_the_original_customer_and_a_rerun_changes_nothing(
    tryton, tmp_path
):
    post_orders(tryton, tmp_path, "#2001", "#2002", "#2003", "#2004")
    refunds = example_records(REFUNDS)
    source = write_ndjson(tmp_path / "refunds.ndjson", refunds)
    out = tmp_path / "out"
    # #2004's refund (49.94) is above the threshold: drafted and queued, not posted
    run_vars = flow_vars(tryton, out, refunds=str(source), review_threshold="40.00")

    with Erp(tryton) as erp:
        before = erp.counts()
        _, first = run_flow("return_to_refund", tmp_path / "state.db", run_vars)
        assert first.counts["done"] == len(refunds) and first.exit_code == 0, first

        written = {w["order_number"]: w for w in read_ndjson(out / "returns.ndjson")}
        check_return = validator("return")
        for refund in refunds:
            order_number = refund["order_name"]
            sale = erp.sale(order_number)
            [note] = credit_notes(erp, order_number)
            assert note["party"] == sale["party"]["id"]
            assert note["description"].startswith(f"Refund shopify:{refund['id']} of order")
            # the ERP's amounts are what the shop paid back
            paid_back = sum(money(t["amount"]) for t in refund["transactions"])
            assert money(note["total_amount"]) == -paid_back
            assert money(note["tax_amount"]) == -sum(
                money(item["total_tax"]) for item in refund["refund_line_items"]
            )
            goods = [
                (line["product."]["code"], line["quantity"], money(line["amount"]))
                for line in note["lines"]
                if line["product"] is not None
            ]
            assert goods == [
                (item["line_item"]["sku"], -float(item["quantity"]), -money(item["subtotal"]))
                for item in refund["refund_line_items"]
            ]
            shipping = [money(line["amount"]) for line in note["lines"] if line["product"] is None]
            assert shipping == [
                money(a["amount"])
                for a in refund["order_adjustments"]
                if a["kind"] == "shipping_refund"
            ]
            if paid_back > 40:
                assert note["state"] == "draft" and note["number"] is None
                assert order_number not in written
            else:
                assert note["state"] == "posted"
                back = written[order_number]
                check_return(back)
                assert back["external_ids"]["erp_credit_note"] == note["number"]

        [review] = read_ndjson(out / "refunds_to_review.ndjson")
        [draft] = credit_notes(erp, "#2004")
        assert review["order_number"] == "#2004"
        assert review["erp_credit_note_draft"] == draft["id"]
        assert review["erp_sales_order"] == erp.sale("#2004")["number"]
        assert "above the review threshold of 40.00" in review["reason"]

        created = erp.counts()
        assert created["account.invoice"] - before["account.invoice"] == len(refunds)
        assert created["sale.sale"] == before["sale.sale"]  # refunds touch no sale

        # a second run: no credit note twice, no second review entry, no second write-back
        _, second = run_flow("return_to_refund", tmp_path / "state.db", run_vars)
        assert second.counts["skipped"] == len(refunds) and second.counts["done"] == 0
        assert erp.counts() == created
        assert len(read_ndjson(out / "refunds_to_review.ndjson")) == 1
        assert len(read_ndjson(out / "returns.ndjson")) == len(refunds) - 1

        # finance posts the reviewed draft in Tryton: the next run writes its number back
        erp.connector.execute("account.invoice", "post", [draft["id"]])
        _, third = run_flow("return_to_refund", tmp_path / "state.db", run_vars)
        assert third.counts["done"] == 1 and third.counts["skipped"] == len(refunds) - 1
        [posted] = credit_notes(erp, "#2004")
        back = {w["order_number"]: w for w in read_ndjson(out / "returns.ndjson")}["#2004"]
        assert back["external_ids"]["erp_credit_note"] == posted["number"]

        # with the state lost, the ERP is asked first: no credit note twice
        _, fresh = run_flow("return_to_refund", tmp_path / "fresh_state.db", run_vars)
        assert fresh.exit_code == 0, fresh
        assert erp.counts() == created


def test_refunds_the_erp_cannot_credit_are_dead_lettered_with_a_reason_and_the_rest_go_on(
    tryton, tmp_path
):
    """Through the CLI: a refund for an order the ERP does not know, one with an SKU it does
    not know, one whose sale has no invoice yet; a good refund next to them is credited."""
    post_orders(tryton, tmp_path, "#2001")
    with Erp(tryton) as erp:
        # a sale invoiced by hand: confirmed, but no invoice until someone makes one
        values = {
            "party": tryton.ids["customer"],
            "invoice_address": tryton.ids["customer_address"],
            "shipment_address": tryton.ids["customer_address"],
            "reference": "#2010",
            "invoice_method": "manual",
            "lines": [
                [
                    "create",
                    [
                        {
                            "type": "line",
                            "product": tryton.ids["products"]["MUG-LOGO"],
                            "quantity": 1,
                            "unit": tryton.ids["unit"],
                            "unit_price": "8.50",
                            "taxes": [["add", [tryton.ids["tax"]]]],
                        }
                    ],
                ]
            ],
        }
        [sale_id] = erp.connector.execute("sale.sale", "create", [values])
        erp.connector.execute("sale.sale", "quote", [sale_id])
        erp.connector.execute("sale.sale", "confirm", [sale_id])

        [good] = example_records(REFUNDS, "#2001")
        [unknown_order] = example_records("return_to_refund/problem_refunds.ndjson")  # #1999
        unknown_sku = copy.deepcopy(good)
        unknown_sku.update(id=9910000000000000006)
        unknown_sku["refund_line_items"][0]["line_item"]["sku"] = "X-1"
        not_invoiced = copy.deepcopy(good)
        not_invoiced.update(id=9910000000000000007, order_name="#2010")
        source = write_ndjson(
            tmp_path / "refunds.ndjson", [unknown_order, unknown_sku, good, not_invoiced]
        )
        args = ["run", FLOWS / "return_to_refund.yaml", "--state", tmp_path / "state.db"]
        for key, value in flow_vars(tryton, tmp_path / "out", refunds=str(source)).items():
            args += ["--var", f"{key}={value}"]

        before = erp.counts()
        run = flowyard(*args, "--output", "json")
        assert run.returncode == 1, run.stderr
        assert json.loads(run.stdout)["counts"]["done"] == 1
        assert "Traceback" not in run.stdout + run.stderr

        letters = json.loads(
            flowyard("dlq", "list", "--state", tmp_path / "state.db", "--output", "json").stdout
        )
        by_step = {letter["step"]: letter for letter in letters}
        assert sorted(by_step) == ["sale_not_invoiced", "unknown_order", "unknown_sku"]
        message = by_step["unknown_order"]["message"]
        assert message.startswith(
            "refund shopify:9910000000000000005 (21.89 USD) is for web-shop order #1999, but "
            "the ERP has no confirmed sales order with reference #1999"
        )
        assert "post it (flow order_to_erp) and replay this refund" in message
        assert by_step["unknown_sku"]["message"].startswith(
            "unknown SKU X-1 in refund shopify:9910000000000000006 of order #2001: "
        )
        assert "has no customer invoice in the ERP yet" in by_step["sale_not_invoiced"]["message"]

        # only the good refund reached the ERP: one posted credit note for #2001
        assert erp.counts()["account.invoice"] == before["account.invoice"] + 1
        [note] = credit_notes(erp, "#2001")
        assert note["state"] == "posted" and money(note["total_amount"]) == money("-21.89")
        assert credit_notes(erp, "#2010") == []
