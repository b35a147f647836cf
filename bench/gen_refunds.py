"""Deterministic Shopify refunds of bench/gen_orders.py's orders, streamed to an NDJSON file.

    .venv/bin/python bench/gen_refunds.py OUT.ndjson --records 1000 [--seed 1]

Each line is a Shopify REST refund resource (``GET /orders/{id}/refunds.json``) in the
shape RETAIL.md describes and ``mappings/shopify_refund_to_canonical.yaml`` reads (see
tests/fixtures/shopify/refund_*.json), for one of the orders ``gen_orders.py`` writes
with the same seed (only orders that were charged and state their line taxes are
refunded). Each refund carries ``order_name`` (the order's ``name``), as the step that
collects refunds adds it, and ``taxes_included: true`` for the shops whose prices include
tax. What real refunds do, at realistic rates:

- one to all units of one line refunded, ``subtotal`` and ``total_tax`` prorated as
  Shopify states them, ``restock_type`` return / no_restock / cancel with a location;
- refunded shipping as an ``order_adjustments`` entry of kind ``shipping_refund``
  (negative, with its tax), sometimes money kept back as a ``refund_discrepancy``;
- a failed transaction before the successful one; a refund of money only (a goodwill
  amount, no line items); refunds in the older shape (no ``processed_at``,
  ``restock_type``, ``location_id``, ``subtotal``, ``total_tax``: the legacy ``restock``
  flag and the line item's price and tax lines);
- the money actually paid back is the successful ``kind: refund`` transactions.

The same seed and options always give the same bytes; refunds are written one at a time.
"""

from __future__ import annotations

import argparse
import random
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import IO

if __package__ in (None, ""):  # run as a script: the repository's packages are one up
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench import gen_orders  # noqa: E402
from connectors._json import dumps  # noqa: E402  (a Decimal as a JSON number, digit for digit)

REFUND_ID_BASE = 9_900_000_000_000_000_000
TRANSACTION_ID_BASE = 9_950_000_000_000_000_000
ADJUSTMENT_ID_BASE = 9_970_000_000_000_000_000
CENT = Decimal("0.01")
CHARGED = ("paid", "partially_refunded", "refunded")


def _cents(amount: Decimal) -> Decimal:
    return amount.quantize(CENT, ROUND_HALF_UP)


def _set(amount: Decimal, currency: str) -> dict:
    return gen_orders.money(_cents(amount), currency)


