"""Mapping compiler vs a hand-written mapping, per record.

    .venv/bin/python bench/bench_mapping.py [--number N]

Maps every order of tests/fixtures/shopify_orders.ndjson with the shipped
``mappings/shopify_order_to_canonical.yaml`` and with ``hand_written`` below, the same
mapping as a Python function (calling the same retail filters, as a hand-written script
would call equivalent helpers), checks both give the same output, and prints microseconds
per record for each and their ratio. Two more figures: the same mapping compiled by
Jinja's own code generator (``Renderer(..., jinja=True)``, the path before
engine/pycodegen.py, still used for what that module does not cover), and every field as
its own template (one render per field), the approach the compiler replaces.
"""

from __future__ import annotations

import argparse
import json
import sys
import timeit
from decimal import Decimal
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from engine.filters import (  # noqa: E402
    currency_code,
    decimal,
    id_str,
    iso_utc,
    money_sum,
    ratio,
    round_decimal,
    tag_list,
)
from engine.mapping import CompiledMapping, load_mapping  # noqa: E402
from engine.templates import (  # noqa: E402
    Renderer,
    compile_condition,
    compile_value,
    make_environment,
)

_METHODS = {"PICK_UP": "pickup", "LOCAL": "local"}


def _address(a: dict) -> dict:
    return {
        "name": a.get("name"),
        "company": a.get("company") or None,
        "line1": a["address1"],
        "line2": a.get("address2") or None,
        "city": a["city"],
        "region": a.get("province_code") or None,
        "postal_code": a.get("zip") or None,
        "country": a["country_code"],
        "phone": a.get("phone") or None,
    }


def _taxes(items: list | None) -> list[dict]:
    return [
        {
            "title": t.get("title"),
            "rate": ratio(t["rate"]) if t.get("rate") is not None else None,
            "amount": decimal(t["price"]),
        }
        for t in items or []
    ]


def _pairs(items: list | None) -> list[dict]:
    return [
        {"name": str(p["name"]), "value": None if p.get("value") is None else str(p["value"])}
        for p in items or []
    ]


def _id(value) -> str | None:
    return None if value is None else id_str(value)


def _code(applications: list, allocation: dict) -> str | None:
    index = allocation.get("discount_application_index", -1)
    if index < 0:
        return None
    found = (applications[index] if index < len(applications) else None) or {}
    return found.get("code") or found.get("title")


def _line(i: int, line: dict, applications: list) -> dict:
    allocations = line.get("discount_allocations") or []
    if not str(line.get("sku") or "").strip():
        raise ValueError(f"line_items[{i - 1}].sku is missing or empty")
    return {
        "line_no": i,
        "external_id": _id(line.get("id")),
        "product_id": _id(line.get("product_id")),
        "variant_id": _id(line.get("variant_id")),
        "sku": line["sku"],
        "gtin": None,
        "title": line.get("name") or line.get("title") or line.get("sku") or "",
        "quantity": line["quantity"],
        "unit_price": decimal(line["price"]),
        "discount": money_sum(allocations, "amount"),
        "discount_allocations": [
            {"amount": decimal(a["amount"]), "code": _code(applications, a)} for a in allocations
        ],
        "tax": money_sum(line.get("tax_lines") or [], "price"),
        "tax_lines": _taxes(line.get("tax_lines")),
        "total": decimal(
            round_decimal(line["price"]) * line["quantity"]
            - round_decimal(money_sum(allocations, "amount"))
        ),
        "properties": _pairs(line.get("properties")),
        "gift_card": line.get("gift_card") or False,
    }


def _method(r: dict, rates: list) -> tuple[str, str | None]:
    orders = r.get("fulfillment_orders") or []
    if orders:
        method_type = orders[0]["delivery_method"]["method_type"]
        store = id_str(orders[0]["assigned_location_id"]) if method_type == "PICK_UP" else None
        return _METHODS.get(method_type, "ship"), store
    hint = " ".join(str(x.get("code", "")) for x in rates) + " "
    hint = (hint + " ".join(str(x.get("title", "")) for x in rates)).lower()
    if "pickup" in hint.replace("-", " ").replace("pick up", "pickup"):
        return "pickup", None
    if "local delivery" in hint.replace("_", " "):
        return "local", None
    return "ship", None


