"""The canonical schemas are valid, documented, strict, and every shipped mapping meets them."""

from __future__ import annotations

import copy
import json
import re
from decimal import Decimal
from pathlib import Path

import jsonschema
import pytest

from engine.errors import RecordValidationError
from engine.mapping import load_mapping
from engine.templates import make_environment
from engine.validation import compile_validator, load_schema

ROOT = Path(__file__).resolve().parent.parent
CANONICAL = ROOT / "mappings" / "canonical"
FIXTURES = Path(__file__).resolve().parent / "fixtures"
SCHEMAS = sorted(CANONICAL.glob("*.schema.json"))
SHIPPED_MAPPINGS = sorted((ROOT / "mappings").glob("*.yaml"))

# Every shipped mapping, the canonical model it produces, and the fixtures it is tested on
# (NDJSON files, or JSON files holding one record or a list; globs in tests/fixtures/).
MAPPING_FIXTURES = {
    "shopify_order_to_canonical": ("order", ["shopify_orders.ndjson", "shopify/order_*.json"]),
    "shopify_refund_to_canonical": ("return", ["shopify_refunds.ndjson", "shopify/refund*.json"]),
    "woocommerce_order_to_canonical": ("order", ["woocommerce/order_*.json"]),
    "woocommerce_refund_to_canonical": ("return", ["woocommerce/refund_*.json"]),
    "tryton_stock_to_inventory_level": ("inventory_level", ["tryton_stock.ndjson"]),
    "supplier_invoice_json_to_canonical": ("invoice", ["supplier_invoices.ndjson"]),
    # records as the file source's group_by: invoice_number yields them from a CSV export
    "supplier_invoice_csv_to_canonical": ("invoice", ["supplier_invoices_csv.ndjson"]),
}
# fixtures that show what cannot be mapped (tests/test_web_shop_mappings.py checks the error)
UNMAPPABLE = {"order_broken.json"}


def schema_of(model: str) -> dict:
    schema, problems = load_schema(str(CANONICAL / f"{model}.schema.json"))
    assert problems == []
    return schema


def read_ndjson(name: str) -> list[dict]:
    lines = (FIXTURES / name).read_text().splitlines()
    return [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]


def read_fixtures(patterns: list[str]) -> list[dict]:
    records = []
    for pattern in patterns:
        paths = sorted(FIXTURES.glob(pattern))
        assert paths, pattern
        for path in paths:
            if path.name in UNMAPPABLE:
                continue
            if path.suffix == ".ndjson":
                records += read_ndjson(str(path.relative_to(FIXTURES)))
            else:
                data = json.loads(path.read_text(), parse_float=Decimal)
                records += data if isinstance(data, list) else [data]
    return records


def test_the_four_canonical_models_are_shipped():
    assert [p.name for p in SCHEMAS] == [
        "inventory_level.schema.json",
        "invoice.schema.json",
        "order.schema.json",
        "return.schema.json",
    ]


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_each_schema_is_a_valid_draft_07_schema(path):
    schema, problems = load_schema(str(path))
    assert problems == []
    jsonschema.Draft7Validator.check_schema(schema)
    assert schema["$schema"] == "http://json-schema.org/draft-07/schema#"


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_each_schema_is_versioned_strict_and_documented(path):
    schema = json.loads(path.read_text())
    model = path.name.removesuffix(".schema.json")
    assert schema["$id"] == f"urn:flowyard:canonical:{model}:v1"
    assert schema["additionalProperties"] is False
    undocumented = [
        where for where, _ in _properties(schema, "") if where not in _documented(schema)
    ]
    assert undocumented == []


def _properties(node, at):
    """(path, schema) of every named property, however deep."""
    if isinstance(node, dict):
        for name, sub in (node.get("properties") or {}).items():
            yield f"{at}.{name}", sub
            yield from _properties(sub, f"{at}.{name}")
        for key in ("items", "definitions"):
            sub = node.get(key)
            if isinstance(sub, dict):
                subs = sub.items() if key == "definitions" else [("[]", sub)]
                for name, item in subs:
                    yield from _properties(item, f"{at}.{name}")


def _documented(schema):
    return {where for where, sub in _properties(schema, "") if sub.get("description")}


@pytest.mark.parametrize("path", SCHEMAS, ids=lambda p: p.name)
def test_money_is_never_a_number_and_uses_pattern_not_format(path):
    text = path.read_text()
    assert '"format"' not in text  # both validators must agree; they treat format differently
    assert '"type": "number"' not in text  # amounts and quantities are strings or integers


def test_every_shipped_mapping_has_a_fixture_here():
    assert sorted(p.stem for p in SHIPPED_MAPPINGS) == sorted(MAPPING_FIXTURES)


