"""Deterministic web-shop orders for the benchmarks, streamed to an NDJSON file.

    .venv/bin/python bench/gen_orders.py OUT.ndjson --records 100000 [--seed 1]
        [--pickup 0.2] [--malformed 0.01] [--invalid 0.01]

Each line is a Shopify REST order resource in the shape RETAIL.md describes and
``mappings/shopify_order_to_canonical.yaml`` reads (see tests/fixtures/shopify_orders.ndjson):
ids above 2**53, money as decimal strings (and in ``*_set`` pairs), 1-5 line items with
tax lines and some discounts, a customer (or a guest), addresses, shipping lines, and the
order's fulfillment orders embedded as ``fulfillment_orders``, whose first
``delivery_method.method_type`` makes a pickup (``PICK_UP``, no shipping address and no
shipping lines), local or shipped order.

The same seed and options always give the same bytes. Orders are written one at a time,
so a file of any size is generated in constant memory.

- ``--malformed F``: that fraction of lines is cut short (not JSON): the source dead-letters
  them with their line number.
- ``--invalid F``: that fraction of orders parses and maps but breaks the canonical schema
  (a line with quantity 0): the validate step dead-letters them.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
from decimal import ROUND_HALF_UP, Decimal
from pathlib import Path
from typing import IO

ORDER_ID_BASE = 5_300_000_000_000_000_000  # every id is above 2**53 (~9.007e15)
LINE_ID_BASE = 14_000_000_000_000_000_000
CUSTOMER_ID_BASE = 7_300_000_000_000_000_000
FULFILLMENT_ID_BASE = 6_600_000_000_000_000_000
SHIPPING_ID_BASE = 4_400_000_000_000_000_000
LOCATION_WAREHOUSE = 61_500_000_000_000_000_001
LOCATION_STORES = [61_500_000_000_000_000_011 + i for i in range(8)]

CENT = Decimal("0.01")

PRODUCTS = [
    # sku, title, variant title, price
    ("TEE-BLK-M", "Organic Tee", "Black / M", "24.90"),
    ("TEE-WHT-L", "Organic Tee", "White / L", "24.90"),
    ("HOOD-GRY-S", "Zip Hoodie", "Grey / S", "59.00"),
    ("CAP-NAVY", "Canvas Cap", None, "19.50"),
    ("SOCK-3PK", "Wool Socks 3-pack", None, "14.00"),
    ("BOTTLE-750", "Steel Bottle 750 ml", None, "29.99"),
    ("MUG-ENAMEL", "Enamel Mug", None, "12.00"),
    ("TOTE-CANVAS", "Canvas Tote", None, "18.00"),
    ("JACKET-RAIN-L", "Rain Jacket", "Olive / L", "129.00"),
    ("BEANIE-RED", "Merino Beanie", "Red", "22.50"),
]
MARKETS = [
    # currency, tax title, rate, taxes included, carrier code, shipping price
    ("USD", "Sales tax", Decimal("0.0825"), False, "UPS_GROUND", "9.90"),
    ("EUR", "VAT", Decimal("0.19"), True, "DHL_PAKET", "4.95"),
    ("GBP", "VAT", Decimal("0.20"), True, "ROYAL_MAIL_48", "3.99"),
    ("CAD", "Sales tax", Decimal("0.13"), False, "CANADA_POST_EXP", "12.00"),
]
FIRST = ["Ana", "Tom", "Li", "Sam", "Marie", "Jonas", "Aiko", "Omar", "Eva", "Luca", "Zoe"]
LAST = ["Ruiz", "Becker", "Wei", "Okafor", "Dubois", "Berg", "Sato", "Haddad", "Nowak", "Rossi"]
STREETS = ["Congress Ave", "Main St", "Hauptstrasse", "High Street", "Rue de Rivoli", "King St"]
CITIES = [
    ("Austin", "Texas", "TX", "78701", "United States", "US"),
    ("Berlin", "Berlin", "BE", "10115", "Germany", "DE"),
    ("London", "England", "ENG", "EC1A 1BB", "United Kingdom", "GB"),
    ("Toronto", "Ontario", "ON", "M5H 2N2", "Canada", "CA"),
    ("Paris", "Paris", None, "75001", "France", "FR"),
]
FINANCIAL = ["paid"] * 8 + ["pending", "authorized", "partially_refunded", "expired"]
TAGS = ["", "vip", "web", "vip, web", "wholesale", "gift, web"]


def money(amount: Decimal, currency: str) -> dict:
    text = str(amount)
    return {
        "shop_money": {"amount": text, "currency_code": currency},
        "presentment_money": {"amount": text, "currency_code": currency},
    }


def _tax(amount: Decimal, rate: Decimal, included: bool) -> Decimal:
    if included:
        return (amount - amount / (1 + rate)).quantize(CENT, ROUND_HALF_UP)
    return (amount * rate).quantize(CENT, ROUND_HALF_UP)


def _address(rnd: random.Random, first: str, last: str, city: tuple) -> dict:
    name, province, province_code, zip_code, country, country_code = city
    return {
        "first_name": first,
        "last_name": last,
        "name": f"{first} {last}",
        "company": rnd.choice([None, None, None, "Acme GmbH"]),
        "address1": f"{rnd.randint(1, 999)} {rnd.choice(STREETS)}",
        "address2": rnd.choice([None, None, "Suite 210", "Apt 4"]),
        "city": name,
        "province": province,
        "province_code": province_code,
        "zip": zip_code,
        "country": country,
        "country_code": country_code,
        "phone": rnd.choice([None, "+15125550101", "+4915155501030"]),
        "latitude": None,
        "longitude": None,
    }


def order(n: int, rnd: random.Random, *, pickup: float, invalid: bool) -> dict:
    """The ``n``-th order (0-based) drawn from ``rnd``."""
    order_id = ORDER_ID_BASE + n
    currency, tax_title, rate, included, carrier, ship_price = rnd.choice(MARKETS)
    roll = rnd.random()
    method = "PICK_UP" if roll < pickup else "LOCAL" if roll < pickup + 0.05 else "SHIPPING"
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    guest = rnd.random() < 0.05
    email = None if rnd.random() < 0.03 else f"{first}.{last}{n}@example.com".lower()
    city = rnd.choice(CITIES)
    day = 1 + n % 28
    created = f"2024-03-{day:02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:02-05:00"
    updated = f"2024-03-{day:02d}T23:59:59-05:00"

    lines = []
    subtotal = discounts = tax_total = Decimal(0)  # immutable, so sharing the zero is fine
    for i in range(rnd.randint(1, 5)):
        product = rnd.randrange(len(PRODUCTS))
        sku, title, variant, price_text = PRODUCTS[product]
        price = Decimal(price_text)
        quantity = rnd.randint(1, 3)
        if invalid and i == 0:
            quantity = 0  # the canonical schema wants at least 1
        discount = (price * quantity / 10).quantize(CENT) if rnd.random() < 0.2 else Decimal(0)
        line_amount = price * quantity - discount
        tax = _tax(line_amount, rate, included)
        subtotal += line_amount
        discounts += discount
        tax_total += tax
        allocations = (
            [
                {
                    "amount": str(discount),
                    "amount_set": money(discount, currency),
                    "discount_application_index": 0,
                }
            ]
            if discount
            else []
        )
        lines.append(
            {
                "id": LINE_ID_BASE + n * 10 + i,
                "admin_graphql_api_id": f"gid://shopify/LineItem/{LINE_ID_BASE + n * 10 + i}",
                "variant_id": 8_100_000_000_000_000_000 + product,
                "product_id": 8_099_999_999_999_999_000 + product,
                "sku": sku,
                "title": title,
                "variant_title": variant,
                "name": f"{title} - {variant}" if variant else title,
                "vendor": "Flowyard Demo Co",
                "quantity": quantity,
                "price": price_text,
                "price_set": money(price, currency),
                "total_discount": str(discount.quantize(CENT)),
                "discount_allocations": allocations,
                "tax_lines": [
                    {
                        "title": tax_title,
                        "rate": float(rate),
                        "price": str(tax),
                        "price_set": money(tax, currency),
                    }
                ],
                "requires_shipping": method != "PICK_UP",
                "taxable": True,
                "gift_card": False,
                "fulfillment_status": None,
            }
        )

    shipping_lines = []
    shipping = Decimal(0)
    if method != "PICK_UP":
        shipping = Decimal("0.00") if method == "LOCAL" else Decimal(ship_price)
        ship_tax = _tax(shipping, rate, included)
        tax_total += ship_tax
        shipping_lines.append(
            {
                "id": SHIPPING_ID_BASE + n,
                "code": "LOCAL_DELIVERY" if method == "LOCAL" else carrier,
                "title": "Local delivery" if method == "LOCAL" else "Standard",
                "source": "shopify",
                "price": str(shipping),
                "discounted_price": str(shipping),
                "price_set": money(shipping, currency),
                "tax_lines": [
                    {
                        "title": "Tax",
                        "rate": float(rate),
                        "price": str(ship_tax),
                        "price_set": money(ship_tax, currency),
                    }
                ],
                "discount_allocations": [],
            }
        )
    total = subtotal + shipping + (Decimal(0) if included else tax_total)
    line_items_price = subtotal + discounts
    customer_id = CUSTOMER_ID_BASE + rnd.randint(1, 50_000)
    phone = rnd.choice([None, None, "+15125550101"])
    address = _address(rnd, first, last, city)
    fulfillment = "fulfilled" if rnd.random() < 0.15 else None
    store = rnd.choice(LOCATION_STORES)
    return {
        "id": order_id,
        "admin_graphql_api_id": f"gid://shopify/Order/{order_id}",
        "name": f"#{1001 + n}",
        "order_number": 1001 + n,
        "email": email,
        "phone": phone,
        "contact_email": email,
        "created_at": created,
        "processed_at": created,
        "updated_at": updated,
        "cancelled_at": updated if rnd.random() < 0.02 else None,
        "cancel_reason": None,
        "closed_at": updated if fulfillment else None,
        "currency": currency,
        "presentment_currency": currency,
        "financial_status": rnd.choice(FINANCIAL),
        "fulfillment_status": fulfillment,
        "taxes_included": included,
        "tags": rnd.choice(TAGS),
        "note": None,
        "note_attributes": [],
        "source_name": "web",
        "test": False,
        "total_line_items_price": str(line_items_price),
        "subtotal_price": str(subtotal),
        "total_discounts": str(discounts.quantize(CENT)),
        "total_tax": str(tax_total),
        "total_price": str(total),
        "total_price_set": money(total, currency),
        "subtotal_price_set": money(subtotal, currency),
        "total_tax_set": money(tax_total, currency),
        "total_discounts_set": money(discounts.quantize(CENT), currency),
        "total_shipping_price_set": money(shipping.quantize(CENT), currency),
        "customer": None
        if guest
        else {
            "id": customer_id,
            "admin_graphql_api_id": f"gid://shopify/Customer/{customer_id}",
            "email": email,
            "first_name": first,
            "last_name": last,
            "phone": phone,
            "state": "enabled",
            "verified_email": email is not None,
        },
        "billing_address": address,
        "shipping_address": None if method == "PICK_UP" else address,
        "line_items": lines,
        "shipping_lines": shipping_lines,
        "refunds": [],
        "fulfillment_orders": [
            {
                "id": FULFILLMENT_ID_BASE + n,
                "assigned_location_id": store if method == "PICK_UP" else LOCATION_WAREHOUSE,
                "status": "closed" if fulfillment else "open",
                "delivery_method": {"method_type": method},
            }
        ],
    }


def write_orders(
    out: IO[str],
    records: int,
    *,
    seed: int = 1,
    pickup: float = 0.2,
    malformed: float = 0.0,
    invalid: float = 0.0,
) -> dict[str, int]:
    """Write ``records`` NDJSON lines to ``out``; returns how many of each kind."""
    rnd = random.Random(seed)
    faults = random.Random(seed + 1)  # separate, so the orders do not depend on the fractions
    counts = {"lines": 0, "malformed": 0, "invalid": 0, "pickup": 0}
    for n in range(records):
        fault = faults.random()
        bad = fault < malformed
        wrong = not bad and fault < malformed + invalid
        data = order(n, rnd, pickup=pickup, invalid=wrong)
        line = json.dumps(data, separators=(",", ":"))
        if bad:
            line = line[: len(line) // 2]  # cut mid-way: not JSON
            counts["malformed"] += 1
        elif wrong:
            counts["invalid"] += 1
        elif data["fulfillment_orders"][0]["delivery_method"]["method_type"] == "PICK_UP":
            counts["pickup"] += 1
        out.write(line + "\n")
        counts["lines"] += 1
    return counts


def generate(path: str | Path, records: int, **options: float) -> dict[str, int]:
    """Write ``records`` orders to ``path`` (replaced); returns the counts of each kind."""
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as out:
        return write_orders(out, records, **options)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("out", help="the NDJSON file to write ('-' for stdout)")
    parser.add_argument("--records", "-n", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--pickup", type=float, default=0.2, help="fraction of pickup orders")
    parser.add_argument("--malformed", type=float, default=0.0, help="fraction of cut lines")
    parser.add_argument(
        "--invalid", type=float, default=0.0, help="fraction of orders the schema refuses"
    )
    args = parser.parse_args(argv)
    options = {
        "seed": args.seed,
        "pickup": args.pickup,
        "malformed": args.malformed,
        "invalid": args.invalid,
    }
    if args.out == "-":
        counts = write_orders(sys.stdout, args.records, **options)
    else:
        counts = generate(args.out, args.records, **options)
    print(json.dumps(counts), file=sys.stderr)


if __name__ == "__main__":
    main()
