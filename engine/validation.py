"""Canonical JSON Schemas: checked with jsonschema on load, enforced per record by fastjsonschema.

Two libraries, each chosen for its job (DESIGN.md, "Measured facts"), and a third in front:

- **Loading a schema** is rare and must explain itself: :func:`load_schema` uses
  jsonschema's meta-schema validation, which reports every problem with its path.
- **Validating records** is the hot path: on 5,000 nested canonical orders jsonschema
  managed ~7,000 records/s against fastjsonschema's ~155,000/s, and a hand-written sync
  validating with jsonschema spent ~78 % of its time there. fastjsonschema generates a
  Python function from the schema once (:func:`compile_validator`); a record then costs a
  plain function call.
- **jsonschema-rs first** (:mod:`engine.prevalidate`): its ``is_valid`` accepts a valid
  order in ~7.5 µs against fastjsonschema's ~38 µs; a record it refuses goes to
  fastjsonschema, which decides and names the path and the rule. It is given a copy of the
  schema that never accepts what fastjsonschema refuses, or none at all.

fastjsonschema implements draft-04/06/07. Schemas declare draft-07 (what the canonical
schemas use) or 2020-12; a 2020-12 schema may only use keywords draft-07 also has, so the
per-record validator never silently ignores a rule (``prefixItems``, ``unevaluated*``,
``dependentRequired`` ... are refused at load time). Canonical schemas use ``pattern``,
not ``format``: the two libraries treat ``format`` differently by default.

Every problem of a schema file names its line (:mod:`engine.jsonpos`). A schema is
self-contained: a ``$ref`` points inside the same file (``#/definitions/NAME``), and one
that points to nothing or outside is refused at load; fastjsonschema would otherwise fetch
a URL while a flow someone sent is being validated.
"""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable
from typing import Any

import fastjsonschema
import jsonschema

from engine.errors import Problem, RecordValidationError
from engine.jsonpos import locate
from engine.prevalidate import first_pass
from engine.suggest import did_you_mean
from engine.yamlpos import MAX_DEPTH, format_path, read_definition

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
_first_passes: dict[str, Callable[[Any], bool] | None] = {}  # the same -> jsonschema-rs's is_valid


def load_schema(path: str) -> tuple[dict[str, Any] | None, list[Problem]]:
    """Read a JSON Schema file and check it; ``None`` and every problem when it is unusable.

    Each problem names the line and column of the value it is about.
    """
    try:
        text = read_definition(path)
    except OSError as exc:
        line, column = getattr(exc, "line", None), getattr(exc, "column", None)
        message = f"cannot read the schema: {exc.strerror or exc}"
        return None, [Problem(path, line, column, "", message)]
    where = locate(text, MAX_DEPTH)
    if where.too_deep_at is not None:
        line, column = where.position(where.too_deep_at)
        message = f"values nested more than {MAX_DEPTH} levels deep"
        return None, [Problem(path, line, column, "", message)]
    try:
        schema = json.loads(text)
    except json.JSONDecodeError as exc:
        return None, [Problem(path, exc.lineno, exc.colno, "", f"invalid JSON: {exc.msg}")]
    except ValueError:  # an integer of more digits than Python reads from text
        digits = sys.get_int_max_str_digits()
        found = re.search(rf"\d{{{digits + 1},}}", text)
        line, column = where.position(found.start()) if found else (1, 1)
        message = f"invalid JSON: a number of more than {digits:,} digits"
        return None, [Problem(path, line, column, "", message)]
    if not isinstance(schema, dict):
        return None, [Problem(path, 1, 1, "", "a JSON Schema is a JSON object")]

    def problem(at: list[Any], message: str, *, key: bool = False) -> Problem:
        return Problem(path, *where.of(at, key=key), format_path(at), message)

    declared = schema.get("$schema", DRAFT_07)
    validator = _VALIDATORS.get(declared)
    if validator is None:
        message = f"unsupported $schema {declared!r}; use {DRAFT_07!r} (or {DRAFT_2020_12!r})"
        return None, [problem(["$schema"], message)]
    problems = [
        problem(list(err.absolute_path), err.message)
        for err in validator(validator.META_SCHEMA).iter_errors(schema)
    ]
    if validator is jsonschema.Draft202012Validator:
        problems += [
            problem(
                at,
                f"{keyword!r} is newer than draft-07, which the per-record validator "
                "(fastjsonschema) implements; express the rule with draft-07 keywords",
                key=True,
            )
            for at, keyword in _later_keywords(schema, [])
        ]
    problems += [problem(at, message) for at, message in _ref_problems(schema)]
    if not problems:
        try:
            _generate(schema)
        except fastjsonschema.JsonSchemaDefinitionException as exc:
            problems.append(problem([], f"the schema cannot be compiled: {exc}"))
    problems.sort(key=lambda p: (p.line or 0, p.column or 0))
    return (None if problems else schema), problems


