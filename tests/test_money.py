"""engine/money.py: a canonical order and a refund check their own arithmetic.

Every figure below is computed by hand in the comment next to it.
"""

from __future__ import annotations

import copy
from decimal import Decimal

import pytest

from engine.money import (
    FilterError,
    prorate,
    ratio,
    refund_problems,
    totals_problems,
)
from engine.templates import compile_condition, compile_value, make_environment


def line(no, sku, quantity, price, *, discount="0.00", tax="0.00", total, taxes=(), allocations=()):
    return {
        "line_no": no,
        "sku": sku,
        "quantity": quantity,
        "unit_price": price,
        "discount": discount,
        "discount_allocations": [{"amount": a, "code": "X"} for a in allocations],
        "tax": tax,
        "tax_lines": [{"title": t, "rate": r, "amount": a} for t, r, a in taxes],
        "total": total,
    }


def order(lines, totals, *, shipping=(), fees=(), included=False, currency="USD", tax_lines=()):
    return {
        "currency": currency,
        "taxes_included": included,
        "lines": list(lines),
        "shipping_lines": list(shipping),
        "fee_lines": list(fees),
        "tax_lines": [{"title": t, "rate": r, "amount": a} for t, r, a in tax_lines],
        "totals": dict(
            zip(("subtotal", "discount", "shipping", "tax", "total"), totals, strict=True)
        ),
    }


def rate(price, *, discount="0.00", tax="0.00", taxes=()):
    return {
        "code": "STD",
        "title": "Standard",
        "price": price,
        "discount": discount,
        "tax": tax,
        "tax_lines": [{"title": t, "rate": r, "amount": a} for t, r, a in taxes],
    }


# 2 x 24.90 = 49.80, tax 8.25 % = 4.1085 -> 4.11; 19.50, tax 1.60875 -> 1.61;
# shipping 9.90, tax 0.81675 -> 0.82; subtotal 69.30, tax 6.54, total 85.74
TAX_EXCLUDED = order(
    [
        line(
            1, "TEE", 2, "24.90", tax="4.11", total="49.80", taxes=[("Sales tax", "0.0825", "4.11")]
        ),
        line(
            2, "CAP", 1, "19.50", tax="1.61", total="19.50", taxes=[("Sales tax", "0.0825", "1.61")]
        ),
    ],
    ("69.30", "0.00", "9.90", "6.54", "85.74"),
    shipping=[rate("9.90", tax="0.82", taxes=[("Sales tax", "0.0825", "0.82")])],
    tax_lines=[("Sales tax", "0.0825", "6.54")],
)

# gross prices, 19 % VAT inside: 59.00 - 59.00 / 1.19 = 9.42; 49.80 -> 7.95; 4.95 -> 0.79;
# subtotal 108.80, tax 18.16, total 108.80 + 4.95 = 113.75
TAX_INCLUDED = order(
    [
        line(1, "HOOD", 1, "59.00", tax="9.42", total="59.00", taxes=[("VAT", "0.19", "9.42")]),
        line(2, "TEE", 2, "24.90", tax="7.95", total="49.80", taxes=[("VAT", "0.19", "7.95")]),
    ],
    ("108.80", "0.00", "4.95", "18.16", "113.75"),
    shipping=[rate("4.95", tax="0.79", taxes=[("VAT", "0.19", "0.79")])],
    included=True,
)

# state 6.25 % + city 2 %: 129.00 -> 8.06 + 2.58 = 10.64; 45.00 -> 2.81 + 0.90 = 3.71;
# shipping 9.90 -> 0.62 + 0.20 = 0.82; tax 15.17; total 174.00 + 9.90 + 15.17 = 199.07
MULTI_RATE = order(
    [
        line(
            1,
            "JACKET",
            1,
            "129.00",
            tax="10.64",
            total="129.00",
            taxes=[("State", "0.0625", "8.06"), ("City", "0.02", "2.58")],
        ),
        line(
            2,
            "BEANIE",
            2,
            "22.50",
            tax="3.71",
            total="45.00",
            taxes=[("State", "0.0625", "2.81"), ("City", "0.02", "0.90")],
        ),
    ],
    ("174.00", "0.00", "9.90", "15.17", "199.07"),
    shipping=[
        rate("9.90", tax="0.82", taxes=[("State", "0.0625", "0.62"), ("City", "0.02", "0.20")])
    ],
    tax_lines=[("State", "0.0625", "11.49"), ("City", "0.02", "3.68")],
)

