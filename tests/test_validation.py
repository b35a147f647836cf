"""Schemas are checked when loaded; records are validated fast, with the path and the rule."""

from __future__ import annotations

import http.server
import json
import threading
from decimal import Decimal

import fastjsonschema
import pytest

from engine.errors import RecordError, RecordValidationError
from engine.validation import DRAFT_07, DRAFT_2020_12, compile_validator, load_schema

ORDERISH = {
    "$schema": DRAFT_07,
    "$id": "urn:flowyard:test:orderish:v1",
    "type": "object",
    "additionalProperties": False,
    "required": ["order_id", "lines"],
    "properties": {
        "order_id": {"type": "string"},
        "currency": {"type": "string", "pattern": "^[A-Z]{3}$", "default": "EUR"},
        "total": {"type": "number"},
        "lines": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sku", "quantity"],
                "properties": {
                    "sku": {"type": "string"},
                    "quantity": {"type": "integer", "minimum": 1},
                    "price": {"$ref": "#/definitions/money"},
                },
            },
        },
    },
    "definitions": {"money": {"type": "string", "pattern": "^-?\\d+(\\.\\d+)?$"}},
}


def write(tmp_path, data, name="s.schema.json") -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data, indent=2))
    return str(path)


@pytest.fixture
def validate():
    return compile_validator(ORDERISH)


# -- records ---------------------------------------------------------------------------------


def test_a_valid_record_passes(validate):
    assert (
        validate({"order_id": "1", "lines": [{"sku": "A", "quantity": 2, "price": "9.90"}]}) is None
    )


@pytest.mark.parametrize(
    ("record", "message"),
    [
        (
            {"order_id": "1", "lines": [{"sku": "A", "quantity": "2"}]},
            "lines[0].quantity: must be integer (rule: type)",
        ),
        (
            {"order_id": "1", "lines": [{"sku": "A", "quantity": 0}]},
            "lines[0].quantity: must be bigger than or equal to 1 (rule: minimum)",
        ),
        (
            {"order_id": "1", "lines": [{"sku": "A", "quantity": 1, "price": "9,90"}]},
            "lines[0].price: must match pattern",
        ),
        (
            {"order_id": "1", "lines": [{"sku": "A"}]},
            "lines[0]: must contain ['quantity'] properties (rule: required)",
        ),
        ({"order_id": 1, "lines": []}, "order_id: must be string (rule: type)"),
        (
            {"order_id": "1", "lines": [], "extra": 1},
            "(record): must not contain {'extra'} properties (rule: additionalProperties)",
        ),
        (
            {"order_id": "1", "lines": [], "currency": "eur"},
            "currency: must match pattern ^[A-Z]{3}$ (rule: pattern)",
        ),
        ([], "(record): must be object (rule: type)"),
    ],
)
def test_an_invalid_record_names_the_path_and_the_rule(validate, record, message):
    with pytest.raises(RecordValidationError) as caught:
        validate(record)
    assert str(caught.value).startswith(message)
    assert isinstance(caught.value, RecordError)  # dead-lettered, never retried


def test_the_error_carries_path_rule_and_schema(validate):
    with pytest.raises(RecordValidationError) as caught:
        validate({"order_id": "1", "lines": [{"sku": "A", "quantity": 1.5}]})
    error = caught.value
    assert (error.path, error.rule, error.schema_id) == (
        "lines[0].quantity",
        "type",
        "urn:flowyard:test:orderish:v1",
    )


def test_decimals_from_exact_json_are_numbers(validate):
    validate({"order_id": "1", "lines": [], "total": Decimal("19.90")})


def test_validation_never_changes_the_record(validate):
    record = {"order_id": "1", "lines": []}
    validate(record)
    assert record == {"order_id": "1", "lines": []}  # the schema's default was not filled in


def test_a_schema_is_compiled_once(monkeypatch):
    calls = []
    original = fastjsonschema.compile
    monkeypatch.setattr(
        fastjsonschema, "compile", lambda *a, **k: calls.append(1) or original(*a, **k)
    )
    schema = {**ORDERISH, "$id": "urn:flowyard:test:compiled-once:v1"}
    first, second = compile_validator(schema), compile_validator(dict(schema))
    for _ in range(100):
        first({"order_id": "1", "lines": []})
        second({"order_id": "1", "lines": []})
        for validate in (first, second):  # refused by jsonschema-rs: fastjsonschema decides
            with pytest.raises(RecordValidationError):
                validate({"order_id": 1, "lines": []})
    assert len(calls) == 1


# -- schema files ----------------------------------------------------------------------------


def test_a_valid_schema_file_loads(tmp_path):
    schema, problems = load_schema(write(tmp_path, ORDERISH))
    assert problems == [] and schema == ORDERISH


def test_broken_json_is_reported_with_line_and_column(tmp_path):
    schema, problems = load_schema(write(tmp_path, '{\n  "type": "object",\n  "x": \n}'))
    assert schema is None
    (problem,) = problems
    assert (problem.line, problem.column) == (4, 1) and "invalid JSON" in problem.message


def test_every_schema_error_is_reported_with_its_path(tmp_path):
    bad = {
        "$schema": DRAFT_07,
        "type": "object",
        "properties": {"a": {"type": "strnig"}, "b": {"minimum": "1"}},
    }
    schema, problems = load_schema(write(tmp_path, bad))
    assert schema is None
    paths = sorted(p.path for p in problems)
    assert "properties.a.type" in paths and "properties.b.minimum" in paths