def refund(order: dict, n: int, rnd: random.Random) -> dict:
    """A refund of ``order`` (a gen_orders order), the ``n``-th refund written."""
    currency, included = order["currency"], bool(order.get("taxes_included"))
    refund_id = REFUND_ID_BASE + n
    created = order["updated_at"]
    legacy = rnd.random() < 0.1
    money_only = rnd.random() < 0.05
    items, goods, taxes = [], Decimal(0), Decimal(0)
    if not money_only:
        index = rnd.randrange(len(order["line_items"]))
        item = order["line_items"][index]
        quantity = rnd.randint(1, item["quantity"])
        discount = sum((Decimal(a["amount"]) for a in item.get("discount_allocations") or []), 0)
        line_amount = Decimal(item["price"]) * item["quantity"] - discount
        line_tax = sum((Decimal(t["price"]) for t in item["tax_lines"]), Decimal(0))
        subtotal = _cents(line_amount * quantity / item["quantity"])
        tax = _cents(line_tax * quantity / item["quantity"])
        goods, taxes = subtotal, tax
        restock = rnd.choice(["return", "return", "no_restock", "cancel"])
        entry = {
            "id": refund_id * 10 + 1,
            "line_item_id": item["id"],
            "quantity": quantity,
            "line_item": item,
        }
        if not legacy:
            entry.update(
                restock_type=restock,
                location_id=None if restock == "no_restock" else 61500000000000000001,
                subtotal=subtotal,
                total_tax=tax,
                subtotal_set=_set(subtotal, currency),
                total_tax_set=_set(tax, currency),
            )
        items.append(entry)

    # (kind, reason, amount, tax) as Shopify writes them: refunded shipping negative,
    # money kept back (a discrepancy) positive
    adjustments = []
    shipping_lines = order.get("shipping_lines") or []
    shipping = sum((Decimal(s["price"]) for s in shipping_lines), Decimal(0))
    ship_tax = sum(
        (Decimal(t["price"]) for s in shipping_lines for t in s.get("tax_lines") or []),
        Decimal(0),
    )
    if items and shipping and rnd.random() < 0.15:
        adjustments.append(("shipping_refund", "Shipping refund", -shipping, -ship_tax))
    if items and rnd.random() < 0.05:
        adjustments.append(("refund_discrepancy", "Refund discrepancy", Decimal("2.00"), 0))

    paid_back = goods + (Decimal(0) if included else taxes)
    for kind, _, amount, tax in adjustments:
        paid_back -= amount
        if kind == "shipping_refund" and not included:
            paid_back -= tax
    if money_only:
        paid_back = Decimal(rnd.choice(["5.00", "10.00", "15.00"]))
    transactions = []
    if rnd.random() < 0.05:
        transactions.append(_transaction(order, refund_id, 0, paid_back, "failure", created))
    transactions.append(_transaction(order, refund_id, 1, paid_back, "success", created))

    data = {
        "id": refund_id,
        "admin_graphql_api_id": f"gid://shopify/Refund/{refund_id}",
        "order_id": order["id"],
        "created_at": created,
        "note": rnd.choice([None, None, "damaged", "too small", "late delivery: goodwill"]),
        "user_id": None,
        "restock": bool(items) and rnd.random() < 0.7,
        "duties": [],
        "refund_line_items": items,
        "transactions": transactions,
        "order_adjustments": [
            {
                "id": ADJUSTMENT_ID_BASE + n * 10 + i,
                "order_id": order["id"],
                "refund_id": refund_id,
                "kind": kind,
                "reason": reason,
                "amount": str(_cents(amount)),
                "tax_amount": str(_cents(Decimal(tax))),
                "amount_set": _set(amount, currency),
                "tax_amount_set": _set(Decimal(tax), currency),
            }
            for i, (kind, reason, amount, tax) in enumerate(adjustments)
        ],
        "order_name": order["name"],
    }
    if not legacy:
        data["processed_at"] = created
    if included:
        data["taxes_included"] = True
    return data


def _transaction(
    order: dict, refund_id: int, i: int, amount: Decimal, status: str, when: str
) -> dict:
    return {
        "id": TRANSACTION_ID_BASE + (refund_id - REFUND_ID_BASE) * 10 + i,
        "order_id": order["id"],
        "kind": "refund",
        "gateway": "shopify_payments",
        "status": status,
        "amount": str(_cents(amount)),
        "currency": order["currency"],
        "processed_at": when,
        "parent_id": None,
    }


def write_refunds(out: IO[str], records: int, *, seed: int = 1) -> dict[str, int]:
    """Write ``records`` refunds to ``out``; returns how many orders were read for them."""
    rnd = random.Random(seed)  # the orders: the same draws as gen_orders.write_orders
    refunds = random.Random(seed + 2)
    counts = {"refunds": 0, "orders": 0}
    n = 0
    while counts["refunds"] < records:
        order = gen_orders.order(n, rnd, pickup=0.2, invalid=False)
        n += 1
        counts["orders"] += 1
        lines = order["line_items"]
        if order["financial_status"] not in CHARGED or not all("tax_lines" in i for i in lines):
            continue
        out.write(dumps(refund(order, counts["refunds"], refunds)) + "\n")
        counts["refunds"] += 1
    return counts


def generate(path: str | Path, records: int, seed: int = 1) -> dict[str, int]:
    """Write ``records`` refunds to ``path`` (replaced)."""
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        return write_refunds(out, records, seed=seed)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the NDJSON file to write ('-' for stdout)")
    parser.add_argument("--records", "-n", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    if args.out == "-":
        counts = write_refunds(sys.stdout, args.records, seed=args.seed)
    else:
        counts = generate(args.out, args.records, seed=args.seed)
    print(counts, file=sys.stderr)


if __name__ == "__main__":
    main()