# 10 % off: 49.80 - 4.98 = 44.82 (tax 3.70), 24.00 - 2.40 = 21.60 (tax 1.78); a shipping
# discount of 4.90 on 9.90 (tax on 5.00: 0.41); discount 4.98 + 2.40 + 4.90 = 12.28;
# tax 3.70 + 1.78 + 0.41 = 5.89; total 66.42 + 9.90 - 4.90 + 5.89 = 77.31
DISCOUNTED = order(
    [
        line(
            1, "TEE", 2, "24.90", discount="4.98", tax="3.70", total="44.82", allocations=["4.98"]
        ),
        line(
            2, "MUG", 2, "12.00", discount="2.40", tax="1.78", total="21.60", allocations=["2.40"]
        ),
    ],
    ("66.42", "12.28", "9.90", "5.89", "77.31"),
    shipping=[rate("9.90", discount="4.90", tax="0.41")],
)


@pytest.mark.parametrize(
    "good",
    [TAX_EXCLUDED, TAX_INCLUDED, MULTI_RATE, DISCOUNTED],
    ids=["tax excluded", "tax included", "two rates", "discounts"],
)
def test_an_order_that_adds_up_has_no_problems(good):
    assert totals_problems(good) == []


def changed(base, change):
    out = copy.deepcopy(base)
    change(out)
    return out


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        (
            changed(TAX_EXCLUDED, lambda o: o["totals"].update(subtotal="100.00", total="116.44")),
            "lines add up to 69.30 after discounts but subtotal is 100.00",
        ),
        (
            changed(TAX_EXCLUDED, lambda o: o["totals"].update(total="90.00")),
            "subtotal 69.30 + shipping 9.90 + tax 6.54 = 85.74 but total is 90.00",
        ),
        (
            changed(TAX_INCLUDED, lambda o: o["totals"].update(total="131.91")),
            "subtotal 108.80 + shipping 4.95 (taxes included) = 113.75 but total is 131.91",
        ),
        (
            changed(TAX_EXCLUDED, lambda o: o["totals"].update(shipping="5.00", total="80.84")),
            "shipping lines add up to 9.90 but shipping is 5.00",
        ),
        (
            changed(DISCOUNTED, lambda o: o["totals"].update(discount="7.38")),
            "line and shipping discounts add up to 12.28 but the total discount is 7.38",
        ),
        (
            changed(MULTI_RATE, lambda o: o["totals"].update(tax="15.50", total="199.40")),
            "line, shipping and fee taxes add up to 15.17 but total tax is 15.50",
        ),
    ],
    ids=["subtotal", "total", "total, taxes included", "shipping", "discount", "tax"],
)
def test_each_figure_that_does_not_add_up_is_named_with_both_amounts(broken, problem):
    assert problem in totals_problems(broken)


def test_every_problem_of_an_order_is_listed():
    broken = changed(
        DISCOUNTED,
        lambda o: (
            o["lines"][0].update(total="50.00"),  # 2 x 24.90 - 4.98 = 44.82
            o["lines"][1].update(discount="3.00"),  # its allocations say 2.40
            o["totals"].update(total="80.00"),
        ),
    )
    assert totals_problems(broken) == [
        "line 1 (TEE): total 50.00 is not 2 x 24.90 - discount 4.98 = 44.82",
        "line 2 (MUG): total 21.60 is not 2 x 12.00 - discount 3.00 = 21.00",
        "line 2 (MUG): discount allocations add up to 2.40 but its discount is 3.00",
        "lines add up to 71.60 after discounts but subtotal is 66.42",
        "line and shipping discounts add up to 12.88 but the total discount is 12.28",
        "subtotal 66.42 + shipping 9.90 - shipping discount 4.90 + tax 5.89 = 77.31 "
        "but total is 80.00",
    ]