def test_an_unsupported_dialect_is_refused(tmp_path):
    bad = {"$schema": "http://json-schema.org/draft-03/schema#", "type": "object"}
    schema, problems = load_schema(write(tmp_path, bad))
    assert schema is None and "unsupported $schema" in problems[0].message


def test_a_2020_12_schema_is_accepted_when_it_needs_nothing_newer_than_draft_07(tmp_path):
    ok = {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": {"a": {"$ref": "#/$defs/id"}},
        "$defs": {"id": {"type": "string"}},
    }
    schema, problems = load_schema(write(tmp_path, ok))
    assert problems == []
    with pytest.raises(RecordValidationError, match="a: must be string"):
        compile_validator(schema)({"a": 1})


def test_keywords_the_record_validator_would_ignore_are_refused(tmp_path):
    newer = {
        "$schema": DRAFT_2020_12,
        "type": "object",
        "properties": {"pair": {"type": "array", "prefixItems": [{"type": "string"}]}},
        "unevaluatedProperties": False,
    }
    schema, problems = load_schema(write(tmp_path, newer))
    assert schema is None
    assert sorted(p.path for p in problems) == [
        "properties.pair.prefixItems",
        "unevaluatedProperties",
    ]


def test_an_unresolvable_reference_is_found_at_load_time_with_its_line(tmp_path):
    bad = {
        "$schema": DRAFT_07,
        "properties": {"a": {"$ref": "#/definitions/mony"}},
        "definitions": {"money": {"type": "string"}},
    }
    schema, problems = load_schema(write(tmp_path, bad))
    assert schema is None
    (problem,) = problems
    assert (problem.line, problem.column, problem.path) == (5, 15, "properties.a.$ref")
    assert problem.message == (
        "$ref '#/definitions/mony' points to nothing: #/definitions has no 'mony' "
        "(did you mean 'money'?); it has: money"
    )


def test_a_reference_outside_the_file_is_refused_and_never_fetched(tmp_path):
    # a listener on 127.0.0.1 stands for the network: the schema must not reach it
    hits = []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the http.server name)
            hits.append(self.path)
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b'{"type": "string"}')

        def log_message(self, *args):
            pass

    with http.server.HTTPServer(("127.0.0.1", 0), Handler) as server:
        threading.Thread(target=server.serve_forever, daemon=True).start()
        url = f"http://127.0.0.1:{server.server_port}/id.json"
        bad = {"$schema": DRAFT_07, "properties": {"a": {"$ref": url}, "b": {"$ref": "x.json"}}}
        schema, problems = load_schema(write(tmp_path, bad))
        server.shutdown()
    assert schema is None and hits == []
    assert [(p.line, p.path) for p in problems] == [
        (5, "properties.a.$ref"),
        (8, "properties.b.$ref"),
    ]
    assert all("points outside this file" in p.message for p in problems)


def test_every_schema_error_names_its_line(tmp_path):
    text = (
        "{\n"
        '  "$schema": "http://json-schema.org/draft-07/schema#",\n'
        '  "type": "object",\n'
        '  "properties": {\n'
        '    "a": {"type": "strnig"},\n'
        '    "b": {"minimum": "1"}\n'
        "  }\n"
        "}\n"
    )
    schema, problems = load_schema(write(tmp_path, text))
    assert schema is None
    assert [(p.line, p.column, p.path) for p in problems] == [
        (5, 19, "properties.a.type"),
        (6, 22, "properties.b.minimum"),
    ]


def test_a_schema_nested_too_deep_is_refused_at_its_line_without_a_traceback(tmp_path):
    deep = '{"type": "object",\n "x": ' + "[" * 100_000 + "]" * 100_000 + "}"
    schema, problems = load_schema(write(tmp_path, deep))
    assert schema is None
    (problem,) = problems
    assert (problem.line, problem.column) == (2, 56)
    assert problem.message == "values nested more than 50 levels deep"


def test_an_unreadable_or_non_object_file_is_a_problem(tmp_path):
    assert "cannot read" in load_schema(str(tmp_path / "nope.json"))[1][0].message
    assert "JSON object" in load_schema(write(tmp_path, "[1, 2]"))[1][0].message


def test_a_schema_file_larger_than_the_limit_is_not_read(tmp_path):
    # a flow names its schema files by path: /proc/kcore is a "regular file" of terabytes
    path = tmp_path / "huge.schema.json"
    with path.open("wb") as fh:
        fh.truncate(50_000_000)  # sparse: costs no disk
    schema, problems = load_schema(str(path))
    assert schema is None
    assert [p.message for p in problems] == ["cannot read the schema: larger than 10,000,000 bytes"]


def test_a_number_longer_than_python_reads_is_a_problem_at_its_place(tmp_path):
    text = '{\n  "type": "object",\n  "maximum": ' + "9" * 5000 + "\n}"
    schema, problems = load_schema(write(tmp_path, text))
    assert schema is None
    assert [(p.line, p.column, p.message) for p in problems] == [
        (3, 14, "invalid JSON: a number of more than 4,300 digits")
    ]
