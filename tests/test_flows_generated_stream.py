"""The shipped ERP flows on a generator-made stream of 1,000 web-shop records in the
documented shape (bench/gen_orders.py, bench/gen_refunds.py), run with `flowyard run
--dry-run`: nothing is looked up or sent, and every step before the first ERP lookup is
checked for real (the mapping, the canonical schema, the order's or refund's arithmetic,
the payment policy's checks). None of the 1,000 may be dead-lettered there; what cannot
be booked without a person (orders whose tax lines do not name their tax, refunds of
money only) waits in review, and voided orders are filtered.
"""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal

import pytest

from bench.gen_orders import generate as generate_orders
from bench.gen_refunds import generate as generate_refunds
from tests.conftest import invoke
from tests.support.flows import FLOWS


def dry_run(flow: str, tmp_path, **run_vars: str) -> dict:
    args = ["run", FLOWS / f"{flow}.yaml", "--dry-run", "--state", tmp_path / "state.db"]
    for key, value in {"out_dir": str(tmp_path / "out"), **run_vars}.items():
        args += ["--var", f"{key}={value}"]
    run = invoke(*args, "--output", "json", env={"TRYTON_PASSWORD": "not-used-by-a-dry-run"})
    assert "Traceback" not in run.stderr, run.stderr
    return json.loads(run.stdout)


def expected_order_outcome(order: dict) -> str:
    """What the flow's checks before the ERP make of a generated order, from its payload."""
    if order["financial_status"] in ("voided", "expired"):
        return "filtered"  # never charged (an expired authorization is void): nothing to book
    stated = [t for i in order["line_items"] for t in i.get("tax_lines") or []] + [
        t for s in order.get("shipping_lines") or [] for t in s.get("tax_lines") or []
    ]
    if Decimal(order["total_tax"]) and not stated:
        return "review"  # tax charged, but no tax line says which: finance books it
    return "done"  # in a dry run: as far as the first ERP lookup


@pytest.mark.parametrize("unpaid", ["hold", "quote"])
def test_a_thousand_generated_orders_pass_the_mapping_and_the_checks_of_order_to_erp(
    tmp_path, unpaid
):
    orders = tmp_path / "orders.ndjson"
    generate_orders(orders, 1000, seed=7)
    summary = dry_run("order_to_erp", tmp_path, orders=str(orders), unpaid=unpaid)
    counts = summary["counts"]
    assert counts["read"] == 1000 and counts["dead_lettered"] == 0, summary
    expected = Counter(
        expected_order_outcome(json.loads(line, parse_float=Decimal))
        for line in orders.read_text().splitlines()
    )
    assert {k: counts[k] for k in expected} == dict(expected)
    assert expected["done"] > 700 and expected["review"] > 0 and expected["filtered"] > 0


def test_a_thousand_generated_refunds_pass_the_mapping_and_the_checks_of_return_to_refund(
    tmp_path,
):
    refunds = tmp_path / "refunds.ndjson"
    generate_refunds(refunds, 1000, seed=7)
    money_only = sum(
        1 for line in refunds.read_text().splitlines() if not json.loads(line)["refund_line_items"]
    )
    summary = dry_run("return_to_refund", tmp_path, refunds=str(refunds))
    counts = summary["counts"]
    assert counts["read"] == 1000 and counts["dead_lettered"] == 0, summary
    assert counts["review"] == money_only > 0  # a refund of money only: a person books it
    assert counts["done"] == 1000 - money_only