def test_a_lines_tax_lines_must_add_up_to_its_tax():
    broken = changed(MULTI_RATE, lambda o: o["lines"][0]["tax_lines"][1].update(amount="2.00"))
    # 8.06 + 2.00 = 10.06; the line's tax (10.64) and the order's figures still agree
    assert totals_problems(broken) == [
        "line 1 (JACKET): tax lines add up to 10.06 but its tax is 10.64"
    ]


def test_the_orders_tax_lines_must_add_up_to_the_total_tax():
    broken = changed(TAX_EXCLUDED, lambda o: o["tax_lines"][0].update(amount="6.45"))
    assert totals_problems(broken) == ["the order's tax lines add up to 6.45 but total tax is 6.54"]


def test_rounding_within_one_minor_unit_per_line_passes():
    # three lines of 3 x 3.333 (stated to 4 places) round each to a cent: total 29.99 or 30.00
    lines = [line(n, f"S{n}", 3, "3.3333", total="10.00") for n in (1, 2, 3)]
    assert totals_problems(order(lines, ("29.99", "0.00", "0.00", "0.00", "29.99"))) == []
    assert totals_problems(order(lines, ("29.97", "0.00", "0.00", "0.00", "29.97"))) == []
    assert totals_problems(order(lines, ("29.96", "0.00", "0.00", "0.00", "29.96"))) == [
        "lines add up to 30.00 after discounts but subtotal is 29.96"
    ]


def test_the_tolerance_is_a_minor_unit_of_the_orders_currency():
    yen = order(
        [line(1, "TEA", 3, "500", total="1500")], ("1500", "0", "0", "0", "1501"), currency="JPY"
    )
    assert totals_problems(yen) == []  # 1 yen off, 1 line
    yen["totals"]["total"] = "1502"
    assert totals_problems(yen) == ["subtotal 1500 + shipping 0 + tax 0 = 1500 but total is 1502"]
    dinar = order(
        [line(1, "OUD", 1, "12.345", total="12.345")],
        ("12.345", "0", "0", "0", "12.347"),
        currency="BHD",
    )
    assert totals_problems(dinar) == [
        "subtotal 12.345 + shipping 0.000 + tax 0.000 = 12.345 but total is 12.347"
    ]


def test_lines_that_state_no_tax_are_not_compared_with_the_total_tax():
    # an order from an app: no tax lines anywhere, 3.14 of tax on 38.00 stated on the order
    minimal = order(
        [line(1, "MUG", 2, "12.00", total="24.00"), line(2, "SOCK", 1, "14.00", total="14.00")],
        ("38.00", "0.00", "0.00", "3.14", "41.14"),
    )
    assert totals_problems(minimal) == []


def test_fees_are_part_of_the_total():
    # net 91.43 + fee 2.10 + shipping 4.16 + tax 18.56 = 116.25 (a WooCommerce gift wrap)
    with_fee = order(
        [
            line(1, "HOOD", 1, "49.58", tax="9.42", total="49.58"),
            line(2, "TEE", 2, "20.925", tax="7.95", total="41.85"),
        ],
        ("91.43", "0.00", "4.16", "18.56", "116.25"),
        shipping=[rate("4.16", tax="0.79")],
        fees=[{"title": "Gift wrap", "amount": "2.10", "tax": "0.40", "tax_lines": []}],
    )
    assert totals_problems(with_fee) == []
    with_fee["fee_lines"] = []
    assert totals_problems(with_fee) == [
        "line, shipping and fee taxes add up to 18.16 but total tax is 18.56",
        "subtotal 91.43 + shipping 4.16 + tax 18.56 = 114.15 but total is 116.25",
    ]


