"""The shipped web-shop mappings on payloads in the platforms' documented shapes.

One test per fixture in tests/fixtures/shopify/ and tests/fixtures/woocommerce/ (their
READMEs say what each shows), each comparing the WHOLE canonical record with what the
payload says, field by field; then what cannot be mapped, reported at once; then which
fixtures add up (engine.money).
"""

from __future__ import annotations

import json
from decimal import Decimal
from pathlib import Path

import pytest

from engine.errors import MappingError
from engine.mapping import load_mapping
from engine.money import refund_problems, totals_problems
from engine.templates import make_environment
from engine.validation import compile_validator, load_schema

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = Path(__file__).resolve().parent / "fixtures"


@pytest.fixture(scope="module")
def mappings():
    env = make_environment()
    loaded = {}
    for path in sorted((ROOT / "mappings").glob("*_to_canonical.yaml")):
        mapping, problems = load_mapping(str(path), env)
        assert problems == [], problems
        loaded[path.stem] = mapping
    return loaded


@pytest.fixture(scope="module")
def validators():
    out = {}
    for model in ("order", "return"):
        schema, problems = load_schema(str(ROOT / f"mappings/canonical/{model}.schema.json"))
        assert problems == []
        out[model] = compile_validator(schema)
    return out


def payload(name: str):
    return json.loads((FIXTURES / name).read_text(encoding="utf-8"), parse_float=Decimal)


def canonical(mappings, validators, mapping: str, name: str, index: int | None = None) -> dict:
    """The fixture mapped and validated against its canonical schema."""
    record = payload(name) if index is None else payload(name)[index]
    out = mappings[mapping](record, {"vars": {}, "meta": {"key": str(record.get("id"))}})
    validators["order" if "order" in mapping else "return"](out)
    return out


def address(*, name, company, line1, line2, city, region, postal_code, country, phone):
    return {
        "name": name,
        "company": company,
        "line1": line1,
        "line2": line2,
        "city": city,
        "region": region,
        "postal_code": postal_code,
        "country": country,
        "phone": phone,
    }


def tax(title, rate, amount):
    return {"title": title, "rate": rate, "amount": amount}


ANA = address(
    name="Ana Ruiz",
    company=None,
    line1="500 Congress Ave",
    line2="Suite 210",
    city="Austin",
    region="TX",
    postal_code="78701",
    country="US",
    phone="+15125550101",
)
ANA_CUSTOMER = {
    "id": "7300000000000000101",
    "email": "ana.ruiz@example.com",
    "name": "Ana Ruiz",
    "phone": "+15125550101",
}
PAID_OPEN = {"financial": "paid", "fulfillment": "unfulfilled", "state": "open"}
UPS = {
    "code": "UPS_GROUND",
    "title": "Standard",
    "price": "9.90",
    "discount": "0.00",
    "tax": "0.82",
    "tax_lines": [tax("Sales tax", "0.0825", "0.82")],
}


def shopify_order(mappings, validators, name):
    return canonical(mappings, validators, "shopify_order_to_canonical", name)


# -- Shopify orders ---------------------------------------------------------------------------


