"""flows/order_to_erp.yaml against a real Tryton: web-shop orders in, the ERP's own sales
orders, parties and numbers read back over its API and compared with what the shop said.

Each test gets its own trytond over a fresh copy of the demo database
(tests/tryton_support.py); the orders are examples/order_to_erp/*.ndjson.
"""

from __future__ import annotations

import json
from decimal import Decimal

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


def expected_lines(order: dict) -> list[tuple]:
    """(sku, quantity, net unit price, line amount) per line item, as the shop sold them."""
    out = []
    for item in order["line_items"]:
        discount = sum((Decimal(d["amount"]) for d in item["discount_allocations"]), Decimal(0))
        amount = Decimal(item["price"]) * item["quantity"] - discount
        out.append((item["sku"], item["quantity"], amount / item["quantity"], amount))
    return out


def test_orders_become_confirmed_sales_with_the_shops_lines_and_totals_and_a_rerun_changes_nothing(
    tryton, tmp_path
):
    orders = example_records(ORDERS)
    out = tmp_path / "out"
    run_vars = flow_vars(tryton, out, orders=str(tmp_path / "orders.ndjson"))
    write_ndjson(tmp_path / "orders.ndjson", orders)

    with Erp(tryton) as erp:
        before = erp.counts()
        _, first = run_flow("order_to_erp", tmp_path / "state.db", run_vars)
        assert first.counts["done"] == len(orders) and first.exit_code == 0, first

        written = {w["order_number"]: w for w in read_ndjson(out / "order_tags.ndjson")}
        check_order = validator("order")
        for order in orders:
            sale = erp.sale(order["name"])
            assert sale["state"] == "processing"  # confirmed; Tryton made shipment and invoice
            assert sale["invoices"] and sale["shipments"]
            lines = [
                (line["product."]["code"], line["quantity"], line["unit_price"], line["amount"])
                for line in sale["lines"]
                if line["product"] is not None
            ]
            assert lines == [
                (sku, float(qty), price, amount)
                for sku, qty, price, amount in expected_lines(order)
            ]
            assert all(
                line["taxes"] == [tryton.ids["tax"]] for line in sale["lines"] if line["product"]
            )
            shipping = [line for line in sale["lines"] if line["product"] is None]
            assert [money(line["amount"]) for line in shipping] == [
                money(rate["price"]) for rate in order["shipping_lines"]
            ]
            # the ERP's own totals are the shop's: goods, shipping, 10 % tax
            assert money(sale["untaxed_amount"]) == money(order["subtotal_price"]) + money(
                order["total_shipping_price_set"]["shop_money"]["amount"]
            )
            assert money(sale["tax_amount"]) == money(order["total_tax"])
            assert money(sale["total_amount"]) == money(order["total_price"])
            # the customer: found by email, or by name when the order has none
            if order["email"]:
                assert sale["party"]["email"] == order["email"].lower()
            assert (
                sale["party"]["name"]
                == f"{order['customer']['first_name']} {order['customer']['last_name']}"
            )
            # the ERP's number went back to the shop, in a canonical order
            back = written[order["name"]]
            check_order(back)
            assert back["external_ids"]["erp_sales_order"] == sale["number"]
            assert back["order_id"] == f"shopify:{order['id']}"

        # Ada Shopper orders without an email: the ERP's existing customer of that name
        assert erp.sale("#2002")["party"]["id"] == tryton.ids["customer"]
        # Ana's two orders: one party, created once
        assert erp.sale("#2001")["party"]["id"] == erp.sale("#2004")["party"]["id"]
        created = erp.counts()
        assert created["sale.sale"] - before["sale.sale"] == len(orders)
        assert created["party.party"] - before["party.party"] == 3  # Ana, Tom, Li

        # pickup orders also reached the store, with the ERP's number
        [pickup] = read_ndjson(out / "pickups.ndjson")
        assert pickup["order_number"] == "#2003"
        assert pickup["store"] == "61500000000000000011"
        assert pickup["erp_sales_order"] == erp.sale("#2003")["number"]

        # a second run sends nothing: the ERP holds exactly what it held
        _, second = run_flow("order_to_erp", tmp_path / "state.db", run_vars)
        assert second.counts["skipped"] == len(orders) and second.counts["done"] == 0
        assert erp.counts() == created
        assert len(read_ndjson(out / "order_tags.ndjson")) == len(orders)
        assert len(read_ndjson(out / "pickups.ndjson")) == 1

        # even with the state lost, the ERP is asked first: no sale and no party twice
        _, fresh = run_flow("order_to_erp", tmp_path / "fresh_state.db", run_vars)
        assert fresh.counts["done"] == len(orders) and fresh.exit_code == 0, fresh
        assert erp.counts() == created
        numbers = {
            w["order_number"]: w["external_ids"]["erp_sales_order"] for w in written.values()
        }
        again = read_ndjson(out / "order_tags.ndjson")[len(orders) :]
        assert {w["order_number"]: w["external_ids"]["erp_sales_order"] for w in again} == numbers