def hand_written(r: dict) -> dict:
    """shopify_order_to_canonical.yaml, written by hand."""
    customer = r.get("customer")
    status = r.get("financial_status")
    rates = r.get("shipping_lines") or []
    items = r["line_items"]
    applications = r.get("discount_applications") or []
    method, store = _method(r, rates)
    shipping_set = r.get("total_shipping_price_set")
    tip = r.get("total_tip_received") or "0"
    if not str(r.get("name") or "").strip():
        raise ValueError("name is missing or empty")
    return {
        "order_id": f"shopify:{id_str(r['id'])}",
        "external_ids": {"channel_id": id_str(r["id"]), "erp_sales_order": None},
        "channel": "store" if r.get("source_name", "web") == "pos" else "web",
        "order_number": r["name"],
        "created_at": iso_utc(r["created_at"]),
        "updated_at": iso_utc(r.get("updated_at") or r["created_at"]),
        "status": {
            "financial": "voided" if status == "expired" else status or "pending",
            "fulfillment": r.get("fulfillment_status") or "unfulfilled",
            "state": "cancelled"
            if r.get("cancelled_at")
            else "closed"
            if r.get("closed_at")
            else "open",
        },
        "currency": currency_code(r["currency"]),
        "taxes_included": r.get("taxes_included") or False,
        "customer": {
            "id": id_str(customer["id"]) if customer else None,
            "email": r.get("email")
            or r.get("contact_email")
            or ((customer.get("email") or None) if customer else None),
            "name": (
                " ".join(n for n in (customer.get("first_name"), customer.get("last_name")) if n)
                or None
            )
            if customer
            else None,
            "phone": r.get("phone") or ((customer.get("phone") or None) if customer else None),
        },
        "bill_to": _address(r["billing_address"])
        if (r.get("billing_address") or {}).get("address1")
        else None,
        "ship_to": _address(r["shipping_address"]) if r.get("shipping_address") else None,
        "lines": [_line(i, line, applications) for i, line in enumerate(items, 1)],
        "shipping_lines": [
            {
                "code": rate.get("code") or None,
                "title": rate.get("title") or rate.get("code") or "Shipping",
                "price": decimal(rate["price"]),
                "discount": money_sum(rate.get("discount_allocations") or [], "amount"),
                "tax": money_sum(rate.get("tax_lines") or [], "price"),
                "tax_lines": _taxes(rate.get("tax_lines")),
            }
            for rate in rates
        ],
        "totals": {
            "subtotal": decimal(r["subtotal_price"]),
            "discount": decimal(r["total_discounts"])
            if r.get("total_discounts") is not None
            else money_sum(
                [a for x in items + rates for a in x.get("discount_allocations", [])], "amount"
            ),
            "shipping": decimal(shipping_set["shop_money"]["amount"])
            if shipping_set
            else money_sum(rates, "price"),
            "tax": decimal(r["total_tax"])
            if r.get("total_tax") is not None
            else money_sum([t for x in items + rates for t in x.get("tax_lines", [])], "price"),
            "total": decimal(r["total_price"]),
        },
        "fulfillment": {"method": method, "pickup_store": store},
        "tags": tag_list(r.get("tags")),
        "note": r.get("note") or None,
        "note_attributes": _pairs(r.get("note_attributes")),
        "discount_codes": [
            {"code": c["code"], "amount": decimal(c["amount"]), "type": c.get("type")}
            for c in r.get("discount_codes") or []
        ],
        "tax_lines": _taxes(r.get("tax_lines")),
        "fee_lines": [{"title": "Tip", "amount": decimal(tip), "tax": "0.00", "tax_lines": []}]
        if round_decimal(tip) != 0
        else [],
        "payment_methods": [g for g in r.get("payment_gateway_names") or [] if g],
    }