def test_a_full_shopify_order(mappings, validators):
    assert shopify_order(mappings, validators, "shopify/order_full.json") == {
        "order_id": "shopify:5310000000000001101",
        "external_ids": {"channel_id": "5310000000000001101", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1101",
        "created_at": "2024-04-02T14:15:02Z",
        "updated_at": "2024-04-02T14:20:40Z",
        "status": PAID_OPEN,
        "currency": "USD",
        "taxes_included": False,
        "customer": ANA_CUSTOMER,
        "bill_to": ANA,
        "ship_to": ANA,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110101",
                "product_id": "8099999999999999001",
                "variant_id": "8100000000000000001",
                "sku": "TEE-BLK-M",
                "gtin": None,
                "title": "Organic Tee - Black / M",
                "quantity": 2,
                "unit_price": "24.90",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "4.11",
                "tax_lines": [tax("Sales tax", "0.0825", "4.11")],
                "total": "49.80",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "14100000000000110102",
                "product_id": "8099999999999999004",
                "variant_id": "8100000000000000004",
                "sku": "CAP-NAVY",
                "gtin": None,
                "title": "Canvas Cap",
                "quantity": 1,
                "unit_price": "19.50",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "1.61",
                "tax_lines": [tax("Sales tax", "0.0825", "1.61")],
                "total": "19.50",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [UPS],
        "totals": {
            "subtotal": "69.30",
            "discount": "0.00",
            "shipping": "9.90",
            "tax": "6.54",
            "total": "85.74",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": ["vip", "web"],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [tax("Sales tax", "0.0825", "6.54")],
        "fee_lines": [],
        "payment_methods": ["shopify_payments"],
    }


def test_a_minimal_shopify_order_gets_the_documented_defaults(mappings, validators):
    becker = address(
        name="Tom Becker",
        company=None,
        line1="12 Main St",
        line2=None,
        city="Springfield",
        region="IL",
        postal_code="62701",
        country="US",
        phone=None,
    )
    assert shopify_order(mappings, validators, "shopify/order_minimal.json") == {
        "order_id": "shopify:5310000000000001102",
        "external_ids": {"channel_id": "5310000000000001102", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1102",
        "created_at": "2024-04-03T16:02:00Z",
        "updated_at": "2024-04-03T16:02:00Z",
        "status": PAID_OPEN,  # no fulfillment_status: unfulfilled
        "currency": "USD",
        "taxes_included": False,  # absent: prices without tax
        "customer": {
            "id": "7300000000000000202",
            "email": "tom.becker@example.com",
            "name": "Tom Becker",
            "phone": None,  # neither the order nor the customer has one
        },
        "bill_to": becker,
        "ship_to": becker,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110201",
                "product_id": "8099999999999999007",
                "variant_id": "8100000000000000007",
                "sku": "MUG-ENAMEL",
                "gtin": None,
                "title": "Enamel Mug",  # no name: the title
                "quantity": 2,
                "unit_price": "12.00",
                "discount": "0.00",  # no discount allocations: no discount
                "discount_allocations": [],
                "tax": "0.00",  # no tax lines: no tax stated for the line
                "tax_lines": [],
                "total": "24.00",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "14100000000000110202",
                "product_id": "8099999999999999005",
                "variant_id": "8100000000000000005",
                "sku": "SOCK-3PK",
                "gtin": None,
                "title": "Wool Socks 3-pack",
                "quantity": 1,
                "unit_price": "14.00",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "0.00",
                "tax_lines": [],
                "total": "14.00",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [],  # absent: none
        "totals": {
            "subtotal": "38.00",
            "discount": "0.00",  # no total_discounts: the sum of the allocations
            "shipping": "0.00",  # no total_shipping_price_set: the sum of the shipping lines
            "tax": "3.14",
            "total": "41.14",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [],
        "fee_lines": [],
        "payment_methods": [],
    }


def test_a_guest_order_has_no_customer_id_or_name(mappings, validators):
    li = address(
        name="Li Wei",
        company=None,
        line1="100 King St W",
        line2=None,
        city="Toronto",
        region="ON",
        postal_code="M5X 1A9",
        country="CA",
        phone="+14165550199",
    )
    assert shopify_order(mappings, validators, "shopify/order_guest.json") == {
        "order_id": "shopify:5310000000000001103",
        "external_ids": {"channel_id": "5310000000000001103", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1103",
        "created_at": "2024-04-02T14:15:02Z",
        "updated_at": "2024-04-02T14:20:40Z",
        "status": PAID_OPEN,
        "currency": "CAD",
        "taxes_included": False,
        "customer": {
            "id": None,
            "email": "li.wei@example.com",
            "name": None,
            "phone": "+14165550199",
        },
        "bill_to": li,
        "ship_to": li,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110301",
                "product_id": "8099999999999999006",
                "variant_id": "8100000000000000006",
                "sku": "BOTTLE-750",
                "gtin": None,
                "title": "Steel Bottle 750 ml",
                "quantity": 1,
                "unit_price": "29.99",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "3.90",
                "tax_lines": [tax("HST", "0.13", "3.90")],
                "total": "29.99",
                "properties": [],
                "gift_card": False,
            }
        ],
        "shipping_lines": [
            {
                "code": "CANADA_POST_EXP",
                "title": "Expedited Parcel",
                "price": "12.00",
                "discount": "0.00",
                "tax": "1.56",
                "tax_lines": [tax("HST", "0.13", "1.56")],
            }
        ],
        "totals": {
            "subtotal": "29.99",
            "discount": "0.00",
            "shipping": "12.00",
            "tax": "5.46",
            "total": "47.45",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [tax("HST", "0.13", "5.46")],
        "fee_lines": [],
        "payment_methods": ["shopify_payments"],
    }


def test_a_shop_whose_prices_include_tax(mappings, validators):
    berg = address(
        name="Jonas Berg",
        company="Berg Design GmbH",
        line1="Hauptstrasse 5",
        line2=None,
        city="Berlin",
        region=None,
        postal_code="10115",
        country="DE",
        phone=None,
    )
    assert shopify_order(mappings, validators, "shopify/order_tax_included_eu.json") == {
        "order_id": "shopify:5310000000000001104",
        "external_ids": {"channel_id": "5310000000000001104", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1104",
        "created_at": "2024-04-04T14:40:00Z",
        "updated_at": "2024-04-04T14:41:10Z",
        "status": PAID_OPEN,
        "currency": "EUR",
        "taxes_included": True,
        "customer": {
            "id": "7300000000000000404",
            "email": "jonas.berg@example.com",
            "name": "Jonas Berg",
            "phone": None,
        },
        "bill_to": berg,
        "ship_to": berg,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110401",
                "product_id": "8099999999999999003",
                "variant_id": "8100000000000000003",
                "sku": "HOOD-GRY-S",
                "gtin": None,
                "title": "Zip Hoodie - Grey / S",
                "quantity": 1,
                "unit_price": "59.00",  # gross
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "9.42",  # 59.00 - 59.00 / 1.19, contained in the price
                "tax_lines": [tax("DE MwSt", "0.19", "9.42")],
                "total": "59.00",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "14100000000000110402",
                "product_id": "8099999999999999002",
                "variant_id": "8100000000000000002",
                "sku": "TEE-WHT-L",
                "gtin": None,
                "title": "Organic Tee - White / L",
                "quantity": 2,
                "unit_price": "24.90",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "7.95",
                "tax_lines": [tax("DE MwSt", "0.19", "7.95")],
                "total": "49.80",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [
            {
                "code": "DHL_PAKET",
                "title": "DHL Paket",
                "price": "4.95",
                "discount": "0.00",
                "tax": "0.79",
                "tax_lines": [tax("DE MwSt", "0.19", "0.79")],
            }
        ],
        "totals": {
            "subtotal": "108.80",
            "discount": "0.00",
            "shipping": "4.95",
            "tax": "18.16",
            "total": "113.75",  # subtotal + shipping: the tax is inside
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [tax("DE MwSt", "0.19", "18.16")],
        "fee_lines": [],
        "payment_methods": ["shopify_payments"],
    }


def test_two_tax_rates_on_every_line_and_on_shipping(mappings, validators):
    state, city = "0.0625", "0.02"
    assert shopify_order(mappings, validators, "shopify/order_multi_rate_tax.json") == {
        "order_id": "shopify:5310000000000001105",
        "external_ids": {"channel_id": "5310000000000001105", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1105",
        "created_at": "2024-04-02T14:15:02Z",
        "updated_at": "2024-04-02T14:20:40Z",
        "status": PAID_OPEN,
        "currency": "USD",
        "taxes_included": False,
        "customer": ANA_CUSTOMER,
        "bill_to": ANA,
        "ship_to": ANA,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110501",
                "product_id": "8099999999999999009",
                "variant_id": "8100000000000000009",
                "sku": "JACKET-RAIN-L",
                "gtin": None,
                "title": "Rain Jacket - Olive / L",
                "quantity": 1,
                "unit_price": "129.00",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "10.64",
                "tax_lines": [
                    tax("TX State Tax", state, "8.06"),
                    tax("Austin City Tax", city, "2.58"),
                ],
                "total": "129.00",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "14100000000000110502",
                "product_id": "8099999999999999010",
                "variant_id": "8100000000000000010",
                "sku": "BEANIE-RED",
                "gtin": None,
                "title": "Merino Beanie - Red",
                "quantity": 2,
                "unit_price": "22.50",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "3.71",
                "tax_lines": [
                    tax("TX State Tax", state, "2.81"),
                    tax("Austin City Tax", city, "0.90"),
                ],
                "total": "45.00",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [
            {
                "code": "UPS_GROUND",
                "title": "Standard",
                "price": "9.90",
                "discount": "0.00",
                "tax": "0.82",
                "tax_lines": [
                    tax("TX State Tax", state, "0.62"),
                    tax("Austin City Tax", city, "0.20"),
                ],
            }
        ],
        "totals": {
            "subtotal": "174.00",
            "discount": "0.00",
            "shipping": "9.90",
            "tax": "15.17",
            "total": "199.07",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [tax("TX State Tax", state, "11.49"), tax("Austin City Tax", city, "3.68")],
        "fee_lines": [],
        "payment_methods": ["shopify_payments"],
    }


def test_a_discount_code_and_its_allocations_per_line(mappings, validators):
    assert shopify_order(mappings, validators, "shopify/order_discount_code.json") == {
        "order_id": "shopify:5310000000000001106",
        "external_ids": {"channel_id": "5310000000000001106", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1106",
        "created_at": "2024-04-02T14:15:02Z",
        "updated_at": "2024-04-02T14:20:40Z",
        "status": PAID_OPEN,
        "currency": "USD",
        "taxes_included": False,
        "customer": ANA_CUSTOMER,
        "bill_to": ANA,
        "ship_to": ANA,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110601",
                "product_id": "8099999999999999001",
                "variant_id": "8100000000000000001",
                "sku": "TEE-BLK-M",
                "gtin": None,
                "title": "Organic Tee - Black / M",
                "quantity": 2,
                "unit_price": "24.90",
                "discount": "4.98",
                "discount_allocations": [{"amount": "4.98", "code": "SPRING10"}],
                "tax": "3.70",  # on 44.82
                "tax_lines": [tax("Sales tax", "0.0825", "3.70")],
                "total": "44.82",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "14100000000000110602",
                "product_id": "8099999999999999007",
                "variant_id": "8100000000000000007",
                "sku": "MUG-ENAMEL",
                "gtin": None,
                "title": "Enamel Mug",
                "quantity": 2,
                "unit_price": "12.00",
                "discount": "2.40",
                "discount_allocations": [{"amount": "2.40", "code": "SPRING10"}],
                "tax": "1.78",
                "tax_lines": [tax("Sales tax", "0.0825", "1.78")],
                "total": "21.60",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [UPS],
        "totals": {
            "subtotal": "66.42",
            "discount": "7.38",
            "shipping": "9.90",
            "tax": "6.30",
            "total": "82.62",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [{"code": "SPRING10", "amount": "7.38", "type": "percentage"}],
        "tax_lines": [tax("Sales tax", "0.0825", "6.30")],
        "fee_lines": [],
        "payment_methods": ["shopify_payments"],
    }


def test_totals_that_do_not_add_up_are_mapped_as_stated(mappings, validators):
    assert shopify_order(mappings, validators, "shopify/order_totals_off.json") == {
        "order_id": "shopify:5310000000000001107",
        "external_ids": {"channel_id": "5310000000000001107", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#1107",
        "created_at": "2024-04-02T14:15:02Z",
        "updated_at": "2024-04-02T14:20:40Z",
        "status": PAID_OPEN,
        "currency": "USD",
        "taxes_included": False,
        "customer": ANA_CUSTOMER,
        "bill_to": ANA,
        "ship_to": ANA,
        "lines": [
            {
                "line_no": 1,
                "external_id": "14100000000000110701",
                "product_id": "8099999999999999008",
                "variant_id": "8100000000000000008",
                "sku": "TOTE-CANVAS",
                "gtin": None,
                "title": "Canvas Tote",
                "quantity": 3,
                "unit_price": "25.00",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "6.19",
                "tax_lines": [tax("Sales tax", "0.0825", "6.19")],
                "total": "75.00",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "14100000000000110702",
                "product_id": "8099999999999999004",
                "variant_id": "8100000000000000004",
                "sku": "CAP-NAVY",
                "gtin": None,
                "title": "Canvas Cap",
                "quantity": 1,
                "unit_price": "20.00",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "1.65",
                "tax_lines": [tax("Sales tax", "0.0825", "1.65")],
                "total": "20.00",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [],
        "totals": {
            "subtotal": "100.00",  # the lines come to 95.00
            "discount": "0.00",
            "shipping": "0.00",
            "tax": "7.84",
            "total": "107.84",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [tax("Sales tax", "0.0825", "7.84")],
        "fee_lines": [],
        "payment_methods": ["shopify_payments"],
    }


def one_line_order(number, financial, line, shipping_lines, totals, gateways, **more):
    """The fields the single-line fixtures share with order_full.json, the rest as given."""
    return {
        "order_id": f"shopify:531000000000000{number}",
        "external_ids": {"channel_id": f"531000000000000{number}", "erp_sales_order": None},
        "channel": "web",
        "order_number": f"#{number}",
        "created_at": "2024-04-02T14:15:02Z",
        "updated_at": "2024-04-02T14:20:40Z",
        "status": {"financial": financial, "fulfillment": "unfulfilled", "state": "open"},
        "currency": "USD",
        "taxes_included": False,
        "customer": ANA_CUSTOMER,
        "bill_to": ANA,
        "ship_to": more.pop("ship_to", ANA),
        "lines": [line],
        "shipping_lines": shipping_lines,
        "totals": totals,
        "fulfillment": more.pop("fulfillment", {"method": "ship", "pickup_store": None}),
        "tags": [],
        "note": more.pop("note", None),
        "note_attributes": more.pop("note_attributes", []),
        "discount_codes": [],
        "tax_lines": [tax("Sales tax", "0.0825", totals["tax"])],
        "fee_lines": [],
        "payment_methods": gateways,
    }


def sales_tax_line(*, line_no, external_id, product, sku, title, quantity, price, tax_, total):
    return {
        "line_no": line_no,
        "external_id": external_id,
        "product_id": f"80999999999999990{product:02d}",
        "variant_id": f"81000000000000000{product:02d}",
        "sku": sku,
        "gtin": None,
        "title": title,
        "quantity": quantity,
        "unit_price": price,
        "discount": "0.00",
        "discount_allocations": [],
        "tax": tax_,
        "tax_lines": [tax("Sales tax", "0.0825", tax_)],
        "total": total,
        "properties": [],
        "gift_card": False,
    }


def test_an_authorized_order_is_not_paid(mappings, validators):
    hoodie = sales_tax_line(
        line_no=1,
        external_id="14100000000000110801",
        product=3,
        sku="HOOD-GRY-S",
        title="Zip Hoodie - Grey / S",
        quantity=1,
        price="59.00",
        tax_="4.87",
        total="59.00",
    )
    totals = {
        "subtotal": "59.00",
        "discount": "0.00",
        "shipping": "9.90",
        "tax": "5.69",
        "total": "74.59",
    }
    expected = one_line_order(1108, "authorized", hoodie, [UPS], totals, ["shopify_payments"])
    assert shopify_order(mappings, validators, "shopify/order_unpaid_authorized.json") == expected


def test_a_pending_order_waits_for_its_payment(mappings, validators):
    socks = sales_tax_line(
        line_no=1,
        external_id="14100000000000110901",
        product=5,
        sku="SOCK-3PK",
        title="Wool Socks 3-pack",
        quantity=3,
        price="14.00",
        tax_="3.47",
        total="42.00",
    )
    totals = {
        "subtotal": "42.00",
        "discount": "0.00",
        "shipping": "9.90",
        "tax": "4.29",
        "total": "56.19",
    }
    expected = one_line_order(1109, "pending", socks, [UPS], totals, ["Bank Deposit"])
    assert shopify_order(mappings, validators, "shopify/order_unpaid_pending.json") == expected


def test_a_pickup_told_by_its_shipping_line(mappings, validators):
    bottle = sales_tax_line(
        line_no=1,
        external_id="14100000000000111001",
        product=6,
        sku="BOTTLE-750",
        title="Steel Bottle 750 ml",
        quantity=1,
        price="29.99",
        tax_="2.47",
        total="29.99",
    )
    pickup_line = {
        "code": "Pickup",
        "title": "Pickup at Congress Ave store",
        "price": "0.00",
        "discount": "0.00",
        "tax": "0.00",
        "tax_lines": [],
    }
    totals = {
        "subtotal": "29.99",
        "discount": "0.00",
        "shipping": "0.00",
        "tax": "2.47",
        "total": "32.46",
    }
    expected = one_line_order(
        1110,
        "paid",
        bottle,
        [pickup_line],
        totals,
        ["shopify_payments"],
        ship_to=None,
        fulfillment={"method": "pickup", "pickup_store": None},  # the order names no store
    )
    assert shopify_order(mappings, validators, "shopify/order_pickup.json") == expected


def test_a_pickup_with_its_fulfillment_orders_names_the_store(mappings, validators):
    caps = sales_tax_line(
        line_no=1,
        external_id="14100000000000111101",
        product=4,
        sku="CAP-NAVY",
        title="Canvas Cap",
        quantity=2,
        price="19.50",
        tax_="3.22",
        total="39.00",
    )
    totals = {
        "subtotal": "39.00",
        "discount": "0.00",
        "shipping": "0.00",
        "tax": "3.22",
        "total": "42.22",
    }
    expected = one_line_order(
        1111,
        "paid",
        caps,
        [],
        totals,
        ["shopify_payments"],
        ship_to=None,
        fulfillment={"method": "pickup", "pickup_store": "61500000000000000011"},
    )
    found = shopify_order(mappings, validators, "shopify/order_pickup_fulfillment_orders.json")
    assert found == expected


def test_note_note_attributes_and_line_properties_are_kept(mappings, validators):
    bottle = sales_tax_line(
        line_no=1,
        external_id="14100000000000111201",
        product=6,
        sku="BOTTLE-750",
        title="Steel Bottle 750 ml",
        quantity=1,
        price="29.99",
        tax_="2.47",
        total="29.99",
    )
    bottle["properties"] = [
        {"name": "Engraving", "value": "For Sam, with love"},
        {"name": "_engraving_font", "value": "serif"},
    ]
    totals = {
        "subtotal": "29.99",
        "discount": "0.00",
        "shipping": "9.90",
        "tax": "3.29",
        "total": "43.18",
    }
    expected = one_line_order(
        1112,
        "paid",
        bottle,
        [UPS],
        totals,
        ["shopify_payments"],
        note="Please gift wrap, it is a birthday present",
        note_attributes=[
            {"name": "gift_message", "value": "Happy birthday, Sam!"},
            {"name": "delivery_date", "value": "2024-05-03"},
        ],
    )
    found = shopify_order(mappings, validators, "shopify/order_notes_and_properties.json")
    assert found == expected


def test_an_order_that_cannot_be_mapped_reports_every_problem_in_shopifys_terms(mappings):
    order = payload("shopify/order_broken.json")
    with pytest.raises(MappingError) as caught:
        mappings["shopify_order_to_canonical"](order, {"meta": {"key": str(order["id"])}})
    assert str(caught.value) == (
        "order #1113 (shopify:5310000000000001113): "
        "line_items[1].price is invalid (decimal: '19,50' is not a decimal number); "
        "line_items[2].sku is missing; total_price is missing "
        "(mapping shopify_order_to_canonical: fields lines[1].unit_price, lines[2].sku, "
        "totals.total)"
    )
    assert [p.where for p in caught.value.problems] == [
        "line_items[1].price",
        "line_items[2].sku",
        "total_price",
    ]


def test_an_empty_sku_and_a_missing_timestamp_are_named_together(mappings):
    order = payload("shopify/order_full.json")
    order["line_items"][1]["sku"] = ""
    del order["created_at"]
    with pytest.raises(MappingError) as caught:
        mappings["shopify_order_to_canonical"](order)
    assert str(caught.value).startswith(
        "order #1101 (shopify:5310000000000001101): created_at is missing; "
        "line_items[1].sku is empty ("
    )


# -- Shopify refunds --------------------------------------------------------------------------


def shopify_refund(mappings, validators, name, index=None):
    return canonical(mappings, validators, "shopify_refund_to_canonical", name, index)


def returned(line_no, line_id, sku, quantity, restock, location):
    return {
        "line_no": line_no,
        "order_line_no": None,
        "order_line_id": line_id,
        "sku": sku,
        "quantity": quantity,
        "reason_code": "other",
        "condition": "unknown",
        "disposition": {"restock": restock, "location_id": location},
    }


WAREHOUSE = "61500000000000000001"


def test_a_partial_refund_of_one_line(mappings, validators):
    assert shopify_refund(mappings, validators, "shopify/refund_partial_line.json") == {
        "rma_id": "shopify:9910000000000001101",
        "order_id": "shopify:5310000000000001101",
        "order_number": "#1101",
        "external_ids": {"channel_return_id": "9910000000000001101", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-09T15:00:00Z",
        "updated_at": "2024-04-09T15:00:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": "too small",
        "lines": [returned(1, "14100000000000110101", "TEE-BLK-M", 1, True, WAREHOUSE)],
        "refund": {
            "lines": [{"line_no": 1, "amount": "24.90", "tax": "2.06"}],
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [
                {"id": "9930000000000001101", "gateway": "shopify_payments", "amount": "26.96"}
            ],
            "total": "26.96",
        },
    }


def test_a_refund_with_shipping_and_a_discrepancy(mappings, validators):
    found = shopify_refund(mappings, validators, "shopify/refund_shipping_and_discrepancy.json")
    assert found == {
        "rma_id": "shopify:9910000000000001102",
        "order_id": "shopify:5310000000000001101",
        "order_number": "#1101",
        "external_ids": {"channel_return_id": "9910000000000001102", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-09T15:00:00Z",
        "updated_at": "2024-04-09T15:00:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": "damaged in transit; kept 5.00 for the missing tag",
        "lines": [returned(1, "14100000000000110102", "CAP-NAVY", 1, True, WAREHOUSE)],
        "refund": {
            "lines": [{"line_no": 1, "amount": "19.50", "tax": "1.61"}],
            "shipping": "9.90",  # Shopify's -9.90 shipping_refund adjustment
            "shipping_tax": "0.82",
            "adjustments": [
                {
                    "kind": "refund_discrepancy",
                    "amount": "-5.00",  # 5.00 less paid back than the lines come to
                    "tax": "0.00",
                    "reason": "Refund discrepancy",
                }
            ],
            "transactions": [
                {"id": "9930000000000001102", "gateway": "shopify_payments", "amount": "26.83"}
            ],
            "total": "26.83",
        },
    }


def test_two_refunds_of_one_order_keep_its_id_and_count_only_successful_transactions(
    mappings, validators
):
    name = "shopify/refunds_two_of_one_order.json"
    first, second = (shopify_refund(mappings, validators, name, i) for i in (0, 1))
    assert first == {
        "rma_id": "shopify:9910000000000001103",
        "order_id": "shopify:5310000000000001106",
        "order_number": "#1106",
        "external_ids": {"channel_return_id": "9910000000000001103", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-10T14:00:00Z",
        "updated_at": "2024-04-10T14:00:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": None,
        "lines": [returned(1, "14100000000000110601", "TEE-BLK-M", 1, True, WAREHOUSE)],
        "refund": {
            "lines": [{"line_no": 1, "amount": "22.41", "tax": "1.85"}],
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [
                {"id": "9930000000000001103", "gateway": "shopify_payments", "amount": "24.26"}
            ],
            "total": "24.26",
        },
    }
    assert second == {
        "rma_id": "shopify:9910000000000001104",
        "order_id": "shopify:5310000000000001106",
        "order_number": "#1106",
        "external_ids": {"channel_return_id": "9910000000000001104", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-12T20:30:00Z",
        "updated_at": "2024-04-12T20:30:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": "mugs chipped",
        "lines": [returned(1, "14100000000000110602", "MUG-ENAMEL", 2, False, None)],
        "refund": {
            "lines": [{"line_no": 1, "amount": "21.60", "tax": "1.78"}],
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [  # the failed attempt of 23.38 is not money paid back
                {"id": "9930000000000001104", "gateway": "shopify_payments", "amount": "23.38"}
            ],
            "total": "23.38",
        },
    }


def test_a_refund_of_money_only_has_no_lines(mappings, validators):
    assert shopify_refund(mappings, validators, "shopify/refund_transaction_only.json") == {
        "rma_id": "shopify:9910000000000001105",
        "order_id": "shopify:5310000000000001101",
        "order_number": "#1101",
        "external_ids": {"channel_return_id": "9910000000000001105", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-09T15:00:00Z",
        "updated_at": "2024-04-09T15:00:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": "late delivery: goodwill",
        "lines": [],
        "refund": {
            "lines": [],
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [
                {"id": "9930000000000001106", "gateway": "shopify_payments", "amount": "10.00"}
            ],
            "total": "10.00",
        },
    }


def test_a_minimal_refund_gets_the_documented_defaults(mappings, validators):
    assert shopify_refund(mappings, validators, "shopify/refund_minimal.json") == {
        "rma_id": "shopify:9910000000000001106",
        "order_id": "shopify:5310000000000001101",
        "order_number": "#1101",
        "external_ids": {"channel_return_id": "9910000000000001106", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-11T13:00:00Z",
        "updated_at": "2024-04-11T13:00:00Z",  # no processed_at: created_at
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": None,
        # no restock_type: the refund's restock flag; no location_id: none
        "lines": [returned(1, "14100000000000110102", "CAP-NAVY", 1, True, None)],
        "refund": {
            # no subtotal, total_tax: the line item's price and tax lines for 1 of 1
            "lines": [{"line_no": 1, "amount": "19.50", "tax": "1.61"}],
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [
                {"id": "9930000000000001107", "gateway": "shopify_payments", "amount": "21.11"}
            ],
            "total": "21.11",
        },
    }


def test_a_refund_without_subtotal_prorates_the_discounted_price_and_tax(mappings, validators):
    refund = payload("shopify/refunds_two_of_one_order.json")[0]  # 1 of 2 tees, SPRING10
    item = refund["refund_line_items"][0]
    del item["subtotal"], item["total_tax"]
    out = mappings["shopify_refund_to_canonical"](refund)
    # (2 x 24.90 - 4.98) / 2 = 22.41 and 3.70 / 2 = 1.85
    assert out["refund"]["lines"] == [{"line_no": 1, "amount": "22.41", "tax": "1.85"}]


# -- WooCommerce ------------------------------------------------------------------------------


def woo_tax(amount, rate, title):
    return {"title": title, "rate": rate, "amount": amount}


def test_a_woocommerce_order_with_tax_on_top(mappings, validators):
    found = canonical(
        mappings,
        validators,
        "woocommerce_order_to_canonical",
        "woocommerce/order_tax_excluded.json",
    )
    ana = address(
        name="Ana Ruiz",
        company=None,
        line1="500 Congress Ave",
        line2="Suite 210",
        city="Austin",
        region="TX",
        postal_code="78701",
        country="US",
        phone="+15125550101",
    )
    assert found == {
        "order_id": "woocommerce:2201",
        "external_ids": {"channel_id": "2201", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#2201",
        "created_at": "2024-04-02T08:15:00Z",  # date_created_gmt
        "updated_at": "2024-04-02T08:15:00Z",
        "status": {"financial": "paid", "fulfillment": "unfulfilled", "state": "open"},
        "currency": "USD",
        "taxes_included": False,
        "customer": {
            "id": "31",
            "email": "ana.ruiz@example.com",
            "name": "Ana Ruiz",
            "phone": "+15125550101",
        },
        "bill_to": ana,
        "ship_to": {**ana, "phone": None},
        "lines": [
            {
                "line_no": 1,
                "external_id": "9101",
                "product_id": "301",
                "variant_id": "311",
                "sku": "TEE-BLK-M",
                "gtin": None,
                "title": "Organic Tee - Black / M",
                "quantity": 2,
                "unit_price": "24.90",  # subtotal 49.80 / 2, before the coupon
                "discount": "4.98",  # subtotal - total
                "discount_allocations": [],
                "tax": "3.70",
                "tax_lines": [woo_tax("3.70", "0.0825", "Sales tax")],  # 3.69765 rounded
                "total": "44.82",
                "properties": [],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "9102",
                "product_id": "302",
                "variant_id": None,  # variation_id 0: a simple product
                "sku": "MUG-ENAMEL",
                "gtin": None,
                "title": "Enamel Mug",
                "quantity": 2,
                "unit_price": "12.00",
                "discount": "2.40",
                "discount_allocations": [],
                "tax": "1.78",
                "tax_lines": [woo_tax("1.78", "0.0825", "Sales tax")],
                "total": "21.60",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [
            {
                "code": "flat_rate",
                "title": "Flat rate",
                "price": "9.90",
                "discount": "0.00",
                "tax": "0.82",
                "tax_lines": [woo_tax("0.82", "0.0825", "Sales tax")],
            }
        ],
        "fee_lines": [],
        "totals": {
            "subtotal": "66.42",  # the lines' totals
            "discount": "7.38",
            "shipping": "9.90",
            "tax": "6.30",
            "total": "82.62",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": "Leave it with the neighbour at no. 502",
        "note_attributes": [
            {"name": "is_vat_exempt", "value": "no"},
            {"name": "gift_message", "value": "Enjoy!"},
        ],
        "discount_codes": [{"code": "spring10", "amount": "7.38", "type": None}],
        "tax_lines": [woo_tax("6.30", "0.0825", "Sales tax")],  # 5.48 + shipping 0.82
        "payment_methods": ["Credit card (Stripe)"],
    }


def test_a_woocommerce_shop_with_prices_including_tax_states_net_amounts(mappings, validators):
    found = canonical(
        mappings,
        validators,
        "woocommerce_order_to_canonical",
        "woocommerce/order_prices_include_tax.json",
    )
    berg = address(
        name="Jonas Berg",
        company="Berg Design GmbH",
        line1="Hauptstrasse 5",
        line2=None,
        city="Berlin",
        region=None,
        postal_code="10115",
        country="DE",
        phone=None,
    )
    vat = "0.19"
    assert found == {
        "order_id": "woocommerce:2202",
        "external_ids": {"channel_id": "2202", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#2202",
        "created_at": "2024-04-04T14:40:00Z",
        "updated_at": "2024-04-04T14:40:00Z",
        "status": {"financial": "paid", "fulfillment": "fulfilled", "state": "closed"},
        "currency": "EUR",
        "taxes_included": False,  # WooCommerce's amounts are net, the VAT apart
        "customer": {
            "id": "44",
            "email": "jonas.berg@example.com",
            "name": "Jonas Berg",
            "phone": None,
        },
        "bill_to": berg,
        "ship_to": berg,
        "lines": [
            {
                "line_no": 1,
                "external_id": "9201",
                "product_id": "303",
                "variant_id": "313",
                "sku": "HOOD-GRY-S",
                "gtin": None,
                "title": "Zip Hoodie - Grey / S",
                "quantity": 1,
                "unit_price": "49.58",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "9.42",
                "tax_lines": [woo_tax("9.42", vat, "MwSt.")],
                "total": "49.58",
                "properties": [{"name": "Engraving", "value": "Für Jonas"}],
                "gift_card": False,
            },
            {
                "line_no": 2,
                "external_id": "9202",
                "product_id": "301",
                "variant_id": "312",
                "sku": "TEE-WHT-L",
                "gtin": None,
                "title": "Organic Tee - White / L",
                "quantity": 2,
                "unit_price": "20.9250",  # 41.85 / 2: not a whole cent, 4 decimals
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "7.95",
                "tax_lines": [woo_tax("7.95", vat, "MwSt.")],
                "total": "41.85",
                "properties": [],
                "gift_card": False,
            },
        ],
        "shipping_lines": [
            {
                "code": "flat_rate",
                "title": "DHL Paket",
                "price": "4.16",
                "discount": "0.00",
                "tax": "0.79",
                "tax_lines": [woo_tax("0.79", vat, "MwSt.")],
            }
        ],
        "fee_lines": [
            {
                "title": "Gift wrap",
                "amount": "2.10",
                "tax": "0.40",
                "tax_lines": [woo_tax("0.40", vat, "MwSt.")],
            }
        ],
        "totals": {
            "subtotal": "91.43",
            "discount": "0.00",
            "shipping": "4.16",
            "tax": "18.56",
            "total": "116.25",
        },
        "fulfillment": {"method": "ship", "pickup_store": None},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [woo_tax("18.56", vat, "MwSt.")],
        "payment_methods": ["PayPal"],
    }


def test_an_unpaid_woocommerce_guest_order_for_pickup(mappings, validators):
    found = canonical(
        mappings,
        validators,
        "woocommerce_order_to_canonical",
        "woocommerce/order_pending_pickup.json",
    )
    assert found == {
        "order_id": "woocommerce:2203",
        "external_ids": {"channel_id": "2203", "erp_sales_order": None},
        "channel": "web",
        "order_number": "#2203",
        "created_at": "2024-04-05T17:00:00Z",
        "updated_at": "2024-04-05T17:00:00Z",
        "status": {"financial": "pending", "fulfillment": "unfulfilled", "state": "open"},
        "currency": "USD",
        "taxes_included": False,
        "customer": {
            "id": None,  # customer_id 0: a guest
            "email": "li.wei@example.com",
            "name": "Li Wei",
            "phone": "+14165550199",
        },
        "bill_to": None,  # no street: not a postal address
        "ship_to": None,  # empty strings: nothing ships
        "lines": [
            {
                "line_no": 1,
                "external_id": "9301",
                "product_id": "304",
                "variant_id": None,
                "sku": "CAP-NAVY",
                "gtin": None,
                "title": "Canvas Cap",
                "quantity": 1,
                "unit_price": "19.50",
                "discount": "0.00",
                "discount_allocations": [],
                "tax": "0.00",
                "tax_lines": [],
                "total": "19.50",
                "properties": [],
                "gift_card": False,
            }
        ],
        "shipping_lines": [
            {
                "code": "local_pickup",
                "title": "Local pickup",
                "price": "0.00",
                "discount": "0.00",
                "tax": "0.00",
                "tax_lines": [],
            }
        ],
        "fee_lines": [],
        "totals": {
            "subtotal": "19.50",
            "discount": "0.00",
            "shipping": "0.00",
            "tax": "0.00",
            "total": "19.50",
        },
        "fulfillment": {"method": "pickup", "pickup_store": "Congress Ave store"},
        "tags": [],
        "note": None,
        "note_attributes": [],
        "discount_codes": [],
        "tax_lines": [],
        "payment_methods": ["Direct bank transfer"],
    }


def test_a_woocommerce_refund_of_one_line(mappings, validators):
    found = canonical(
        mappings, validators, "woocommerce_refund_to_canonical", "woocommerce/refund_line.json"
    )
    assert found == {
        "rma_id": "woocommerce:3301",
        "order_id": "woocommerce:2201",
        "order_number": "#2201",
        "external_ids": {"channel_return_id": "3301", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-09T13:00:00Z",
        "updated_at": "2024-04-09T13:00:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": "Too small",
        "lines": [returned(1, "9101", "TEE-BLK-M", 1, False, None)],  # quantity -1
        "refund": {
            "lines": [{"line_no": 1, "amount": "22.41", "tax": "1.85"}],  # refund_total -22.41
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [],
            "total": "24.26",
        },
    }


def test_a_woocommerce_refund_of_an_amount_only(mappings, validators):
    found = canonical(
        mappings,
        validators,
        "woocommerce_refund_to_canonical",
        "woocommerce/refund_amount_only.json",
    )
    assert found == {
        "rma_id": "woocommerce:3302",
        "order_id": "woocommerce:2201",
        "order_number": "#2201",
        "external_ids": {"channel_return_id": "3302", "erp_credit_note": None},
        "channel": "web",
        "created_at": "2024-04-10T07:30:00Z",
        "updated_at": "2024-04-10T07:30:00Z",
        "status": "refunded",
        "method": "mail",
        "store_id": None,
        "currency": "USD",
        "taxes_included": False,
        "note": "Price match",
        "lines": [],
        "refund": {
            "lines": [],
            "shipping": "0.00",
            "shipping_tax": "0.00",
            "adjustments": [],
            "transactions": [],
            "total": "5.00",
        },
    }


def test_a_woocommerce_order_that_cannot_be_mapped_reports_every_problem(mappings):
    order = payload("woocommerce/order_tax_excluded.json")
    del order["date_created_gmt"], order["line_items"][1]["sku"]
    order["line_items"][0]["total"] = "44,82"
    with pytest.raises(MappingError) as caught:
        mappings["woocommerce_order_to_canonical"](order)
    assert [str(p) for p in caught.value.problems] == [
        "date_created_gmt is missing",
        "line_items[0].total is invalid (round_decimal: '44,82' is not a decimal number)",
        "line_items[1].sku is missing",
    ]
    assert str(caught.value).startswith("order #2201 (woocommerce:2201): date_created_gmt is")


# -- which fixtures add up --------------------------------------------------------------------

ORDERS = {
    "shopify_order_to_canonical": sorted(
        p.name for p in (FIXTURES / "shopify").glob("order_*.json") if p.name != "order_broken.json"
    ),
    "woocommerce_order_to_canonical": sorted(
        p.name for p in (FIXTURES / "woocommerce").glob("order_*.json")
    ),
}
DO_NOT_ADD_UP = {
    "order_totals_off.json": ["lines add up to 95.00 after discounts but subtotal is 100.00"],
    "refund_transaction_only.json": ["refunded lines 0.00 = 0.00 but 10.00 was paid back"],
    "refund_amount_only.json": ["refunded lines 0.00 = 0.00 but 5.00 was paid back"],
}


@pytest.mark.parametrize(
    ("mapping", "name"), [(m, n) for m, names in ORDERS.items() for n in names]
)
def test_every_order_fixture_adds_up_except_the_one_that_must_not(mappings, mapping, name):
    folder = "shopify" if mapping.startswith("shopify") else "woocommerce"
    order = mappings[mapping](payload(f"{folder}/{name}"))
    assert totals_problems(order) == DO_NOT_ADD_UP.get(name, [])


@pytest.mark.parametrize(
    ("mapping", "name"),
    [
        ("shopify_refund_to_canonical", p.name)
        for p in sorted((FIXTURES / "shopify").glob("refund*.json"))
    ]
    + [
        ("woocommerce_refund_to_canonical", p.name)
        for p in sorted((FIXTURES / "woocommerce").glob("refund_*.json"))
    ],
)
def test_every_refund_fixture_adds_up_except_money_without_lines(mappings, mapping, name):
    folder = "shopify" if mapping.startswith("shopify") else "woocommerce"
    data = payload(f"{folder}/{name}")
    for refund in data if isinstance(data, list) else [data]:
        assert refund_problems(mappings[mapping](refund)) == DO_NOT_ADD_UP.get(name, [])