def test_bad_orders_are_dead_lettered_with_a_reason_and_the_rest_reach_the_erp(tryton, tmp_path):
    """Through the CLI: an unknown SKU and a foreign currency are refused before the ERP
    is touched, an order the ERP holds half-done is left to a person; a new customer
    without an email is found and created by name, once."""
    good = example_records(ORDERS, "#2001")
    half_done = example_records(ORDERS, "#2005")
    problems = example_records("order_to_erp/problem_orders.ndjson")  # #2006 X-1, #2007 EUR
    no_email = dict(
        example_records(ORDERS, "#2005")[0],
        id=6100000000000002008,
        name="#2008",
        email=None,
        contact_email=None,
        customer={
            "id": 7400000000000000009,
            "email": None,
            "first_name": "Sam",
            "last_name": "Taylor",
            "phone": "+15125550199",
        },
    )
    no_email["billing_address"] = dict(no_email["billing_address"], name="Sam Taylor")
    source = write_ndjson(
        tmp_path / "orders.ndjson", [problems[0], *good, problems[1], no_email, *half_done]
    )
    out = tmp_path / "out"
    args = ["run", FLOWS / "order_to_erp.yaml", "--state", tmp_path / "state.db"]
    for key, value in flow_vars(tryton, out, orders=str(source)).items():
        args += ["--var", f"{key}={value}"]

    with Erp(tryton) as erp:
        # #2005 is in the ERP already, as a draft: a run that stopped half-way
        erp.connector.execute(
            "sale.sale",
            "create",
            [{"party": tryton.ids["customer"], "reference": "#2005", "lines": []}],
        )
        before = erp.counts()
        first = flowyard(*args, "--output", "json")
        assert first.returncode == 1, first.stderr  # some records dead-lettered
        assert json.loads(first.stdout)["counts"]["done"] == 2

        letters = json.loads(
            flowyard("dlq", "list", "--state", tmp_path / "state.db", "--output", "json").stdout
        )
        reasons = {letter["record"]["order_number"]: letter for letter in letters}
        assert sorted(reasons) == ["#2005", "#2006", "#2007"]
        assert reasons["#2005"]["step"] == "sale_half_done"
        assert (
            "in state draft (a run stopped between creating and confirming it)"
            in (reasons["#2005"]["message"])
        )
        assert reasons["#2006"]["step"] == "unknown_sku"
        assert reasons["#2006"]["message"].startswith("unknown SKU X-1 in order #2006: ")
        assert reasons["#2007"]["message"].startswith(
            "order #2007 is in EUR, but the ERP books web sales in USD"
        )
        assert "Traceback" not in first.stdout + first.stderr

        # nothing of the refused orders is in the ERP; the others are, confirmed
        for number in ("#2006", "#2007"):
            assert erp.count("sale.sale", [["reference", "=", number]]) == 0
        assert erp.count("sale.sale", [["reference", "=", "#2005"]]) == 1  # not a second one
        assert erp.sale("#2001")["state"] == "processing"
        sam = erp.sale("#2008")
        assert sam["state"] == "processing"
        assert sam["party"]["name"] == "Sam Taylor" and sam["party"]["email"] == ""
        after = erp.counts()
        assert after["sale.sale"] == before["sale.sale"] + 2

        # again: the refused ones are refused again (one open dead letter each), Sam is
        # found by name, and the ERP does not change
        second = flowyard(*args)
        assert second.returncode == 1
        assert erp.counts() == after
        letters = json.loads(
            flowyard("dlq", "list", "--state", tmp_path / "state.db", "--output", "json").stdout
        )
        assert len(letters) == 3