def test_money_as_float_or_a_missing_figure_is_refused_naming_it():
    with pytest.raises(FilterError, match=r"refusing the float 85\.74.*\(totals\.total\)"):
        totals_problems(changed(TAX_EXCLUDED, lambda o: o["totals"].update(total=85.74)))
    with pytest.raises(FilterError, match=r"lines\[1\]\.unit_price is missing"):
        totals_problems(changed(TAX_EXCLUDED, lambda o: o["lines"][1].pop("unit_price")))
    with pytest.raises(FilterError, match="not an ISO 4217"):
        totals_problems(changed(TAX_EXCLUDED, lambda o: o.update(currency="EURO")))


def test_totals_problems_is_a_filter_for_a_flows_condition():
    env = make_environment()
    to_review = compile_condition(env, "record | totals_problems")
    assert to_review({"record": TAX_EXCLUDED}) is False
    assert to_review({"record": changed(TAX_EXCLUDED, lambda o: o["totals"].update(total="1"))})
    reasons = compile_value(env, "{{ record | totals_problems | join('; ') }}")
    assert reasons({"record": TAX_INCLUDED}) == ""


# -- refunds ----------------------------------------------------------------------------------


def refund(lines, total, *, shipping="0.00", shipping_tax="0.00", adjustments=(), included=False):
    return {
        "currency": "USD",
        "taxes_included": included,
        "refund": {
            "lines": [{"line_no": n, "amount": a, "tax": t} for n, (a, t) in enumerate(lines, 1)],
            "shipping": shipping,
            "shipping_tax": shipping_tax,
            "adjustments": [
                {"kind": "refund_discrepancy", "amount": a, "tax": "0.00", "reason": None}
                for a in adjustments
            ],
            "transactions": [],
            "total": total,
        },
    }


def test_a_refund_adds_up_from_lines_tax_shipping_and_adjustments():
    # 19.50 + 1.61 + shipping 9.90 + 0.82 - 5.00 kept back = 26.83
    kept_back = refund(
        [("19.50", "1.61")], "26.83", shipping="9.90", shipping_tax="0.82", adjustments=["-5.00"]
    )
    assert refund_problems(kept_back) == []
    # taxes included: 119.00 contains its 19.00 of VAT
    assert refund_problems(refund([("119.00", "19.00")], "119.00", included=True)) == []


def test_a_refund_that_does_not_add_up_names_its_parts_and_what_was_paid_back():
    assert refund_problems(refund([("24.90", "2.06")], "20.00", shipping="5.00")) == [
        "refunded lines 24.90 + tax 2.06 + shipping 5.00 = 31.96 but 20.00 was paid back"
    ]
    assert refund_problems(refund([], "10.00")) == [
        "refunded lines 0.00 = 0.00 but 10.00 was paid back"
    ]


def test_the_refund_check_is_a_filter_too():
    condition = compile_condition(make_environment(), "record | refund_problems")
    assert condition({"record": refund([("5.00", "0.00")], "5.00")}) is False
    assert condition({"record": refund([("5.00", "0.00")], "6.00")}) is True


# -- shares and rates -------------------------------------------------------------------------


def test_prorate_takes_a_share_of_an_amount_rounded_half_up():
    assert prorate("4.11", 1, 2) == "2.06"  # 2.055
    assert prorate("3.70", 1, 2) == "1.85"
    assert prorate(Decimal("44.82"), 1, 2) == "22.41"
    assert prorate("10", 1, 3) == "3.33"
    with pytest.raises(FilterError, match="whole is zero"):
        prorate("10", 1, 0)
    with pytest.raises(FilterError, match="float"):
        prorate(4.11, 1, 2)


@pytest.mark.parametrize(
    ("value", "percent", "expected"),
    [
        (Decimal("0.0825"), False, "0.0825"),
        ("0.190", False, "0.19"),
        (0.0825, False, "0.0825"),  # a rate is no money: a float is read by its text
        (20, True, "0.2"),
        (Decimal("8.25"), True, "0.0825"),
        ("0", True, "0"),
    ],
)
def test_ratio_writes_a_rate_as_a_plain_fraction(value, percent, expected):
    assert ratio(value, percent) == expected
