"""jsonschema-rs in front of fastjsonschema never changes what the engine accepts or refuses.

The canonical records are the shipped mappings' output on the fixtures and on generated
Shopify orders; each is validated as it is, then with every field of one of them changed
to a value from a list of awkward ones (wrong types, Decimals, huge integers, floats,
strings with Unicode digits, odd whitespace or a final newline), with fields left out and
with fields added. For every document: jsonschema-rs accepts only what fastjsonschema
accepts; the engine's validator accepts, refuses with the same message, or raises, exactly
as fastjsonschema alone; and jsonschema-rs refuses what fastjsonschema accepts only for the
one kind of value this is known for (digits outside ASCII, engine/prevalidate.py).
"""

from __future__ import annotations

import json
import random
import re
import sys
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import fastjsonschema
import pytest

from engine.mapping import load_mapping
from engine.prevalidate import PYTHON_WHITESPACE, first_pass
from engine.templates import make_environment
from engine.validation import _inline_refs, _validation_error, compile_validator, load_schema
from tests.conftest import ROOT

sys.path.insert(0, str(ROOT))
from bench.gen_orders import order as generated_order  # noqa: E402

FIXTURES = ROOT / "tests" / "fixtures"
SEEDS = {  # canonical model: (mapping, fixture files)
    "order": [
        ("shopify_order_to_canonical", ["shopify_orders.ndjson", "shopify/order_*.json"]),
        ("woocommerce_order_to_canonical", ["woocommerce/order_*.json"]),
    ],
    "return": [
        ("shopify_refund_to_canonical", ["shopify_refunds.ndjson", "shopify/refund*.json"]),
        ("woocommerce_refund_to_canonical", ["woocommerce/refund_*.json"]),
    ],
    "inventory_level": [("tryton_stock_to_inventory_level", ["tryton_stock.ndjson"])],
    "invoice": [
        ("supplier_invoice_json_to_canonical", ["supplier_invoices.ndjson"]),
        ("supplier_invoice_csv_to_canonical", ["supplier_invoices_csv.ndjson"]),
    ],
}
AWKWARD: list[Any] = [
    None,
    True,
    False,
    0,
    1,
    -1,
    3,
    10**30,
    -(10**30),
    2**53 + 1,
    2**64,
    3.0,
    2.5,
    1e300,
    float("nan"),
    float("inf"),
    Decimal("3"),
    Decimal("3.0"),
    Decimal("1E+2"),
    Decimal("19.90"),
    Decimal("-1"),
    Decimal("NaN"),
    Decimal("1E+400"),
    "",
    "x",
    "19.90",
    "19,90",
    "-5",
    "EUR",
    "EUR\n",
    "eu",
    "DE",
    "2024-03-08T10:00:00Z",
    "2024-03-08T10:00:00.5Z\n",
    "2024-03-08",
    "12345678",
    "4006381333931",
    "12345678\n",
    "a@b",
    "a@b\n",
    " a@b",
    "a\x1c@b",
    "a\x85@b",
    "a\ufeff@b",
    "a\u3000@b",
    "C62",
    "٣٣٣٣٣٣٣٣",  # Arabic-Indic digits: \d in Python, not in ECMA-262
    "１２３４５６７８",  # fullwidth digits, the same
    [],
    [1],
    {},
    {"x": 1},
    (1,),
]
# the values jsonschema-rs may refuse where fastjsonschema accepts (then fastjsonschema decides)
NOT_ASCII_DIGITS = re.compile(r"[^\x00-\x7f]")


def canonical_records(model: str) -> list[dict[str, Any]]:
    env = make_environment()
    records = []
    for name, patterns in SEEDS[model]:
        mapping, problems = load_mapping(str(ROOT / "mappings" / f"{name}.yaml"), env)
        assert problems == []
        for pattern in patterns:
            for path in sorted(FIXTURES.glob(pattern)):
                for raw in _read(path):
                    try:
                        records.append(mapping(raw, {"vars": {}}))
                    except Exception:  # the fixtures that show what cannot be mapped
                        continue
        if name == "shopify_order_to_canonical":
            rnd = random.Random(13)
            for n in range(60):
                raw = json.loads(
                    json.dumps(
                        generated_order(n, rnd, pickup=0.2, invalid=n % 10 == 0), default=str
                    ),
                    parse_float=Decimal,
                )
                try:
                    records.append(mapping(raw, {"vars": {}}))
                except Exception:
                    continue
    assert records, model
    return records


def _read(path: Path) -> list[Any]:
    if path.suffix == ".ndjson":
        lines = path.read_text().splitlines()
        return [json.loads(line, parse_float=Decimal) for line in lines if line.strip()]
    data = json.loads(path.read_text(), parse_float=Decimal)
    return data if isinstance(data, list) else [data]