def per_field(env, fields: dict):
    """The same mapping with every field compiled and rendered as its own template."""

    def build(value):
        if isinstance(value, dict) and "each" in value:
            each, name = compile_value(env, value["each"]), value.get("as", "item")
            body = build(value["fields"])

            def run_each(ctx):
                items = each(ctx)
                return [
                    body({**ctx, name: item, "loop": {"index": i + 1}})
                    for i, item in enumerate(items)
                ]

            return run_each
        if isinstance(value, dict) and "when" in value:
            cond, body = compile_condition(env, value["when"]), build(value["fields"])
            return lambda ctx: body(ctx) if cond(ctx) else None
        if isinstance(value, dict):
            parts = {key: build(item) for key, item in value.items()}
            return lambda ctx: {key: fn(ctx) for key, fn in parts.items()}
        return compile_value(env, value)

    return build(fields)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--number", type=int, default=300, help="passes over the fixture per round")
    parser.add_argument("--rounds", type=int, default=7, help="interleaved rounds; the best counts")
    args = parser.parse_args()

    env = make_environment()
    mapping, problems = load_mapping(str(ROOT / "mappings/shopify_order_to_canonical.yaml"), env)
    assert mapping is not None, problems
    lines = (ROOT / "tests/fixtures/shopify_orders.ndjson").read_text().splitlines()
    records = [json.loads(line, parse_float=Decimal) for line in lines]
    contexts = [{"vars": {}, "meta": {"key": r["id"]}, "run": {}} for r in records]
    for record, context in zip(records, contexts, strict=True):
        assert mapping(record, context) == hand_written(record), record["name"]

    def compiled_pass():
        for record, context in zip(records, contexts, strict=False):
            mapping(record, context)

    spec = mapping._renderer._spec
    by_jinja = CompiledMapping(
        mapping.name, "", mapping.file, Renderer(env, spec, None, name="jinja", jinja=True)
    )
    for record, context in zip(records, contexts, strict=True):
        assert by_jinja(record, context) == mapping(record, context), record["name"]

    def jinja_pass():
        for record, context in zip(records, contexts, strict=False):
            by_jinja(record, context)

    def hand_pass():
        for record in records:
            hand_written(record)

    fields = yaml.safe_load((ROOT / "mappings/shopify_order_to_canonical.yaml").read_text())
    slow = per_field(env, fields["fields"])
    slow_contexts = [{**c, "record": r} for r, c in zip(records, contexts, strict=True)]
    for context in slow_contexts:
        assert slow(context) == hand_written(context["record"])

    def per_field_pass():
        for context in slow_contexts:
            slow(context)

    n = args.number
    count = n * len(records)
    # Interleaved rounds, best of each: other processes on a shared machine slow single
    # rounds down, never speed them up.
    passes = {
        "hand-written": hand_pass,
        "compiled": compiled_pass,
        "jinja": jinja_pass,
        "per-field": per_field_pass,
    }
    best = dict.fromkeys(passes, float("inf"))
    for _ in range(args.rounds):
        for name, fn in passes.items():
            best[name] = min(best[name], timeit.timeit(fn, number=n))
    results = {name: seconds / count * 1e6 for name, seconds in best.items()}
    per_field_us = results["per-field"]
    lines_per = sum(len(r["line_items"]) for r in records) / len(records)
    print(
        f"{len(records)} Shopify orders ({lines_per:.1f} lines each on average), "
        f"best of {args.rounds} rounds of {n} passes"
    )
    print(f"hand-written Python      {results['hand-written']:8.1f} us/record")
    print(f"compiled mapping         {results['compiled']:8.1f} us/record")
    print(f"ratio                    {results['compiled'] / results['hand-written']:8.2f}x")
    print(f"compiled by Jinja        {results['jinja']:8.1f} us/record")
    print(f"one render per field     {per_field_us:8.1f} us/record")


if __name__ == "__main__":
    main()
