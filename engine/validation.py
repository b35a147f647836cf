"""Canonical JSON Schemas: checked with jsonschema on load, enforced per record by fastjsonschema.

Two libraries, each chosen for its job (DESIGN.md, "Measured facts"):

- **Loading a schema** is rare and must explain itself: :func:`load_schema` uses
  jsonschema's meta-schema validation, which reports every problem with its path.
- **Validating records** is the hot path: on 5,000 nested canonical orders jsonschema
  managed ~7,000 records/s against fastjsonschema's ~155,000/s, and a hand-written sync
  validating with jsonschema spent ~78 % of its time there. fastjsonschema generates a
  Python function from the schema once (:func:`compile_validator`); a record then costs a
  plain function call.

fastjsonschema implements draft-04/06/07. Schemas declare draft-07 (what the canonical
schemas use) or 2020-12; a 2020-12 schema may only use keywords draft-07 also has, so the
per-record validator never silently ignores a rule (``prefixItems``, ``unevaluated*``,
``dependentRequired`` ... are refused at load time). Canonical schemas use ``pattern``,
not ``format``: the two libraries treat ``format`` differently by default.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fastjsonschema
import jsonschema

from engine.errors import Problem, RecordValidationError
from engine.yamlpos import format_path

__all__ = ["compile_validator", "load_schema"]

DRAFT_07 = "http://json-schema.org/draft-07/schema#"
DRAFT_2020_12 = "https://json-schema.org/draft/2020-12/schema"
_VALIDATORS = {
    DRAFT_07: jsonschema.Draft7Validator,
    DRAFT_07.rstrip("#"): jsonschema.Draft7Validator,
    DRAFT_07.replace("http:", "https:"): jsonschema.Draft7Validator,
    DRAFT_2020_12: jsonschema.Draft202012Validator,
    DRAFT_2020_12 + "#": jsonschema.Draft202012Validator,
}
# Keywords added after draft-07 that fastjsonschema would ignore.
_LATER_KEYWORDS = frozenset(
    {
        "$anchor",
        "$dynamicAnchor",
        "$dynamicRef",
        "$recursiveAnchor",
        "$recursiveRef",
        "dependentRequired",
        "dependentSchemas",
        "maxContains",
        "minContains",
        "prefixItems",
        "unevaluatedItems",
        "unevaluatedProperties",
    }
)
# Schema keywords whose value is a map of names to schemas (their keys are not keywords).
_NAMED_SCHEMAS = frozenset({"properties", "patternProperties", "definitions", "$defs"})

_compiled: dict[str, Callable[[Any], Any]] = {}  # canonical schema text -> fastjsonschema function


def load_schema(path: str) -> tuple[dict | None, list[Problem]]:
    """Read a JSON Schema file and check it; ``None`` and every problem when it is unusable."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except OSError as exc:
        return None, [Problem(path, None, None, "", f"cannot read the schema: {exc.strerror}")]
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(path, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]
    if not isinstance(schema, dict):
        return None, [Problem(path, 1, 1, "", "a JSON Schema is a JSON object")]

    declared = schema.get("$schema", DRAFT_07)
    validator = _VALIDATORS.get(declared)
    if validator is None:
        message = f"unsupported $schema {declared!r}; use {DRAFT_07!r} (or {DRAFT_2020_12!r})"
        return None, [Problem(path, None, None, "$schema", message)]
    problems = [
        Problem(path, None, None, format_path(list(err.absolute_path)), err.message)
        for err in validator(validator.META_SCHEMA).iter_errors(schema)
    ]
    if validator is jsonschema.Draft202012Validator:
        problems += [
            Problem(
                path,
                None,
                None,
                format_path(at),
                f"{keyword!r} is newer than draft-07, which the per-record validator "
                "(fastjsonschema) implements; express the rule with draft-07 keywords",
            )
            for at, keyword in _later_keywords(schema, [])
        ]
    if not problems:
        try:
            _compile(schema)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            problems.append(Problem(path, None, None, "", f"the schema cannot be compiled: {exc}"))
    return (None if problems else schema), problems


def _later_keywords(node: Any, at: list[Any]) -> list[tuple[list[Any], str]]:
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key in _LATER_KEYWORDS:
                found.append(([*at, key], key))
            if key in _NAMED_SCHEMAS and isinstance(value, dict):
                for name, sub in value.items():
                    found += _later_keywords(sub, [*at, key, name])
            elif key not in ("enum", "const", "examples", "default"):
                found += _later_keywords(value, [*at, key])
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _later_keywords(item, [*at, index])
    return found


def _compile(schema: dict) -> Callable[[Any], Any]:
    key = json.dumps(schema, sort_keys=True)
    function = _compiled.get(key)
    if function is None:
        # use_default=False: validation must never change the record it checks
        function = fastjsonschema.compile(_inline_refs(schema, schema, ()), use_default=False)
        _compiled[key] = function
    return function


def _inline_refs(node: Any, root: dict, expanding: tuple[str, ...]) -> Any:
    """``node`` with local ``$ref``s replaced by their targets (recursive ones are kept).

    fastjsonschema turns each ``$ref`` into a call that formats the error-path prefix
    with ``str.format(**locals())`` even when the data is valid; inlining the small
    canonical definitions (money, id, timestamp) made order validation ~3x faster.
    """
    if isinstance(node, list):
        return [_inline_refs(item, root, expanding) for item in node]
    if not isinstance(node, dict):
        return node
    ref = node.get("$ref")
    if isinstance(ref, str) and ref.startswith("#/") and ref not in expanding:
        target: Any = root
        try:
            for part in ref[2:].split("/"):
                target = target[part.replace("~1", "/").replace("~0", "~")]
        except (KeyError, TypeError):
            return node  # left for fastjsonschema to report
        # draft-07: keywords beside $ref are ignored, so the target replaces the node
        return _inline_refs(target, root, (*expanding, ref))
    return {
        key: value
        if key in ("enum", "const", "default", "examples")
        else _inline_refs(value, root, expanding)
        for key, value in node.items()
    }


def compile_validator(schema: dict) -> Callable[[Any], None]:
    """The per-record validator of ``schema``: returns None, or raises
    :class:`~engine.errors.RecordValidationError` naming the path and the rule
    (``lines[0].quantity: must be integer (rule: type)``).

    Compiled once per distinct schema in the process; call it once per flow load.
    """
    function = _compile(schema)
    schema_id = schema.get("$id", "")

    def validate(record: Any) -> None:
        try:
            function(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _validation_error(exc, schema_id) from None

    validate.schema = schema  # type: ignore[attr-defined]
    return validate


def _validation_error(exc: fastjsonschema.JsonSchemaValueException, schema_id: str):
    name = exc.name or "data"  # "data.lines[0].quantity"
    where = name[len("data") :].lstrip(".") if name.startswith("data") else name
    where = where or "(record)"
    what = exc.message
    if what.startswith(name + " "):
        what = what[len(name) + 1 :]
    error = RecordValidationError(f"{where}: {what} (rule: {exc.rule})")
    error.path = where
    error.rule = exc.rule
    error.schema_id = schema_id
    return error