@pytest.mark.parametrize("name", sorted(MAPPING_FIXTURES))
def test_every_shipped_mapping_output_validates_against_its_canonical_schema(name):
    model, fixtures = MAPPING_FIXTURES[name]
    mapping, problems = load_mapping(str(ROOT / "mappings" / f"{name}.yaml"), make_environment())
    assert problems == []
    schema = schema_of(model)
    fast = compile_validator(schema)
    reference = jsonschema.Draft7Validator(schema)
    records = read_fixtures(fixtures)
    assert records
    for record in records:
        output = mapping(record, {"vars": {}})  # as in a flow without vars
        errors = [f"{list(e.path)}: {e.message}" for e in reference.iter_errors(output)]
        assert errors == [], record.get("name") or record.get("id")
        fast(output)


TAX_RATE = "lines[0].tax_lines[0].rate"

# -- what the order schema refuses -----------------------------------------------------------


@pytest.fixture(scope="module")
def order():
    mapping, _ = load_mapping(
        str(ROOT / "mappings/shopify_order_to_canonical.yaml"), make_environment()
    )
    return mapping(read_ndjson("shopify_orders.ndjson")[0])


@pytest.fixture(scope="module")
def validate_order():
    return compile_validator(schema_of("order"))


@pytest.mark.parametrize(
    ("change", "path"),
    [
        (lambda o: o["totals"].__setitem__("total", 85.74), "totals.total"),
        (lambda o: o["totals"].__setitem__("total", "85,74"), "totals.total"),
        (lambda o: o["totals"].__setitem__("total", "1e3"), "totals.total"),
        (lambda o: o.__setitem__("currency", "usd"), "currency"),
        (lambda o: o.__setitem__("created_at", "2024-03-04T09:15:02-05:00"), "created_at"),
        (lambda o: o["lines"][0].__setitem__("quantity", 0), "lines[0].quantity"),
        (lambda o: o["lines"][0].__setitem__("quantity", "2"), "lines[0].quantity"),
        (lambda o: o["lines"][0].__setitem__("gtin", "123"), "lines[0].gtin"),
        (lambda o: o.__setitem__("order_id", 5234567890123456700), "order_id"),
        (lambda o: o["fulfillment"].__setitem__("method", "drone"), "fulfillment.method"),
        (lambda o: o.__setitem__("lines", []), "lines"),
        (lambda o: o["customer"].__setitem__("email", "not-an-email"), "customer.email"),
        (lambda o: o["ship_to"].__setitem__("country", "USA"), "ship_to.country"),
        (lambda o: o.__setitem__("comment", "extra"), "(record)"),
        (lambda o: o["lines"][0]["tax_lines"][0].update(rate=0.0825), TAX_RATE),
        (lambda o: o["lines"][0]["tax_lines"][0].update(rate="8.25%"), TAX_RATE),
        (lambda o: o.__setitem__("note_attributes", [{"name": "a"}]), "note_attributes[0]"),
        (lambda o: o.pop("tags"), "(record)"),
    ],
)
def test_the_order_schema_refuses_what_a_target_would_choke_on(order, validate_order, change, path):
    broken = copy.deepcopy(order)
    change(broken)
    with pytest.raises(RecordValidationError) as caught:
        validate_order(broken)
    assert caught.value.path == path


# -- the other models: a valid example each, and a refusal -----------------------------------

INVENTORY_LEVEL = {
    "sku": "TEE-BLK-M",
    "gtin": "4006381333931",
    "location": {"id": "store-012", "type": "store", "gln": "4012345000016"},
    "on_hand": 14,
    "available": 9,
    "reserved": 3,
    "incoming": 24,
    "safety_stock": 2,
    "as_of": "2024-03-05T08:00:00Z",
    "source_system": "shopify",
}

RETURN = {
    "rma_id": "shopify:9900000000000000004",
    "order_id": "shopify:5234567890123456768",
    "external_ids": {"channel_return_id": "9900000000000000004", "erp_credit_note": None},
    "channel": "web",
    "created_at": "2024-03-07T01:00:00Z",
    "updated_at": "2024-03-07T01:00:00Z",
    "status": "received",
    "method": "in_store",
    "store_id": "61500000000000000011",
    "currency": "CAD",
    "lines": [
        {
            "line_no": 1,
            "order_line_no": 5,
            "order_line_id": "14000000000000676804",
            "sku": "SOCK-3PK",
            "quantity": 1,
            "reason_code": "damaged",
            "condition": "damaged",
            "disposition": {"restock": False, "location_id": "scrap"},
        }
    ],
    "refund": {
        "lines": [{"line_no": 1, "amount": "12.00", "tax": "1.56"}],
        "shipping": "0.00",
        "total": "13.56",
    },
}

