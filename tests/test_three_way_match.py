"""The three_way_match filter: supplier invoice lines against PO lines and goods receipts."""

from __future__ import annotations

from decimal import Decimal

import pytest

from engine.filters import FILTERS, FilterError
from engine.matching import three_way_match
from engine.templates import compile_value, make_environment

PO = [
    {"po_line": 1, "sku": "TSHIRT-BLK-M", "quantity": 100, "unit_price": "7.40", "currency": "USD"},
    {"po_line": 2, "sku": "MUG-LOGO", "quantity": "10", "unit_price": "3.10", "currency": "USD"},
]
RECEIVED = [
    {"po_line": 1, "sku": "TSHIRT-BLK-M", "quantity": 60},
    {"po_line": 1, "sku": "TSHIRT-BLK-M", "quantity": 40},  # two deliveries
    {"po_line": 2, "sku": "MUG-LOGO", "quantity": "10"},
]


def invoice(*lines, **extra):
    return {
        "po_reference": "PO-1001",
        "currency": "USD",
        "lines": [{"line_no": i, "po_line": None, **line} for i, line in enumerate(lines, start=1)],
        **extra,
    }


def line(sku, quantity, price, **extra):
    return {"sku": sku, "quantity": quantity, "unit_price": price, **extra}


def test_an_invoice_that_bills_what_was_ordered_and_received_is_matched():
    result = three_way_match(
        invoice(line("TSHIRT-BLK-M", "100", "7.40"), line("MUG-LOGO", "10", "3.10")),
        PO,
        RECEIVED,
    )
    assert result["outcome"] == "matched" and result["reasons"] == []
    first = result["lines"][0]
    assert first["received_qty"] == "100" and first["ordered_qty"] == "100"
    assert first["po_line"] == "1" and first["outcome"] == "matched"


def test_quantity_beyond_the_received_tolerance_is_an_exception_with_the_reason():
    received = [{"po_line": 2, "quantity": 10}]
    result = three_way_match(invoice(line("MUG-LOGO", "12", "3.10")), PO, received)
    assert result["outcome"] == "exception"
    assert result["reasons"] == [
        "line 1 SKU MUG-LOGO: invoiced qty 12 > received 10 beyond 2 %",
        "line 1 SKU MUG-LOGO: invoiced qty 12 > ordered 10 beyond 2 %",
    ]


@pytest.mark.parametrize(
    ("quantity", "price", "outcome"),
    [
        ("100", "7.40", "matched"),
        ("102", "7.40", "within_tolerance"),  # exactly 2 % over the received 100
        ("102.01", "7.40", "exception"),
        ("100", "7.77", "within_tolerance"),  # exactly 5 % over 7.40
        ("100", "7.78", "exception"),
        ("100", "7.03", "within_tolerance"),  # 5 % under
        ("100", "7.02", "exception"),
        ("90", "7.40", "matched"),  # a partial invoice bills less than was received
    ],
)
def test_tolerance_boundaries_are_inclusive(quantity, price, outcome):
    result = three_way_match(invoice(line("TSHIRT-BLK-M", quantity, price)), PO, RECEIVED)
    assert result["outcome"] == outcome, result["reasons"] or result["lines"][0]["reasons"]


def test_the_absolute_tolerance_lets_rounding_differences_pass():
    # 1 % of a 0.10 price is 0.001; a one-cent difference still passes on the 0.01 floor
    po = [{"po_line": 1, "sku": "BAG", "quantity": 5, "unit_price": "0.10"}]
    received = [{"po_line": 1, "quantity": 5}]
    result = three_way_match(
        invoice(line("BAG", "5", "0.11")), po, received, price_tol="0.01", abs_tol="0.01"
    )
    assert result["outcome"] == "within_tolerance"
    strict = three_way_match(
        invoice(line("BAG", "5", "0.11")), po, received, price_tol="0.01", abs_tol="0"
    )
    assert strict["outcome"] == "exception"


def test_tolerances_are_configurable_and_read_exactly():
    inv = invoice(line("TSHIRT-BLK-M", "100", "7.90"))  # 6.8 % over
    assert three_way_match(inv, PO, RECEIVED)["outcome"] == "exception"
    for tol in ("0.10", Decimal("0.1"), 0.1):  # a YAML float is a ratio, read by its repr
        assert three_way_match(inv, PO, RECEIVED, price_tol=tol)["outcome"] == "within_tolerance"
    reason = three_way_match(inv, PO, RECEIVED, price_tol="0.025")["reasons"][0]
    assert reason.endswith("beyond 2.5 %")


def test_an_unknown_sku_and_an_unknown_po_line_are_exceptions_naming_the_order():
    result = three_way_match(
        invoice(line("CAP-RED", "1", "4.00"), line("MUG-LOGO", "1", "3.10", po_line="7")),
        PO,
        RECEIVED,
    )
    assert result["reasons"] == [
        "line 1 SKU CAP-RED: not on purchase order PO-1001",
        "line 2 SKU MUG-LOGO: PO line 7 is not on purchase order PO-1001",
    ]
    assert [r["outcome"] for r in result["lines"]] == ["exception", "exception"]


