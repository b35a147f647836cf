"""bench/gen_orders.py writes orders in Shopify's documented shape that the shipped mapping
takes and that add up: 1,000 of them through shopify_order_to_canonical, the order schema
and engine.money.totals_problems."""

from __future__ import annotations

import json
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest

from bench.gen_orders import generate
from engine.errors import RecordValidationError
from engine.mapping import load_mapping
from engine.money import totals_problems
from engine.templates import make_environment
from engine.validation import compile_validator, load_schema

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def mapped(tmp_path_factory):
    """1,000 generated orders (1 % invalid on purpose), each with its canonical order."""
    path = tmp_path_factory.mktemp("gen") / "orders.ndjson"
    made = generate(path, 1000, seed=20, invalid=0.01)
    mapping, problems = load_mapping(
        str(ROOT / "mappings/shopify_order_to_canonical.yaml"), make_environment()
    )
    assert problems == []
    schema, problems = load_schema(str(ROOT / "mappings/canonical/order.schema.json"))
    assert problems == []
    validate = compile_validator(schema)
    results = []
    for line in path.read_text().splitlines():
        order = json.loads(line, parse_float=Decimal)
        canonical = mapping(order, {"meta": {"key": str(order["id"])}})  # raises on failure
        try:
            validate(canonical)
        except RecordValidationError as exc:
            results.append((order, canonical, exc))
        else:
            results.append((order, canonical, None))
    return made, results


def test_every_generated_order_maps_and_only_the_invalid_ones_fail_the_schema(mapped):
    made, results = mapped
    failures = [exc for _, _, exc in results if exc is not None]
    assert len(results) == 1000
    assert len(failures) == made["invalid"] > 0
    assert all(exc.path == "lines[0].quantity" for exc in failures)  # the deliberate 0


def test_every_valid_generated_order_adds_up(mapped):
    _, results = mapped
    problems = {
        o["name"]: totals_problems(c) for o, c, exc in results if exc is None and totals_problems(c)
    }
    assert problems == {}


def test_the_generated_orders_have_the_shapes_real_payloads_have(mapped):
    made, results = mapped
    seen = Counter()
    for order, canonical, invalid in results:
        if invalid is None:  # the generator counts pickups among the valid orders
            seen[canonical["fulfillment"]["method"]] += 1
        seen["taxes included" if canonical["taxes_included"] else "tax on top"] += 1
        seen[canonical["status"]["financial"]] += 1
        seen["discount code" if canonical["discount_codes"] else "no code"] += 1
        seen["two tax rates" if len(canonical["lines"][0]["tax_lines"]) == 2 else "one"] += 1
        seen["reduced" if "tags" not in order else "full"] += 1
        seen["no line tax lines" if "tax_lines" not in order["line_items"][0] else "tax lines"] += 1
        seen["guest" if not order.get("customer") else "customer"] += 1
        seen["engraving" if any(line["properties"] for line in canonical["lines"]) else "-"] += 1
        assert "fulfillment_orders" not in order
    assert seen["pickup"] == made["pickup"] and seen["local"] > 0 and seen["ship"] > 0
    for kind in ("taxes included", "tax on top", "pending", "authorized", "discount code"):
        assert seen[kind] > 20, (kind, seen)
    for kind in ("two tax rates", "reduced", "no line tax lines", "guest", "engraving"):
        assert seen[kind] > 10, (kind, seen)