INVOICE = {
    "invoice_id": "SUP-0042:INV-2024-118",
    "supplier": {
        "id": "SUP-0042",
        "name": "Nordic Textiles AB",
        "gln": "7350012340005",
        "vat_id": "SE556677889901",
    },
    "invoice_number": "INV-2024-118",
    "invoice_date": "2024-03-08",
    "due_date": "2024-04-07",
    "po_reference": "PO-2024-0311",
    "goods_receipts": ["GR-88121"],
    "currency": "EUR",
    "lines": [
        {
            "line_no": 1,
            "po_line": "10",
            "sku": "TEE-BLK-M",
            "gtin": "4006381333931",
            "description": "Organic Tee black M",
            "quantity": "120",
            "unit": "C62",
            "unit_price": "6.40",
            "tax_rate": "19",
            "tax": "145.92",
            "total": "768.00",
        }
    ],
    "charges": [{"kind": "charge", "reason": "freight", "amount": "35.00", "tax": "6.65"}],
    "totals": {
        "net": "768.00",
        "charges": "35.00",
        "allowances": "0.00",
        "tax": "152.57",
        "total": "955.57",
    },
    "payment_terms": {
        "code": "2/10 NET30",
        "net_days": 30,
        "discount_percent": "2",
        "discount_days": 10,
    },
}

EXAMPLES = {"inventory_level": INVENTORY_LEVEL, "return": RETURN, "invoice": INVOICE}


@pytest.mark.parametrize("model", sorted(EXAMPLES))
def test_a_realistic_example_of_each_model_is_valid(model):
    compile_validator(schema_of(model))(EXAMPLES[model])


@pytest.mark.parametrize(
    ("model", "change", "path"),
    [
        ("inventory_level", lambda d: d.update(sku=None, gtin=None), "(record)"),
        ("inventory_level", lambda d: d["location"].update(type="garage"), "location.type"),
        ("inventory_level", lambda d: d.update(reserved=-1), "reserved"),
        ("return", lambda d: d["lines"][0].update(reason_code="meh"), "lines[0].reason_code"),
        ("return", lambda d: d["refund"].update(total=13.56), "refund.total"),
        ("return", lambda d: d.update(method="drone"), "method"),
        ("invoice", lambda d: d["lines"][0].update(quantity=120), "lines[0].quantity"),
        ("invoice", lambda d: d["lines"][0].update(unit="pieces"), "lines[0].unit"),
        ("invoice", lambda d: d.update(invoice_date="08.03.2024"), "invoice_date"),
    ],
)
def test_each_model_refuses_a_typical_mistake(model, change, path):
    broken = copy.deepcopy(EXAMPLES[model])
    change(broken)
    with pytest.raises(RecordValidationError) as caught:
        compile_validator(schema_of(model))(broken)
    assert caught.value.path == path


def test_money_pattern_accepts_decimal_strings_only():
    money = schema_of("order")["definitions"]["money"]["pattern"]
    assert all(re.search(money, v) for v in ("19.90", "0", "-5", "1234567.0001"))
    assert not any(re.search(money, v) for v in ("19,90", "1e3", "$5", " 5", "5.", ".5", ""))


# -- added fields are optional: records made before them stay valid ---------------------------

ORDER_FIELDS_ADDED = ("note", "note_attributes", "discount_codes", "tax_lines", "fee_lines")
ORDER_FIELDS_ADDED += ("payment_methods",)
LINE_FIELDS_ADDED = ("product_id", "variant_id", "discount_allocations", "tax_lines")
LINE_FIELDS_ADDED += ("properties", "gift_card")


def test_an_order_without_the_fields_added_later_is_still_valid(order, validate_order):
    first_shape = {k: v for k, v in order.items() if k not in ORDER_FIELDS_ADDED}
    first_shape["lines"] = [
        {k: v for k, v in line.items() if k not in LINE_FIELDS_ADDED} for line in order["lines"]
    ]
    first_shape["shipping_lines"] = [
        {k: v for k, v in rate.items() if k != "tax_lines"} for rate in order["shipping_lines"]
    ]
    validate_order(first_shape)
    assert set(order) - set(first_shape) == set(ORDER_FIELDS_ADDED)


def test_a_return_without_the_fields_added_later_is_still_valid():
    validate = compile_validator(schema_of("return"))
    validate(RETURN)  # the example above has none of them
    with_them = copy.deepcopy(RETURN)
    with_them.update(taxes_included=False, note="wrong size")
    with_them["refund"].update(shipping_tax="0.00", adjustments=[], transactions=[])
    validate(with_them)
