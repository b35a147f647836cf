"""Deterministic web-shop orders for the benchmarks, streamed to an NDJSON file.

    .venv/bin/python bench/gen_orders.py OUT.ndjson --records 100000 [--seed 1]
        [--pickup 0.2] [--malformed 0.01] [--invalid 0.01]

Each line is a Shopify REST order resource in the shape RETAIL.md describes and
``mappings/shopify_order_to_canonical.yaml`` reads (see tests/fixtures/shopify/): ids above
2**53, money as decimal strings (and in ``*_set`` pairs), 1-5 line items, a customer (or a
guest), addresses, shipping lines. What real payloads do, at realistic rates:

- shops in four markets: US and Canadian tax on top of prices (two tax lines per line in
  the US: state and city), EU and UK VAT included in prices (``taxes_included: true``);
- discount codes (``discount_codes``, ``discount_applications``) spread over the lines as
  ``discount_allocations``, tax on the discounted amounts; some free-shipping codes;
- unpaid orders (``pending``, ``authorized``), refunded and voided ones;
- pickup orders told as Shopify tells them in the order itself: a shipping line "Pickup at
  ... store" and no shipping address (no fulfillment orders are embedded); local delivery;
- one order in seven as apps, imports and older API versions send it: no
  fulfillment_status, total_discounts, total_shipping_price_set, tags, phone, line names,
  line tax_lines (or discount_allocations where there is no discount), taxes_included
  where it is false; elsewhere optional fields (note, phone, company, customer) are absent
  or null now and then; some orders carry a note, note attributes and an engraving.

Every generated order adds up (``engine.money.totals_problems`` finds nothing), except the
``--invalid`` ones. The same seed and options always give the same bytes. Orders are
written one at a time, so a file of any size is generated in constant memory.

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
SHIPPING_ID_BASE = 4_400_000_000_000_000_000

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
    # currency, taxes (title, rate), taxes included, carrier code, shipping price
    ("USD", (("TX State Tax", "0.0625"), ("Austin City Tax", "0.02")), False, "UPS_GROUND", "9.90"),
    ("EUR", (("DE MwSt", "0.19"),), True, "DHL_PAKET", "4.95"),
    ("GBP", (("GB VAT", "0.20"),), True, "ROYAL_MAIL_48", "3.99"),
    ("CAD", (("HST", "0.13"),), False, "CANADA_POST_EXP", "12.00"),
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
STORES = ["Congress Ave", "King St", "Hauptstrasse", "High Street"]
FINANCIAL = ["paid"] * 8 + ["pending", "authorized", "partially_refunded", "expired"]
TAGS = ["", "vip", "web", "vip, web", "wholesale", "gift, web"]
CODES = [("SPRING10", "percentage", Decimal("0.10")), ("WELCOME15", "percentage", Decimal("0.15"))]
MINIMAL = 1 / 7  # orders in the reduced shape of apps, imports and older API versions


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


def _tax_lines(amount: Decimal, taxes: tuple, included: bool, currency: str) -> list[dict]:
    lines = []
    for title, rate in taxes:
        tax = _tax(amount, Decimal(rate), included)
        lines.append(
            {
                "title": title,
                "rate": float(rate),
                "price": str(tax),
                "price_set": money(tax, currency),
            }
        )
    return lines


def _allocation(amount: Decimal, currency: str) -> dict:
    return {
        "amount": str(amount),
        "amount_set": money(amount, currency),
        "discount_application_index": 0,
    }


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
    currency, taxes, included, carrier, ship_price = rnd.choice(MARKETS)
    roll = rnd.random()
    method = "pickup" if roll < pickup else "local" if roll < pickup + 0.05 else "ship"
    first, last = rnd.choice(FIRST), rnd.choice(LAST)
    guest = rnd.random() < 0.05
    email = None if rnd.random() < 0.03 else f"{first}.{last}{n}@example.com".lower()
    city = rnd.choice(CITIES)
    day = 1 + n % 28
    created = f"2024-03-{day:02d}T{rnd.randint(0, 23):02d}:{rnd.randint(0, 59):02d}:02-05:00"
    updated = f"2024-03-{day:02d}T23:59:59-05:00"
    code = rnd.choice(CODES) if rnd.random() < 0.15 else None
    free_shipping = method == "ship" and code is None and rnd.random() < 0.05

    lines = []
    subtotal = discounts = tax_total = Decimal(0)  # immutable, so sharing the zero is fine
    for i in range(rnd.randint(1, 5)):
        product = rnd.randrange(len(PRODUCTS))
        sku, title, variant, price_text = PRODUCTS[product]
        price = Decimal(price_text)
        quantity = rnd.randint(1, 3)
        if invalid and i == 0:
            quantity = 0  # the canonical schema wants at least 1
        discount = (
            (price * quantity * code[2]).quantize(CENT, ROUND_HALF_UP) if code else Decimal(0)
        )
        line_amount = price * quantity - discount
        line_taxes = _tax_lines(line_amount, taxes, included, currency)
        subtotal += line_amount
        discounts += discount
        tax_total += sum((Decimal(t["price"]) for t in line_taxes), Decimal(0))
        line_id = LINE_ID_BASE + n * 10 + i
        properties = []
        if sku == "BOTTLE-750" and rnd.random() < 0.3:
            properties = [{"name": "Engraving", "value": f"For {rnd.choice(FIRST)}"}]
        lines.append(
            {
                "id": line_id,
                "admin_graphql_api_id": f"gid://shopify/LineItem/{line_id}",
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
                "discount_allocations": [_allocation(discount, currency)] if discount else [],
                "tax_lines": line_taxes,
                "properties": properties,
                "requires_shipping": method != "pickup",
                "taxable": True,
                "gift_card": False,
                "fulfillment_status": None,
            }
        )

    shipping = shipping_discount = Decimal(0)
    if method == "pickup":
        store = rnd.choice(STORES)
        rates = [("Pickup", f"Pickup at {store} store", Decimal("0.00"))]
    elif method == "local":
        rates = [("LOCAL_DELIVERY", "Local delivery", Decimal("0.00"))]
    else:
        rates = [(carrier, "Standard", Decimal(ship_price))]
    shipping_lines = []
    for code_name, rate_title, price in rates:
        discount = price if free_shipping else Decimal(0)
        ship_taxes = _tax_lines(price - discount, taxes, included, currency) if price else []
        tax_total += sum((Decimal(t["price"]) for t in ship_taxes), Decimal(0))
        shipping += price
        shipping_discount += discount
        shipping_lines.append(
            {
                "id": SHIPPING_ID_BASE + n,
                "code": code_name,
                "title": rate_title,
                "source": "shopify",
                "price": str(price),
                "discounted_price": str(price - discount),
                "price_set": money(price, currency),
                "tax_lines": ship_taxes,
                "discount_allocations": [_allocation(discount, currency)] if discount else [],
            }
        )
    applications, codes = [], []
    if code or free_shipping:
        name, kind, value = code or ("FREESHIP", "shipping", Decimal(1))
        applications = [
            {
                "target_type": "shipping_line" if kind == "shipping" else "line_item",
                "type": "discount_code",
                "value": str(value * 100),
                "value_type": "percentage",
                "allocation_method": "across",
                "target_selection": "all",
                "code": name,
            }
        ]
        amount = (discounts + shipping_discount).quantize(CENT)
        codes = [{"code": name, "amount": str(amount), "type": kind}]
    total = subtotal + shipping - shipping_discount + (Decimal(0) if included else tax_total)
    all_discounts = (discounts + shipping_discount).quantize(CENT)
    customer_id = CUSTOMER_ID_BASE + rnd.randint(1, 50_000)
    phone = rnd.choice([None, None, "+15125550101"])
    address = _address(rnd, first, last, city)
    fulfillment = "fulfilled" if rnd.random() < 0.15 else None
    financial = rnd.choice(FINANCIAL)
    note_roll = rnd.random()
    data = {
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
        "financial_status": financial,
        "fulfillment_status": fulfillment,
        "taxes_included": included,
        "tags": rnd.choice(TAGS),
        "note": "Please gift wrap" if note_roll < 0.05 else None,
        "note_attributes": [{"name": "gift_message", "value": "Enjoy!"}]
        if note_roll < 0.03
        else [],
        "source_name": "web",
        "test": False,
        "payment_gateway_names": ["bogus"] if financial == "pending" else ["shopify_payments"],
        "discount_codes": codes,
        "discount_applications": applications,
        "total_line_items_price": str((subtotal + discounts).quantize(CENT)),
        "subtotal_price": str(subtotal),
        "total_discounts": str(all_discounts),
        "total_tax": str(tax_total),
        "total_price": str(total),
        "total_price_set": money(total, currency),
        "subtotal_price_set": money(subtotal, currency),
        "total_tax_set": money(tax_total, currency),
        "total_discounts_set": money(all_discounts, currency),
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
        "shipping_address": None if method == "pickup" else address,
        "line_items": lines,
        "shipping_lines": shipping_lines,
        "refunds": [],
    }
    if rnd.random() < MINIMAL:
        _reduce(data)
    elif guest and rnd.random() < 0.5:
        del data["customer"]  # some guest orders leave the key out altogether
    return data


def _reduce(data: dict) -> None:
    """``data`` as apps, imports and older API versions send it (nothing needed to add up)."""
    for key in ("fulfillment_status", "total_discounts", "total_shipping_price_set", "tags"):
        data.pop(key, None)
    for key in ("phone", "contact_email", "processed_at", "note", "note_attributes"):
        data.pop(key, None)
    for key in ("admin_graphql_api_id", "total_price_set", "subtotal_price_set"):
        data.pop(key, None)
    for key in ("total_tax_set", "total_discounts_set", "discount_applications"):
        data.pop(key, None)
    if not data["taxes_included"]:
        del data["taxes_included"]  # absent means false
    for rate in data["shipping_lines"]:
        for key in ("tax_lines", "price_set", "discounted_price"):
            rate.pop(key, None)
    free = all(Decimal(rate["price"]) == 0 for rate in data["shipping_lines"])
    if free and data["shipping_address"] is not None:
        del data["shipping_lines"]  # free local delivery, sent without its shipping line
    if data.get("customer"):
        data["customer"].pop("phone", None)
    for line in data["line_items"]:
        for key in ("name", "tax_lines", "admin_graphql_api_id", "price_set", "properties"):
            line.pop(key, None)
        if not line["discount_allocations"]:
            del line["discount_allocations"]


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
        elif data["shipping_address"] is None:  # pickup orders ship nothing
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