def places(node: Any, at: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    """The path of every value inside ``node``."""
    items = (
        node.items()
        if isinstance(node, dict)
        else enumerate(node)
        if isinstance(node, list)
        else ()
    )
    for key, value in items:
        yield (*at, key)
        yield from places(value, (*at, key))


def parent_of(doc: Any, path: tuple[Any, ...]) -> Any:
    for key in path[:-1]:
        doc = doc[key]
    return doc


class Judge:
    """The three answers for one schema, and what they disagreed on."""

    def __init__(self, schema: dict[str, Any]):
        inlined = _inline_refs(schema, schema, ())
        self.schema_id = schema.get("$id", "")
        self.fast = fastjsonschema.compile(inlined, use_default=False)
        quick = first_pass(inlined)
        assert quick is not None, "the canonical schemas get a first pass"
        self.quick = quick
        self.engine = compile_validator(schema)
        self.checked = 0
        self.slow: list[tuple[tuple[Any, ...], Any]] = []  # refused by rs, accepted by fast

    def __call__(self, doc: Any, path: tuple[Any, ...] = (), value: Any = None) -> None:
        self.checked += 1
        fast = self._fast(doc)
        try:
            quick = self.quick(doc)
        except ValueError:
            quick = False
        assert not (quick and fast != "accepted"), (path, value, fast)
        assert self._engine(doc) == fast, (path, value)
        if fast == "accepted" and not quick:
            self.slow.append((path, value))

    def _fast(self, doc: Any) -> str:
        try:
            self.fast(doc)
        except fastjsonschema.JsonSchemaValueException as exc:
            return str(_validation_error(exc, self.schema_id))
        except Exception as exc:
            return f"raised {type(exc).__name__}"
        return "accepted"

    def _engine(self, doc: Any) -> str:
        try:
            self.engine(doc)
        except fastjsonschema.JsonSchemaValueException:
            raise
        except Exception as exc:
            kind = type(exc).__name__
            return str(exc) if kind == "RecordValidationError" else f"raised {kind}"
        return "accepted"


def schema_of(model: str) -> dict[str, Any]:
    schema, problems = load_schema(str(ROOT / "mappings" / "canonical" / f"{model}.schema.json"))
    assert schema is not None, problems
    return schema


@pytest.mark.parametrize("model", sorted(SEEDS))
def test_both_validators_agree_on_canonical_records_and_their_mutations(model):
    judge = Judge(schema_of(model))
    records = canonical_records(model)
    rnd = random.Random(model)
    for number, doc in enumerate(records):
        judge(doc)
        every = places(doc)
        # every place of the first record, a sample of each other's (the test stays fast)
        chosen = (
            list(every) if number == 0 else rnd.sample(list(every), min(12, len(list(places(doc)))))
        )
        for path in chosen:
            parent, key = parent_of(doc, path), path[-1]
            kept = parent[key]
            values = AWKWARD if number == 0 else rnd.sample(AWKWARD, 8)
            for value in values:
                parent[key] = value
                judge(doc, path, value)
            parent[key] = kept
            if isinstance(parent, dict):  # the field left out, then one added beside it
                del parent[key]
                judge(doc, path, "(absent)")
                parent[key] = kept
                parent["zz_added"] = "x"
                judge(doc, path, "(added)")
                del parent["zz_added"]
        judge(doc)  # restored: valid again
    assert judge.checked > 1000
    assert not [(p, v) for p, v in judge.slow if not NOT_ASCII_DIGITS.search(str(v))]


def test_a_record_jsonschema_rs_cannot_read_is_decided_by_fastjsonschema():
    import datetime as dt

    validate = compile_validator(
        {"type": "object", "properties": {"when": {"type": "string"}, "tags": {"type": "array"}}}
    )
    with pytest.raises(Exception, match="when: must be string"):
        validate({"when": dt.date(2024, 3, 8)})
    validate({"tags": ("a", "b")})  # fastjsonschema takes a tuple as an array


GENERAL = {
    "type": "object",
    "properties": {
        "price": {"type": "number", "minimum": 0, "maximum": 1000},
        "count": {"type": ["integer", "null"], "exclusiveMaximum": 10},
        "level": {"enum": [1, 2, "high"]},
        "code": {"type": "string", "pattern": "^[^\\d]+$"},  # negated \d: Python's re checks it
        "ref": {"type": "string", "pattern": "(?=x)x\\w+"},  # a lookahead: the same
        "word": {"type": "string", "pattern": "^\\w+$"},
        "blank": {"type": "string", "pattern": "^\\s*$"},
        "items": {"type": "array", "items": {"type": "integer"}, "maxItems": 3},
    },
    "additionalProperties": {"type": "string"},
}


@pytest.mark.parametrize("field", [*GENERAL["properties"], "x-extra"])
def test_other_schemas_agree_too_with_bounds_listed_numbers_and_untranslated_patterns(field):
    judge = Judge(GENERAL)
    more = ["Ünïcödé", "x9", "xyz", "\u2007", "\ufeff", " \t", "٣", "abc", [1, 2, 3, 4], [1.0, 2]]
    for value in AWKWARD + more:
        judge({field: value}, (field,), value)
    # left to fastjsonschema here: Decimals against bounds, NaN and infinity (not JSON)
    assert not [
        (p, v)
        for p, v in judge.slow
        if not (isinstance(v, (Decimal, float)) or NOT_ASCII_DIGITS.search(str(v)))
    ]


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "string", "format": "date"},
        {"type": "number", "multipleOf": 0.01},
        {"type": "array", "uniqueItems": True},
        {"not": {"type": "string"}},
        {"oneOf": [{"type": "string"}, {"type": "integer"}]},
        {"type": "number", "maximum": 0.5},
        {"type": "integer", "maximum": 2**60},
        {"enum": [1.5, "a"]},
        {"enum": [[1, 2]]},
        {"patternProperties": {"^x-": {"type": "string"}}},
        {"propertyNames": {"maxLength": 3}},
    ],
    ids=json.dumps,
)
def test_a_schema_with_what_the_two_read_differently_gets_no_first_pass(schema):
    assert first_pass(schema) is None


def test_pythons_whitespace_is_spelled_out_completely():
    every = "".join(chr(c) for c in range(sys.maxunicode + 1) if chr(c).isspace())
    assert PYTHON_WHITESPACE == every
    assert all(re.fullmatch(r"\s", c) for c in every)