def _refs(node: Any, at: list[Any]) -> list[tuple[list[Any], Any]]:
    """Every ``$ref`` of a schema with the path of its value."""
    found = []
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "$ref":
                found.append(([*at, key], value))
            elif key in _NAMED_SCHEMAS and isinstance(value, dict):
                for name, sub in value.items():
                    found += _refs(sub, [*at, key, name])
            elif key not in ("enum", "const", "examples", "default"):
                found += _refs(value, [*at, key])
    elif isinstance(node, list):
        for index, item in enumerate(node):
            found += _refs(item, [*at, index])
    return found


def _ref_problems(schema: dict[str, Any]) -> list[tuple[list[Any], str]]:
    """Each ``$ref`` that points outside the file, or to nothing inside it."""
    problems = []
    for at, ref in _refs(schema, []):
        if not isinstance(ref, str) or ref == "#":
            continue  # the meta-schema reports a non-string; "#" is the schema itself
        if not ref.startswith("#/"):
            problems.append(
                (
                    at,
                    f"$ref {ref!r} points outside this file; a schema here is self-contained: "
                    "refer to #/definitions/NAME (nothing is fetched from the network or "
                    "from other files)",
                )
            )
            continue
        target: Any = schema
        walked: list[str] = []
        for part in ref[2:].split("/"):
            name = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and name in target:
                target = target[name]
            elif isinstance(target, list) and name.isdigit() and int(name) < len(target):
                target = target[int(name)]
            else:
                inside = "#/" + "/".join(walked) if walked else "the schema"
                have = sorted(map(str, target)) if isinstance(target, dict) else []
                listed = f"; it has: {', '.join(have)}" if have else ""
                problems.append(
                    (
                        at,
                        f"$ref {ref!r} points to nothing: {inside} has no {name!r}"
                        f"{did_you_mean(name, have)}{listed}",
                    )
                )
                break
            walked.append(part)
    return problems


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


def _compile(schema: dict[str, Any]) -> Callable[[Any], Any]:
    key = json.dumps(schema, sort_keys=True)
    function = _compiled.get(key)
    if function is None:
        # use_default=False: validation must never change the record it checks
        function = fastjsonschema.compile(_inline_refs(schema, schema, ()), use_default=False)
        _compiled[key] = function
    return function


def _generate(schema: dict[str, Any]) -> None:
    """Raise fastjsonschema's JsonSchemaDefinitionException if it cannot compile ``schema``.

    Generating the code finds what compiling would (~10 ms for the order schema); running
    Python's compiler on it (~27 ms: the $refs inlined make 270 kB of code) waits for the
    first record jsonschema-rs refuses, which a flow that is only checked never has.
    """
    if json.dumps(schema, sort_keys=True) not in _compiled:
        fastjsonschema.compile_to_code(_inline_refs(schema, schema, ()), use_default=False)


def _inline_refs(node: Any, root: dict[str, Any], expanding: tuple[str, ...]) -> Any:
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


def compile_validator(schema: dict[str, Any]) -> Callable[[Any], None]:
    """The per-record validator of ``schema``: returns None, or raises
    :class:`~engine.errors.RecordValidationError` naming the path and the rule
    (``lines[0].quantity: must be integer (rule: type)``).

    Compiled once per distinct schema in the process; call it once per flow load.
    """
    schema_id = schema.get("$id", "")
    key = json.dumps(schema, sort_keys=True)
    if key not in _first_passes:
        _first_passes[key] = first_pass(_inline_refs(schema, schema, ()))
    quick = _first_passes[key]
    # with a first pass, fastjsonschema is compiled for the first record it refuses
    function = _compile(schema) if quick is None else None

    def validate(record: Any) -> None:
        nonlocal function
        if quick is not None:
            try:
                if quick(record):
                    return
            except Exception:  # a value jsonschema-rs cannot read (a date, a set): as refused
                pass
        if function is None:
            function = _compile(schema)
        try:
            function(record)
        except fastjsonschema.JsonSchemaValueException as exc:
            raise _validation_error(exc, schema_id) from None

    validate.schema = schema  # type: ignore[attr-defined]
    return validate


def _validation_error(
    exc: fastjsonschema.JsonSchemaValueException, schema_id: str
) -> RecordValidationError:
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