def test_a_po_line_billed_with_another_sku_is_an_exception():
    result = three_way_match(invoice(line("CAP-RED", "1", "3.10", po_line=2)), PO, RECEIVED)
    assert result["reasons"] == ["line 1 SKU CAP-RED: PO line 2 is SKU MUG-LOGO, not CAP-RED"]


def test_nothing_received_yet_is_said_so():
    result = three_way_match(invoice(line("MUG-LOGO", "10", "3.10")), PO, [])
    assert result["reasons"][0] == (
        "line 1 SKU MUG-LOGO: invoiced qty 10 > received 0: nothing received yet"
    )


def test_lines_billing_the_same_po_line_add_up():
    result = three_way_match(
        invoice(line("MUG-LOGO", "6", "3.10"), line("MUG-LOGO", "6", "3.10", po_line=2)),
        PO,
        RECEIVED,
    )
    assert [r["outcome"] for r in result["lines"]] == ["matched", "exception"]
    assert "invoiced qty 6 (with earlier lines: 12) > received 10" in result["reasons"][0]


def test_goods_billed_by_earlier_invoices_are_not_paid_twice():
    earlier = [{"po_line": 1, "quantity": "60"}]
    second = three_way_match(
        invoice(line("TSHIRT-BLK-M", "40", "7.40")), PO, RECEIVED, invoiced_lines=earlier
    )
    assert second["outcome"] == "matched"
    assert second["lines"][0]["invoiced_before"] == "60"
    duplicate = three_way_match(
        invoice(line("TSHIRT-BLK-M", "100", "7.40")), PO, RECEIVED, invoiced_lines=earlier
    )
    assert duplicate["reasons"][0] == (
        "line 1 SKU TSHIRT-BLK-M: invoiced qty 100 + 60 on earlier invoices > received 100 "
        "beyond 2 %"
    )


def test_receipts_without_a_po_line_count_by_sku():
    received = [{"sku": "MUG-LOGO", "quantity": 4}, {"sku": "MUG-LOGO", "quantity": 6}]
    result = three_way_match(invoice(line("MUG-LOGO", "10", "3.10")), PO, received)
    assert result["outcome"] == "matched" and result["lines"][0]["received_qty"] == "10"


def test_a_line_total_that_is_not_quantity_times_price_is_an_exception():
    ok = invoice(line("MUG-LOGO", "3", "3.105", total="9.32"))  # 9.315 rounds half up
    po = [{**PO[1], "unit_price": "3.105"}]
    assert three_way_match(ok, po, RECEIVED)["outcome"] == "matched"
    bad = invoice(line("MUG-LOGO", "10", "3.10", total="32.00"))
    assert three_way_match(bad, PO, RECEIVED)["reasons"] == [
        "line 1 SKU MUG-LOGO: line total 32.00 is not qty 10 x price 3.10 = 31.00"
    ]


def test_an_invoice_in_another_currency_than_the_order_is_an_exception():
    result = three_way_match(invoice(line("MUG-LOGO", "10", "3.10"), currency="EUR"), PO, RECEIVED)
    assert result["outcome"] == "exception"
    assert result["reasons"] == ["invoice: invoice in EUR, but the purchase order is in USD"]


def test_money_as_float_is_refused_with_the_field_named():
    with pytest.raises(FilterError, match=r"refusing the float .*po_lines\[0\] unit_price"):
        three_way_match(
            invoice(line("MUG-LOGO", "1", "3.10")),
            [{"po_line": 1, "sku": "MUG-LOGO", "quantity": 1, "unit_price": 3.1}],
            [],
        )
    with pytest.raises(FilterError, match="invoice line 1 has no quantity"):
        three_way_match(invoice({"sku": "MUG-LOGO", "unit_price": "1"}), PO, RECEIVED)
    with pytest.raises(FilterError, match="qty_tol must not be negative"):
        three_way_match(invoice(line("MUG-LOGO", "1", "3.10")), PO, RECEIVED, qty_tol="-1")


def test_it_is_a_template_filter():
    assert FILTERS["three_way_match"] is three_way_match
    render = compile_value(
        make_environment(),
        "{{ record | three_way_match(po, receipts, price_tol=vars.price_tol) }}",
    )
    result = render(
        {
            "record": invoice(line("MUG-LOGO", "10", "3.20")),
            "po": PO,
            "receipts": RECEIVED,
            "vars": {"price_tol": "0.05"},
        }
    )
    assert result["outcome"] == "within_tolerance"
    assert result["lines"][0]["reasons"] == [
        "line 1 SKU MUG-LOGO: invoiced price 3.20 > PO price 3.10, within 5 %"
    ]
